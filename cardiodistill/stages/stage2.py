"""Stage 2: cross-modal alignment of the fusion model on a cohort's paired, unlabelled studies (``align``).

:func:`run_align` builds the ``cardio_fusion`` model for the cohort (:func:`fusion_config`: the stage-1
encoders, the modalities the cohort has, the lab statistics of its training studies), loads the stage-1
encoder weights (:func:`encoder_config`), trains :class:`~cardiodistill.train.align.AlignModule` with
:func:`~cardiodistill.train.engine.fit` on the training split minus a hashed held-out share (its
validation losses), and writes ``aligned.pt``. :func:`unaligned_fusion` is the starting point of a
teacher without stage 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from ..config import Config
from ..data.cache import in_fraction
from ..data.cohort import Cohort
from ..errors import ConfigError, DataError
from ..models import create_model
from ..models.labs import LabNormaliser
from ..models.surgery import fusion_with_encoders
from ..train.align import AlignModule
from ..train.checkpoints import read_model_file, save_model
from ..train.engine import fit, start_job
from .common import resolve_model_config

if TYPE_CHECKING:
    from ..data.streaming import StreamCohort

__all__ = ["cohort_lab_stats", "encoder_config", "fusion_config", "run_align", "unaligned_fusion"]

Encoder = tuple[dict[str, Any], dict[str, Tensor] | None]  # (model_config, state_dict or None)


def encoder_config(path: str | Path | None, fallback: Mapping[str, Any], section: str) -> Encoder:
    """``(model_config, state_dict or None)`` of a stage-1 encoder file, or of a fresh ``fallback``."""
    if path is None:
        return resolve_model_config(dict(fallback), section), None
    data = read_model_file(path)
    config = dict(data["model_config"])
    if "mae" in str(config.get("name", "")):
        raise ConfigError(f"{path}: give the stage-1 encoder.pt, not the whole masked autoencoder")
    return config, data["state_dict"]


def cohort_lab_stats(cohort: Cohort | StreamCohort) -> dict[str, Any]:
    """The fusion model's lab normalisation, fitted on the cohort's training studies."""
    return LabNormaliser().fit(cohort.train_labs(), cohort.lab_names).to_dict()


def fusion_config(cfg: Config, cohort: Cohort | StreamCohort, ecg: Mapping, video: Mapping) -> dict[str, Any]:
    """The ``cardio_fusion`` model config for this cohort (encoders, lab statistics, sizes): the
    modalities of ``align.modalities`` that at least one study has."""
    a = cfg.align
    labs = {**resolve_model_config(dict(a.labs_model), "align.labs_model"), "n_labs": len(cohort.lab_names)}
    note = resolve_model_config(dict(a.note_model), "align.note_model")
    present = cohort.present_modalities & {"ecg", "echo", "labs", "note"}
    modalities = [m for m in a.modalities if m in present and (m != "labs" or cohort.lab_names)]
    if not modalities:
        raise DataError(f"no study has any of the modalities {list(a.modalities)}", cohort.source)
    model = create_model("cardio_fusion", ecg=dict(ecg), echo=dict(video), labs=labs, note=note,
                         lab_stats=cohort_lab_stats(cohort), modalities=modalities, **a.fusion)
    return model.model_config


def unaligned_fusion(cfg: Config, cohort: Cohort, ecg: Encoder, video: Encoder) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(config, state)`` of a fusion model that skips stage 2: the (stage-1) encoders as they
    are under an untrained fusion transformer - the teacher's starting point without alignment. The
    transformer is drawn under ``trainer.seed`` (the caller's random state is left as it was), so the
    ablation is the same model every time it is run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.trainer.seed)
        config = fusion_config(cfg, cohort, ecg[0], video[0])
        return config, fusion_with_encoders(config, {"ecg": ecg[1], "echo": video[1]})


def _val_holdout(cohort: Cohort, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training studies for stage 2, minus a hashed ``fraction`` held out to watch its losses."""
    train = cohort.splits["train"]
    held = in_fraction(cohort.table["split_bucket"].to_numpy()[train], fraction)
    return train[~held], train[held]


def run_align(cfg: Config, cohort: Cohort | StreamCohort, out: str | Path, *, ecg: Encoder, video: Encoder,
              show_bar: bool = True, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Stage 2 in run folder ``out``: train the fusion model, write ``out/aligned.pt``. ``cohort``: a cached
    cohort or a stream; ``callbacks``: more Lightning callbacks for the fit."""
    out = Path(out)
    start_job(cfg.trainer)
    a, o = cfg.align, cfg.align.optim
    states = {m: s for m, (_, s) in (("ecg", ecg), ("echo", video)) if s is not None and m in a.modalities}
    module = AlignModule(
        fusion_config(cfg, cohort, ecg[0], video[0]), objectives=a.objectives, weights=a.weights,
        temperature=a.temperature, learn_temperature=a.learn_temperature, masking=a.masking.model_dump(),
        modality_dropout=a.modality_dropout, decoder_dim=a.decoder_dim, decoder_depth=a.decoder_depth, lr=o.lr,
        weight_decay=o.weight_decay, betas=o.betas, warmup_steps=o.warmup_steps, max_steps=o.max_steps,
        seed=cfg.trainer.seed, encoder_lr_scale=a.encoder_lr_scale, encoder_states=states,
    )
    from ..data.streaming import StreamCohort

    if isinstance(cohort, StreamCohort):  # a stream holds its splits apart: stage 2 watches its losses on val
        train, val = cohort.stream("train", shuffle=True, seed=cfg.trainer.seed), cohort.stream("val")
        n_train, n_val = cohort.meta["splits"]["train"], cohort.meta["splits"]["val"]
    else:
        train, val = (cohort.dataset(rows) for rows in _val_holdout(cohort, a.val_fraction))
        n_train, n_val = len(train), len(val)
    result = fit(module, train, val, cfg.trainer, out, batch_size=o.batch_size, max_steps=o.max_steps,
                 show_bar=show_bar, callbacks=callbacks, ema_decay=o.ema_decay)
    if result["is_global_zero"]:
        save_model(module.model, out / "aligned.pt", objectives=list(a.objectives), steps=result["steps"],
                   pretrained=sorted(states))
    return {"steps": result["steps"], "metrics": result["metrics"], "n_train": n_train, "n_val": n_val}

"""Stage 3: the multimodal teacher on the labelled studies (``finetune``) and the handheld-ECG students
distilled from it (``distill``).

:func:`run_finetune` trains :class:`~cardiodistill.train.teacher.TeacherModule` from the aligned model
(or, without stage 2, from :func:`~.stage2.unaligned_fusion`), recalibrates its head standardisation,
keeps it or its linear-probe start, whichever has the lower validation loss (:func:`keep_probe_if_better`),
writes ``teacher.pt`` and caches its outputs on every study (:func:`cache_teacher_outputs`), so
distilling several students never reruns it. :func:`run_distill` trains a 1-, 2- or 6-lead
:class:`~cardiodistill.train.distill.StudentModule` (:func:`student_config`, :func:`student_leads`) from
those cached outputs and the labels, and writes ``student.pt``. The cached outputs carry the training targets
and the split beside the teacher's outputs, so a student can also train from a stream of the same cohort
(``cardiodistill stream``), every training study's handheld ECG read from object storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ChainDataset, Dataset

from ..config import Config
from ..data.cohort import Cohort, Labels
from ..errors import ConfigError, DataError
from ..io.atomic import atomic_path
from ..models import EcgConvEncoder, EcgMAE, EcgTransformer, create_model
from ..models.registry import model_from_config
from ..models.surgery import subset_fusion_state, teacher_ecg_encoder
from ..train.checkpoints import build_model, read_model_file, save_model
from ..train.distill import StudentModule
from ..train.engine import fit, start_job, steps_for_epochs
from ..train.teacher import (
    TeacherModule,
    init_heads_from_probe,
    predict_studies,
    recalibrate_standardise,
    validation_loss,
)
from .common import resolve_model_config

if TYPE_CHECKING:
    from ..data.streaming import StreamCohort

__all__ = ["LIMB_ORDER", "cache_teacher_outputs", "fresh_encoders", "keep_probe_if_better", "run_distill",
           "run_finetune", "student_config", "student_leads"]

LIMB_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF")


# ----------------------------------------------------------------------------------- stage 3a: the teacher


def run_finetune(cfg: Config, cohort: Cohort | StreamCohort, out: str | Path, *, aligned: str | Path | None = None,
                 base: tuple[dict, dict | None] | None = None, show_bar: bool = True) -> dict[str, Any]:
    """Stage 3a in run folder ``out``: the teacher on the labelled studies, then its outputs on every
    study cached in ``out/teacher_outputs.npz``. ``cohort``: a cached cohort or a stream of it (its
    ``labelled`` data set). ``aligned``: the stage-2 model, with the encoders of ``finetune.fresh_encoders``
    drawn anew (None: no stage 2, ``base = (fusion_config, state or None)`` is used as it is)."""
    out = Path(out)
    start_job(cfg.trainer)
    f, o = cfg.finetune, cfg.finetune.optim
    if aligned is not None:
        data = read_model_file(aligned)
        fusion, state = dict(data["model_config"]), data["state_dict"]
        state = fresh_encoders(fusion, state, f.fresh_encoders, seed=cfg.trainer.seed)
    elif base is not None:
        fusion, state = base
    else:
        raise ConfigError("finetune needs the aligned model of stage 2 (or a base fusion config)")
    modalities = [m for m in fusion["modalities"] if m in f.modalities]
    if not modalities:
        raise ConfigError(f"finetune.modalities {f.modalities} share nothing with the model's {fusion['modalities']}")
    if modalities != list(fusion["modalities"]):
        if state is not None:
            state = subset_fusion_state(state, fusion["modalities"], modalities)
        fusion = {**fusion, "modalities": modalities}
    from ..data.streaming import SPLITS, StreamCohort, source_digest

    if isinstance(cohort, StreamCohort):  # the labelled studies are a data set of the stream's own
        if cohort.meta.get("labelled_fraction") != f.labelled:
            raise ConfigError(f"the stream's labelled studies are finetune.labelled="
                              f"{cohort.meta.get('labelled_fraction')}, this run asks for {f.labelled}; write the "
                              f"stream with this config (cardiodistill stream)")
        labels = cohort.labels(cfg)
        arrays = labels.target_arrays()
        train = cohort.stream("labelled", shuffle=True, seed=cfg.trainer.seed, extra=arrays)
        val = cohort.stream("val", extra=arrays)
        labelled = cohort.stream("labelled", extra=arrays, whole=True)  # passes outside the trainer
        val_whole = cohort.stream("val", extra=arrays, whole=True)
        every = ChainDataset([cohort.stream(split, whole=True) for split in SPLITS])
        source = cohort.meta["source"]
    else:
        labels = cohort
        train = labelled = cohort.with_targets(cohort.dataset("labelled"))
        val = val_whole = cohort.with_targets(cohort.dataset("val"))
        every, source = cohort.dataset(np.arange(len(cohort.cache))), source_digest(cohort.cache)
    n_labelled = len(labels.splits["labelled"])
    mean, std = labels.lvef_stats()
    config = create_model("cardio_teacher", fusion=fusion, outputs=labels.outputs, lvef_mean=mean,
                          lvef_std=std).model_config
    steps = steps_for_epochs(n_labelled, o.batch_size, f.epochs, f.min_steps)
    module = TeacherModule(config, mode=f.mode, modality_dropout=f.modality_dropout, lvef_weight=f.lvef_weight,
                           lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, warmup_steps=o.warmup_steps,
                           max_steps=steps, seed=cfg.trainer.seed, encoder_lr_scale=f.encoder_lr_scale,
                           fusion_state=state, freeze_norm_stats=f.freeze_norm_stats)
    has_val = len(val_whole) > 0
    probe, chosen_c = None, {}
    if f.head_init == "probe":  # a resumed run's checkpoint overwrites these weights with its own
        chosen_c = init_heads_from_probe(module.model, labelled, c=f.probe_c, grid=f.probe_grid,
                                         val=val_whole if has_val and f.probe_grid else None)["c"]
        if f.keep_probe and f.mode == "finetune" and has_val:  # weighed against the fine-tuned teacher below
            probe = _weights(module.model)
    result = fit(module, train, val, cfg.trainer, out, batch_size=o.batch_size, max_steps=steps, show_bar=show_bar,
                 ema_decay=o.ema_decay)
    kept = {"kept": f.mode}
    if result["is_global_zero"]:
        if not f.freeze_norm_stats:  # held, the heads' standardisation is still the one they trained with
            recalibrate_standardise(module.model, labelled, modality_dropout=f.modality_dropout, seed=cfg.trainer.seed)
        if probe is not None:
            kept = keep_probe_if_better(module, probe, val_whole)
        save_model(module.model, out / "teacher.pt", mode=f.mode, steps=result["steps"],
                   n_labelled=n_labelled, aligned=str(aligned) if aligned else None,
                   fresh_encoders=list(f.fresh_encoders) if aligned else [], probe_c=chosen_c, **kept)
        cache_teacher_outputs(module.model, every, labels, source, out / "teacher_outputs.npz")
    return {"steps": result["steps"], "metrics": result["metrics"], "n_labelled": n_labelled, **kept}


def _weights(model: torch.nn.Module) -> dict[str, Tensor]:
    """A copy of ``model``'s state that its further training leaves as it is."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def keep_probe_if_better(module: TeacherModule, probe: Mapping[str, Tensor], val: Dataset) -> dict[str, Any]:
    """Put the probe start's weights ``probe`` back into ``module`` when their loss on ``val`` is lower than the
    fine-tuned teacher's (recalibrated): the teacher's checkpoint, chosen on validation. With tens of labelled
    studies, fine-tuning every encoder can end worse than the linear probe it started from, and worse still from
    an aligned model (docs/benchmarks.md). Returns ``{"kept": "probe" | "finetune", "val_loss_probe",
    "val_loss_finetune"}``."""
    tuned_loss = validation_loss(module, val)["loss"]
    tuned = _weights(module.model)
    module.model.load_state_dict(probe)
    probe_loss = validation_loss(module, val)["loss"]
    if tuned_loss <= probe_loss:
        module.model.load_state_dict(tuned)
    return {"kept": "finetune" if tuned_loss <= probe_loss else "probe", "val_loss_probe": probe_loss,
            "val_loss_finetune": tuned_loss}


def fresh_encoders(fusion: Mapping[str, Any], state: Mapping[str, Tensor], modalities: Sequence[str], *,
                   seed: int) -> dict[str, Tensor]:
    """``state`` (an aligned fusion model's) with the encoders of ``modalities`` replaced by new ones, drawn
    under ``seed`` without touching the global random state: what the teacher starts from for encoders that
    had no stage 1 (``finetune.fresh_encoders``)."""
    prefixes = tuple(f"encoders.{m}." for m in modalities if m in fusion["modalities"])
    if not prefixes:
        return dict(state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = model_from_config(dict(fusion)).state_dict()
    return {k: (new[k] if k.startswith(prefixes) else v) for k, v in state.items()}


def cache_teacher_outputs(teacher, studies: Dataset, labels: Labels, source: str, path: Path,
                          batch_size: int = 64) -> Path:
    """The teacher's ``logits``, standardised ``lvef`` and fused ``embedding`` for every study of ``studies``
    (with their cache rows, ``index``), and what a student trains from beside them, in cache order: ``targets``
    and ``lvef_z`` as the teacher saw them (unlabelled studies' labels hidden), the ``split``, the ``outputs``'
    names and ``lvef_stats`` (mean, SD) of ``labels``, and the cache's ``source`` digest, which a stream of
    the same cache carries too. Written atomically; every student of this teacher trains from it."""
    teacher.eval()
    outputs = predict_studies(teacher, studies, batch_size=batch_size)
    n = len(labels.targets)
    if sorted(outputs["index"].tolist()) != list(range(n)):
        raise DataError(f"the teacher's pass saw {len(outputs['index'])} studies, not the cohort's {n} once each", path)
    split = np.full(n, "", dtype="<U5")
    for name in ("train", "val", "test"):
        split[labels.splits[name]] = name
    arrays = labels.target_arrays()
    student = dict(targets=arrays["targets"].astype(np.float32), lvef_z=arrays["lvef_z"].astype(np.float32),
                   split=split, outputs=np.asarray(labels.outputs), source=np.asarray(source),
                   lvef_stats=np.asarray(labels.lvef_stats(), np.float64))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **outputs, **student)
    return path


# ----------------------------------------------------------------------------------- stage 3b: the students


def student_leads(n: int) -> tuple[str, ...]:
    """The handheld leads a student of ``n`` leads reads: I; I and II; the six limb leads."""
    if n not in (1, 2, 6):
        raise ConfigError(f"students read 1, 2 or 6 limb leads, not {n}")
    return LIMB_ORDER[:n]


def student_config(cfg: Config, n_leads: int, embed_dim: int, cohort: Cohort,
                   ecg_encoder: Mapping[str, Any] | None = None, *,
                   frame: tuple[Any, list[str], tuple[float, float]] | None = None) -> dict[str, Any]:
    """The ``ecg_student`` config: ``distill.backbone`` for ``n_leads`` handheld leads (the names
    ``ecg_encoder`` - the teacher's ECG transformer - and ``pretrained`` - a stage-1 encoder file -
    mean the lead-agnostic encoder whose config is ``ecg_encoder``). ``frame``: the ECG input spec, the
    output names and the LVEF statistics, where they do not come from ``cohort`` (a stream)."""
    spec, outputs, (mean, std) = frame if frame is not None else (cohort.cache.spec.ecg, cohort.outputs,
                                                                   cohort.lvef_stats())
    if cfg.distill.backbone.get("name") in ENCODER_BACKBONES:
        if ecg_encoder is None:
            raise ConfigError(f"distill.backbone {cfg.distill.backbone['name']} needs its ECG encoder")
        backbone = {"name": "ecg_encoder_backbone", "encoder": dict(ecg_encoder), "in_leads": n_leads}
    else:
        backbone = resolve_model_config({**cfg.distill.backbone, "in_leads": n_leads}, "distill.backbone")
    backbone["fs"], backbone["seconds"] = spec.fs, spec.seconds
    backbone["band"] = list(spec.band) if spec.band is not None else None  # what the cohort cache was filtered with
    return create_model("ecg_student", backbone=backbone, outputs=outputs, embed_dim=embed_dim,
                        lvef_mean=mean, lvef_std=std).model_config


ENCODER_BACKBONES = ("ecg_encoder", "pretrained")  # distill.backbone names that start from an encoder's weights


def student_start(backbone: Mapping[str, Any], teacher_dir: str | Path | None
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(encoder config, backbone weights)`` a student starts from: the teacher's fine-tuned ECG encoder
    (``{"name": "ecg_encoder"}``), a stage-1 encoder file (``{"name": "pretrained", "path": ...}``:
    ``encoder.pt``, or the ``mae.pt`` it came with), or nothing (a fresh backbone)."""
    name = backbone.get("name")
    if name == "ecg_encoder":
        if teacher_dir is None:
            raise ConfigError("distill.backbone ecg_encoder starts from the teacher's ECG encoder: give --teacher")
        encoder, state = teacher_ecg_encoder(read_model_file(Path(teacher_dir) / "teacher.pt"))
    elif name == "pretrained":
        if not backbone.get("path"):
            raise ConfigError("distill.backbone pretrained needs the path of a stage-1 encoder file (path: .../encoder.pt)")
        saved = read_model_file(backbone["path"])
        model = build_model(saved, source=backbone["path"])
        model = model.encoder if isinstance(model, EcgMAE) else model
        if not isinstance(model, (EcgTransformer, EcgConvEncoder)):
            raise DataError(f"distill.backbone pretrained needs an ECG encoder, not {saved['model_config']['name']!r}",
                            backbone["path"])
        encoder, state = model.model_config, model.state_dict()
    else:
        return None, None
    return dict(encoder), {f"encoder.{k}": v for k, v in state.items()}


def _teacher_outputs(teacher_dir: str | Path | None) -> tuple[Path, dict[str, np.ndarray]]:
    """``teacher_outputs.npz`` of the teacher's run folder, the teacher's outputs in cache order."""
    if teacher_dir is None:
        raise ConfigError("distillation needs the teacher's run folder (teacher_outputs.npz)")
    path = Path(teacher_dir) / "teacher_outputs.npz"
    if not path.is_file():
        raise DataError("no teacher_outputs.npz: run finetune first", teacher_dir)
    with np.load(path) as saved:
        saved = dict(saved)
    order = np.argsort(saved["index"])
    for name in ("index", "logits", "lvef", "embedding"):
        saved[name] = saved[name][order]
    return path, saved


def _teacher_arrays(saved: Mapping[str, np.ndarray], train: np.ndarray) -> dict[str, np.ndarray]:
    """The teacher's outputs as a student's targets per study (``t_logits``, ``t_lvef``, ``t_embedding``
    centred on the ``train`` rows' mean), in cache order."""
    extra = {"t_logits": saved["logits"], "t_lvef": saved["lvef"]}
    # Matched after centring on the training mean: the raw fused embeddings share a large common
    # direction, so their cosine is near 1 for any pair and matching them teaches nothing.
    extra["t_embedding"] = saved["embedding"] - saved["embedding"][train].mean(0)
    return extra


def _stream_students(cfg: Config, stream: StreamCohort, teacher_dir: str | Path | None, distil: bool):
    """What a student trains from on a stream: every training study with the teacher's outputs and the
    targets the teacher saw, from ``teacher_outputs.npz``; the input frame for :func:`student_config`."""
    if not (distil and cfg.distill.unlabelled):
        raise ConfigError("a student trains from a stream on every training study with the teacher's outputs "
                          "(distill.unlabelled=true); a labels-only student reads the cohort (--cohort)")
    path, saved = _teacher_outputs(teacher_dir)
    if "source" not in saved:
        raise DataError("teacher_outputs.npz predates streams (no targets or source); run finetune again", path)
    if str(saved["source"]) != stream.meta["source"] or len(saved["index"]) != stream.n_studies:
        raise DataError(f"the teacher's outputs are of another cohort than the stream {stream.root} "
                        f"(or of the same cohort prepared for other inputs)", path)
    extra = {**_teacher_arrays(saved, np.flatnonzero(saved["split"] == "train")),
             "targets": saved["targets"], "lvef_z": saved["lvef_z"]}
    frame = (stream.spec.ecg, [str(o) for o in saved["outputs"]], tuple(float(v) for v in saved["lvef_stats"]))
    train = stream.stream("train", modalities=("mobile",), shuffle=True, seed=cfg.trainer.seed, extra=extra)
    val = stream.stream("val", modalities=("mobile",), extra=extra)
    return extra, frame, train, val, stream.meta["splits"]["train"]


def run_distill(cfg: Config, cohort: Cohort | StreamCohort, teacher_dir: str | Path | None, out: str | Path, *,
                n_leads: int, distil: bool = True, show_bar: bool = True) -> dict[str, Any]:
    """Stage 3b in run folder ``out``: an ``n_leads`` student from the teacher's cached outputs in
    ``teacher_dir`` (``distil=False``: the same student from the labels alone); writes
    ``out/student.pt``. ``cohort``: a cached cohort, or a stream of it (every training study, distilled)."""
    from ..data.streaming import StreamCohort

    out = Path(out)
    start_job(cfg.trainer)
    d, o = cfg.distill, cfg.distill.optim
    encoder, backbone_state = student_start(d.backbone, teacher_dir)
    if isinstance(cohort, StreamCohort):
        extra, frame, train, val, n_train = _stream_students(cfg, cohort, teacher_dir, distil)
    else:
        extra = {}
        if distil:
            path, saved = _teacher_outputs(teacher_dir)
            if len(saved["index"]) != len(cohort.cache):
                raise DataError("teacher_outputs.npz was made for another cohort", path)
            extra = _teacher_arrays(saved, cohort.splits["train"])
        rows = cohort.splits["train"] if (distil and d.unlabelled) else cohort.splits["labelled"]
        train = cohort.with_targets(cohort.dataset(rows, modalities=("mobile",)), extra)
        val = cohort.with_targets(cohort.dataset("val", modalities=("mobile",)), extra)
        frame, n_train = None, len(rows)
    embed_dim = extra["t_embedding"].shape[1] if distil else 0
    config = student_config(cfg, n_leads, embed_dim, cohort, encoder, frame=frame)
    weights = dict(label=d.label, soft=d.soft, embedding=d.embedding, lvef=d.lvef) if distil else \
        dict(label=d.label, soft=0.0, embedding=0.0, lvef=d.lvef)
    steps = steps_for_epochs(n_train, o.batch_size, d.epochs, d.min_steps)
    module = StudentModule(config, **weights, temperature=d.temperature, lr=o.lr, weight_decay=o.weight_decay,
                           betas=o.betas, warmup_steps=o.warmup_steps, max_steps=steps, seed=cfg.trainer.seed,
                           backbone_state=backbone_state, encoder_lr_scale=cfg.finetune.encoder_lr_scale,
                           layer_decay=d.layer_decay)
    result = fit(module, train, val, cfg.trainer, out, batch_size=o.batch_size, max_steps=steps, show_bar=show_bar,
                 ema_decay=o.ema_decay)
    if result["is_global_zero"]:
        save_model(module.model, out / "student.pt", leads=list(student_leads(n_leads)), distilled=distil,
                   steps=result["steps"], n_train=n_train)
    return {"steps": result["steps"], "metrics": result["metrics"], "n_train": n_train, "leads": n_leads}

"""Stage 1: pretraining the ECG and the video encoders without labels (``pretrain ecg``, ``pretrain video``).

Each job builds (or reuses) its cache of prepared windows or clips, trains its module
(:class:`~cardiodistill.train.ecg.EcgPretrainModule`, :class:`~cardiodistill.train.video.VideoPretrainModule`)
with :func:`~cardiodistill.train.engine.fit` in the run folder (resuming from ``checkpoints/last.ckpt``
if a previous run left one), then exports the whole model (``mae.pt`` or ``model.pt``) and its encoder
(``encoder.pt``) as self-describing model files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from torch.utils.data import Dataset

from ..config import Config, EcgPretrainConfig, OptimConfig, TrainerConfig, VideoPretrainConfig
from ..data.cohort import clip_spec, window_spec
from ..data.ecg_windows import EcgSource, build_window_cache
from ..data.sampling import CachedWindowDataset
from ..data.video_clips import ClipDataset, VideoSource, build_clip_cache
from ..errors import ConfigError, DataError
from ..train.checkpoints import save_model
from ..train.ecg import EcgPretrainModule
from ..train.engine import fit, start_job
from ..train.module import TrainModule
from ..train.video import VideoPretrainModule
from .common import resolve_model_config

if TYPE_CHECKING:
    from ..data.streaming import StreamCohort

__all__ = ["ecg_sources", "pretrain_ecg", "pretrain_video", "video_sources"]


def ecg_sources(cfg: EcgPretrainConfig) -> list[EcgSource]:
    """Config source sections -> :class:`EcgSource` objects."""
    return [EcgSource(**{**s.model_dump(), "folds": tuple(s.folds) if s.folds else None}) for s in cfg.sources]


def video_sources(sources: Sequence[Any]) -> list[VideoSource]:
    """Config source sections -> :class:`VideoSource` objects."""
    return [VideoSource(**s.model_dump()) for s in sources]


def _stream_splits(stream: StreamCohort, modality: str, keys: dict[str, str], seed: int
                   ) -> tuple[Dataset, Dataset, int, int]:
    """A stream's training studies (shuffled from ``seed``) and validation studies as stage 1's items of one
    ``modality`` (``keys``: its arrays, renamed as the stage-1 module reads them), and how many of each."""
    train = stream.stream("train", modalities=(modality,), shuffle=True, seed=seed, keys=keys)
    val = stream.stream("val", modalities=(modality,), keys=keys)
    return train, val, stream.meta["splits"]["train"], stream.meta["splits"]["val"]


def _fit_and_export(module: TrainModule, train: Dataset, val: Dataset, optim: OptimConfig, tcfg: TrainerConfig,
                    out: Path, *, model_file: str, show_bar: bool, callbacks: list[L.Callback] | None,
                    info: dict[str, Any]) -> dict[str, Any]:
    """Train, then write ``out/<model_file>`` (the whole model) and ``out/encoder.pt``, each with ``info``
    and the steps done. Returns ``{"steps", "metrics" (the last logged values), "files"}``."""
    result = fit(module, train, val, tcfg, out, batch_size=optim.batch_size, max_steps=optim.max_steps,
                 show_bar=show_bar, callbacks=callbacks, ema_decay=optim.ema_decay)
    files = {}
    if result["is_global_zero"]:
        details = {"objective": module.hparams.objective, "steps": result["steps"], **info}
        files["model"] = str(save_model(module.model, out / model_file, **details))
        files["encoder"] = str(save_model(module.encoder, out / "encoder.pt", **details))
    return {"steps": result["steps"], "metrics": result["metrics"], "files": files}


def pretrain_ecg(
    config: Config,
    out: str | Path,
    *,
    stream: StreamCohort | None = None,
    progress: Callable[[str, int], None] | None = None,
    show_bar: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the window cache, train (resuming from ``out/checkpoints/last.ckpt`` if a
    previous run left one), and export ``out/mae.pt`` (or ``model.pt``) and ``out/encoder.pt``.
    ``stream``: train on its studies' 12-lead ECGs instead of ``pretrain.ecg.sources`` (the stream must
    have been written for this encoder's input: rate, length and band).

    Returns a summary: windows per source, steps, final losses, where the files are.
    """
    cfg, tcfg = config.pretrain.ecg, config.trainer
    out = Path(out)
    start_job(tcfg)
    module = EcgPretrainModule(
        resolve_model_config(_with_band(cfg.model, cfg.band), "pretrain.ecg.model"), objective=cfg.objective, lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas, warmup_steps=cfg.optim.warmup_steps,
        max_steps=cfg.optim.max_steps, seed=tcfg.seed, temperature=cfg.temperature,
        projection_dim=cfg.projection_dim,
    )
    spec = window_spec(module.encoder.model_config, cfg.band)
    source: dict[str, Any] = {}
    if stream is not None:
        if stream.spec.ecg != spec:
            raise DataError(f"the stream's ECGs are {stream.spec.ecg.to_dict()}, the encoder wants {spec.to_dict()}; "
                            f"write the stream for this encoder (cardiodistill stream --ecg-encoder)", stream.root)
        train, val, n_train, n_val = _stream_splits(stream, "ecg", {"ecg": "x", "ecg_present": "present"}, tcfg.seed)
        counts, source = {"stream": n_train + n_val}, {"stream": stream.root}
    else:
        cache = build_window_cache(Path(cfg.cache_dir) if cfg.cache_dir else out / "windows", ecg_sources(cfg), spec,
                                   val_fraction=cfg.val_fraction, progress=progress)
        train_idx, val_idx = cache.split_indices("train"), cache.split_indices("val")
        train, val = CachedWindowDataset(cache, train_idx), CachedWindowDataset(cache, val_idx)
        n_train, n_val, counts = len(train_idx), len(val_idx), cache.meta["counts"]
    result = _fit_and_export(
        module, train, val, cfg.optim, tcfg, out, model_file="mae.pt" if cfg.objective == "mae" else "model.pt",
        show_bar=show_bar, callbacks=callbacks,
        info={"windows": counts, **source, "band": list(spec.band) if spec.band else None},
    )
    return {**result, "windows": counts, "n_train_windows": n_train, "n_val_windows": n_val}


def _with_band(model: dict[str, Any], band: Sequence[float] | None) -> dict[str, Any]:
    """The model overrides plus ``pretrain.ecg.band``, so the exported encoder records the band its
    windows were filtered with (the paired cache and the student read it from there)."""
    band = None if band is None else [float(band[0]), float(band[1])]
    stated = model.get("band", band)
    if (None if stated is None else [float(b) for b in stated]) != band:
        raise ConfigError(f"pretrain.ecg.model states band {stated}, but pretrain.ecg.band is {band}: set one")
    return {**model, "band": band}


def pretrain_video(
    config: Config,
    out: str | Path,
    *,
    stream: StreamCohort | None = None,
    progress: Callable[[str, int], None] | None = None,
    show_bar: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the clip cache, train (resuming from ``out/checkpoints/last.ckpt``), and
    export ``out/mae.pt`` (or ``model.pt``) and ``out/encoder.pt``. Returns a summary.
    ``stream``: train on its studies' echo clips instead of ``pretrain.video.sources`` (one clip per study,
    prepared for this encoder's input: size, frames, cycles and rate); studies without an echo are left
    out of each batch."""
    cfg: VideoPretrainConfig = config.pretrain.video
    tcfg = config.trainer
    out = Path(out)
    start_job(tcfg)
    module = VideoPretrainModule(
        resolve_model_config(cfg.model, "pretrain.video.model"), objective=cfg.objective, lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas, warmup_steps=cfg.optim.warmup_steps,
        max_steps=cfg.optim.max_steps, seed=tcfg.seed, temperature=cfg.temperature,
        projection_dim=cfg.projection_dim,
    )
    spec = clip_spec(module.encoder.model_config)
    source: dict[str, Any] = {}
    if stream is not None:
        if stream.spec.clip != spec:
            raise DataError(f"the stream's echo clips are {stream.spec.clip.to_dict()}, the encoder wants "
                            f"{spec.to_dict()}; write the stream for this encoder (cardiodistill stream "
                            f"--video-encoder)", stream.root)
        if "echo" not in stream.present_modalities:
            raise DataError("the stream holds no echo", stream.root)
        train, val, n_train, n_val = _stream_splits(stream, "echo", {"echo": "x", "echo_mask": "mask"}, tcfg.seed)
        counts, source = {"stream": n_train + n_val}, {"stream": stream.root}
    else:
        cache = build_clip_cache(Path(cfg.cache_dir) if cfg.cache_dir else out / "clips", video_sources(cfg.sources),
                                 spec, val_fraction=cfg.val_fraction, progress=progress)
        train_idx, val_idx = cache.split_indices("train"), cache.split_indices("val")
        train, val = ClipDataset(cache, train_idx), ClipDataset(cache, val_idx)
        n_train, n_val, counts = len(train_idx), len(val_idx), cache.meta["counts"]
    result = _fit_and_export(
        module, train, val, cfg.optim, tcfg, out,
        model_file="mae.pt" if cfg.objective == "mae" else "model.pt", show_bar=show_bar, callbacks=callbacks,
        info={"clips": counts, **source, "clip_spec": spec.to_dict()},
    )
    return {**result, "clips": counts, "n_train_clips": n_train, "n_val_clips": n_val}

"""Students and 12-lead teachers trained on in-memory arrays (public data sets) with the stage-3 engine.

The pipeline's stage 3 reads a paired cache; a public data set such as PTB-XL or CinC 2017 is just
arrays. This module feeds arrays to the same machinery, so nothing of stage 3 is written twice:

* :func:`records_to_arrays` - ECG records (any rate, mV) as one padded array at the model's rate;
* :class:`ArrayDataset` - recordings ``x [N, L, T]`` as the dict items
  :class:`~cardiodistill.train.distill.StudentModule` reads (``mobile``, ``targets``, ``lvef_z``,
  ``index``, and the teacher's ``t_logits`` / ``t_embedding`` when given), with seeded random crops of
  long recordings and each window's leads z-scored over its real samples, as at inference;
* :func:`fit_array_student` - :class:`StudentModule` + :func:`~.engine.fit`: labels alone, or
  distilled when the dataset carries the teacher's arrays (:func:`teacher_targets`);
* :func:`fit_array_teacher` - a fixed-lead classifier (``xresnet1d`` or one of the PTB-XL benchmark's baselines,
  ``resnet1d_wang`` and ``inception1d``; e.g. on all 12 leads) trained on the labels by
  :class:`ArrayTeacherModule`, whose logits and pooled features are the distillation targets;
* :func:`predict_arrays` - probabilities, logits and embeddings per recording, the mean over
  non-overlapping windows covering the whole recording (the windows of
  :mod:`cardiodistill.edge.runtime`, so an offline score is the score the exported model gets).

Settings come from a :class:`~cardiodistill.config.Config` (default: the ``quick`` preset): the student
uses ``distill`` (backbone, loss weights, temperature, epochs, ``optim``), the teacher ``finetune``
(epochs, ``optim``), both ``trainer``. With a validation set, the weights kept are those of the best
validation label loss (checked every ``trainer.checkpoint_every`` steps), not the last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..config import Config, load_config
from ..errors import ConfigError, DataError
from ..models import Inception1d, ResNet1dWang, XResNet1d, create_model, model_from_config
from ..models.student import StudentEnsemble, StudentModel
from ..models.trees import FeatureTrees
from ..objectives.distill import multilabel_bce
from ..records import EcgRecord
from ..signals.filters import DEFAULT_BAND
from ..signals.prepare import InputSpec, prepare_signal
from ..signals.windows import window_starts, zscore_windows
from .checkpoints import read_model_file
from .distill import StudentModule
from .engine import fit, last_checkpoint, start_job, steps_for_epochs
from .module import TrainModule
from .teacher import logistic_heads

__all__ = ["ArrayDataset", "ArrayTeacherModule", "fit_array_student", "fit_array_teacher",
           "init_student_head_from_probe", "predict_arrays", "probability_logits", "records_to_arrays",
           "teacher_targets", "window_starts"]

def records_to_arrays(
    records: Iterable[EcgRecord],
    *,
    leads: Sequence[str],
    fs: float = 100.0,
    seconds: float = 60.0,
    band: tuple[float, float] | None = DEFAULT_BAND,
) -> tuple[np.ndarray, np.ndarray]:
    """ECG records (mV, any rate) as ``(x float16 [N, len(leads), fs * seconds], lengths int64 [N])``: the
    package's one preparation (:func:`~cardiodistill.signals.prepare_signal`, as the training caches and the
    edge runtime) for the fixed leads ``leads`` at ``fs`` Hz band-passed to ``band`` - then the first ``seconds``
    kept and the rest zero-padded; ``lengths`` counts the real samples. Amplitudes stay in mV: windows are cut
    and z-scored later (:class:`ArrayDataset`, :func:`predict_arrays`), with the same functions."""
    spec = InputSpec(fs, seconds, band).with_leads(leads)
    n_max = spec.n_samples
    rows, lengths = [], []
    for record in records:
        _, filtered, _ = prepare_signal(record, spec)
        row = np.zeros((len(leads), n_max), np.float16)
        n = min(filtered.n_samples, n_max)
        row[:, :n] = filtered.signal[:, :n]
        rows.append(row)
        lengths.append(n)
    if not rows:
        raise DataError("no records to convert")
    return np.stack(rows), np.asarray(lengths, np.int64)


def _windows(x: np.ndarray, starts: Sequence[int], size: int, length: int, normalise: bool) -> np.ndarray:
    """``[W, L, size]`` float32 windows of one recording ``x [L, T]`` at ``starts``; samples at or after
    ``length`` (padding) are 0, and with ``normalise`` each lead is z-scored over the window's real samples."""
    out = np.zeros((len(starts), x.shape[0], size), np.float32)
    valid = np.zeros(len(starts), np.int64)
    for k, start in enumerate(starts):
        valid[k] = min(start + size, length) - start
        out[k, :, : valid[k]] = x[:, start : start + valid[k]]
    if normalise:
        zscore_windows(out, valid)
    return out


class ArrayDataset(Dataset):
    """Recordings in memory as :class:`~cardiodistill.train.distill.StudentModule` batches.

    * ``x [N, L, T]`` (any float dtype; float16 saves memory): ``L`` leads in the model's order (a student
      reads the first ``n`` of them: I; I, II; the six limb leads), zero-padded after ``lengths[i]`` samples;
    * ``targets [N, C]`` float32, NaN where unknown;
    * ``extra``: per-recording arrays ``[N, ...]`` added to the items as they are (the teacher's
      ``t_logits`` and ``t_embedding`` for distillation);
    * ``crop``: samples per item (None: all ``T``); a recording shorter than ``crop`` is zero-padded.
      ``random_crop=True`` (training) draws each item's window start from ``numpy.random.default_rng([seed, j])``
      (``j`` the item number), ``random_crop=False`` takes the middle window;
    * ``repeats``: items per recording, one number or one per recording (oversampling). Every item has its
      own crop, so a dataset with ``repeats=r`` gives ``r`` epochs' worth of fresh crops per pass while each
      item stays a function of ``(seed, j)`` alone: a resumed run sees the crops the interrupted one would;
    * ``normalise``: z-score each lead of each window over its real samples (flat leads stay 0).

    Items: ``mobile`` float32 ``[L, crop]``, ``targets [C]``, ``lvef_z`` NaN, ``index`` (the recording's row)
    and the ``extra`` rows.
    """

    def __init__(
        self,
        x: np.ndarray,
        targets: np.ndarray,
        extra: Mapping[str, np.ndarray] | None = None,
        *,
        lengths: np.ndarray | None = None,
        crop: int | None = None,
        random_crop: bool = True,
        repeats: int | np.ndarray = 1,
        seed: int = 0,
        normalise: bool = True,
    ):
        if x.ndim != 3:
            raise ValueError(f"x must be [recordings, leads, samples], got shape {x.shape}")
        n, _, t = x.shape
        targets = np.asarray(targets, dtype=np.float32)
        if targets.ndim != 2 or len(targets) != n:
            raise ValueError(f"targets must be [{n}, classes], got shape {targets.shape}")
        extra = {k: np.asarray(v) for k, v in (extra or {}).items()}
        wrong = {k: v.shape for k, v in extra.items() if len(v) != n}
        if wrong:
            raise ValueError(f"extra arrays must have {n} rows, got {wrong}")
        self.lengths = np.full(n, t, np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        if self.lengths.shape != (n,) or (self.lengths < 1).any() or (self.lengths > t).any():
            raise ValueError(f"lengths must be [{n}] values in 1..{t}")
        self.crop = t if crop is None else int(crop)
        if self.crop < 1:
            raise ConfigError(f"crop must be at least 1 sample, got {crop}")
        counts = np.broadcast_to(np.asarray(repeats, dtype=np.int64), (n,))
        if (counts < 0).any():
            raise ConfigError("repeats must be non-negative")
        self.x, self.targets, self.extra = x, targets, extra
        self.rows = np.repeat(np.arange(n), counts)
        self.random_crop, self.seed, self.normalise = random_crop, int(seed), normalise

    def __len__(self) -> int:
        return len(self.rows)

    def start(self, j: int) -> int:
        """Window start (samples) of item ``j``."""
        slack = max(0, int(self.lengths[self.rows[j]]) - self.crop)
        if not self.random_crop:
            return slack // 2
        return int(np.random.default_rng([self.seed, j]).integers(0, slack + 1))

    def __getitem__(self, j: int) -> dict[str, Tensor]:
        row = int(self.rows[j])
        window = _windows(self.x[row], [self.start(j)], self.crop, int(self.lengths[row]), self.normalise)[0]
        item = {"mobile": torch.from_numpy(window), "targets": torch.from_numpy(self.targets[row]),
                "lvef_z": torch.tensor(float("nan")), "index": torch.tensor(row, dtype=torch.long)}
        item.update({k: torch.as_tensor(v[row]) for k, v in self.extra.items()})
        return item


# The fixed-lead classifiers the array teacher trains: each has ``in_leads``, ``forward_features`` (pooled
# features) and ``head`` (features -> logits).
FIXED_LEAD_CLASSIFIERS = (XResNet1d, ResNet1dWang, Inception1d)


class ArrayTeacherModule(TrainModule):
    """A fixed-lead classifier (``model_config``: ``xresnet1d*``, ``resnet1d_wang`` or ``inception1d``) trained
    on ``targets`` with the NaN-masked binary cross-entropy; batches as :class:`ArrayDataset` gives them (all
    ``mobile`` leads the model reads, in its order)."""

    kind = "teacher"

    def __init__(
        self,
        model_config: dict[str, Any],
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: Sequence[float] = (0.9, 0.95),
        warmup_steps: int = 20,
        max_steps: int = 500,
        seed: int = 0,
        encoder_lr_scale: float = 1.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = model_from_config(model_config)
        if not isinstance(self.model, FIXED_LEAD_CLASSIFIERS):
            raise ConfigError(f"the array teacher is a fixed-lead classifier (xresnet1d, resnet1d_wang, inception1d), "
                              f"not {model_config['name']!r}")

    def _losses(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        logits = self.model(batch["mobile"][:, : self.model.in_leads].float())
        return {"loss": multilabel_bce(logits, batch["targets"].float())}


def _fit(module: TrainModule, train: ArrayDataset, val: ArrayDataset | None, out: Path, cfg: Config, optim,
         steps: int, monitor: str, show_bar: bool) -> None:
    """:func:`~.engine.fit` in ``out``, then the weights of the best ``monitor`` value on ``val`` (if any)."""
    best = ModelCheckpoint(dirpath=out / "best", filename="best", monitor=monitor, mode="min", save_top_k=1,
                           save_on_train_epoch_end=False)
    fit(module, train, val, cfg.trainer, out, batch_size=optim.batch_size, max_steps=steps, show_bar=show_bar,
        callbacks=[best] if val is not None and len(val) else [], ema_decay=optim.ema_decay)
    path = out / "best" / "best.ckpt"
    if val is not None and len(val) and path.is_file():
        module.model.load_state_dict(read_model_file(path)["state_dict"])
    module.model.eval()


def _seeded(cfg: Config, build):
    """``build()`` under the trainer's seed, so initial weights and dropout are reproducible."""
    start_job(cfg.trainer)
    return build()


def fit_array_student(
    train: ArrayDataset,
    val: ArrayDataset | None,
    out: str | Path,
    *,
    outputs: Sequence[str],
    n_leads: int,
    config: Config | None = None,
    fs: float = 100.0,
    show_bar: bool = False,
    encoder: Mapping[str, Any] | None = None,
    backbone_state: Mapping[str, Tensor] | None = None,
    rhythm: Sequence[str] = (),
) -> StudentModel:
    """Train an ``ecg_student`` on the first ``n_leads`` leads of ``train`` in run folder ``out``.

    The backbone is ``config.distill.backbone`` (``student_cnn``) with ``in_leads=n_leads``, input ``fs`` Hz
    and ``train.crop`` samples; or, given ``encoder`` (an ``ecg_cnn`` / ``ecg_vit`` model config), that
    lead-agnostic encoder, fresh or started from ``backbone_state`` (a stage-1 encoder's weights as
    :func:`cardiodistill.stages.stage3.student_start` returns them; the backbone then trains at
    ``finetune.encoder_lr_scale`` times the rate, decayed layer by layer with ``distill.layer_decay``, and with
    ``distill.head_init=probe`` its head starts from a linear probe of that backbone,
    :func:`init_student_head_from_probe`). Distillation is on when ``train``
    carries the teacher's arrays: soft targets from ``t_logits`` (weight ``distill.soft``, temperature
    ``distill.temperature``) and embedding matching to ``t_embedding`` through a projection
    (``distill.embedding``); otherwise the labels alone. ``train.extra["rhythm"]`` (``[N, len(rhythm)]``, the
    recordings' rhythm features, named by ``rhythm``) makes a student that takes them beside the ECG. LVEF is not
    trained. Steps: ``distill.epochs`` passes over the items (at least ``distill.min_steps``). Returns the student
    in eval mode, with the best-validation weights when ``val`` is given; resumes from
    ``out/checkpoints/last.ckpt``.
    """
    cfg = config or load_config("quick")
    d, o = cfg.distill, cfg.distill.optim
    soft = d.soft if "t_logits" in train.extra else 0.0
    embed_dim = int(train.extra["t_embedding"].shape[1]) if "t_embedding" in train.extra and d.embedding > 0 else 0
    base = d.backbone if encoder is None else {"name": "ecg_encoder_backbone", "encoder": dict(encoder)}
    backbone = {**base, "in_leads": n_leads, "fs": fs, "seconds": train.crop / fs}
    if bool(rhythm) != ("rhythm" in train.extra) or ("rhythm" in train.extra
                                                    and train.extra["rhythm"].shape[1:] != (len(rhythm),)):
        raise ConfigError(f"rhythm names {list(rhythm)} do not match the training set's rhythm features "
                          f"{train.extra['rhythm'].shape[1:] if 'rhythm' in train.extra else 'none'}")
    model_config = create_model("ecg_student", backbone=backbone, outputs=list(outputs),
                                embed_dim=embed_dim, rhythm=list(rhythm)).model_config
    steps = steps_for_epochs(len(train), o.batch_size, d.epochs, d.min_steps)
    module = _seeded(cfg, lambda: StudentModule(
        model_config, label=d.label, soft=soft, embedding=d.embedding if embed_dim else 0.0, lvef=0.0,
        temperature=d.temperature, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas,
        warmup_steps=o.warmup_steps, max_steps=steps, seed=cfg.trainer.seed,
        encoder_lr_scale=cfg.finetune.encoder_lr_scale if backbone_state is not None else 1.0,
        layer_decay=d.layer_decay if backbone_state is not None else 1.0, backbone_state=backbone_state))
    if backbone_state is not None and d.head_init == "probe" and last_checkpoint(out) is None:  # resumed: its head
        init_student_head_from_probe(module.model, train, val, c=cfg.finetune.probe_c, grid=cfg.finetune.probe_grid,
                                     names=outputs)
    _fit(module, train, val, Path(out), cfg, o, steps, "val/label", show_bar)
    return module.model


@torch.no_grad()
def init_student_head_from_probe(model: StudentModel, train: ArrayDataset, val: ArrayDataset | None, *,
                                 c: float = 0.1, grid: Sequence[float] = (), names: Sequence[str] = ()
                                 ) -> dict[str, Any]:
    """Fit ``model``'s ``logits`` head, in place, on its frozen backbone's embedding of ``train``'s labelled
    recordings: the linear-probe start of LP-FT (Kumar et al. 2022) for a student whose backbone is pretrained,
    so fine-tuning does not start by pushing the pretrained features towards a random head.

    The embedding is :func:`predict_arrays`' (eval mode, the mean over a recording's windows), standardised over
    the labelled recordings; each output gets an L2 logistic regression (:func:`~.teacher.logistic_heads`: inverse
    strength ``c``, or the one of ``grid`` with the lowest log loss on ``val``'s labelled recordings), and the
    standardisation is folded into the head's weights. Returns ``{"n", "fitted", "c"}`` as the teacher's probe
    start does (``names``: the outputs', default their numbers). A student that takes rhythm features is not
    probed (its head reads more than the backbone)."""
    if model.rhythm is not None:
        raise ConfigError("a linear-probe head start is for students that read the ECG alone, not rhythm features")

    def embedding(ds: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
        rows = np.unique(ds.rows)
        rows = rows[np.isfinite(ds.targets[rows]).any(axis=1)]
        emb = predict_arrays(model, ds.x[rows], lengths=ds.lengths[rows], window=ds.crop, normalise=ds.normalise)
        return emb["embedding"].astype(np.float64), ds.targets[rows]

    was_training = model.training
    model.eval()
    try:
        emb, targets = embedding(train)
        held = embedding(val) if val is not None and len(val) else None
    finally:
        model.train(was_training)
    if not len(emb):
        raise DataError("a linear-probe head start needs labelled training recordings; there are none")
    mean, scale = emb.mean(0), emb.std(0) + 1e-6
    z = (emb - mean) / scale
    z_val = (held[0] - mean) / scale if held is not None else None
    names = list(names) or [str(j) for j in range(targets.shape[1])]
    weight, bias, fitted, chosen = logistic_heads(z, targets, names, c=c, z_val=z_val,
                                                  targets_val=held[1] if held is not None else None, grid=grid)
    weight = weight / scale  # w . (f - mean) / scale + b = (w / scale) . f + (b - (w / scale) . mean)
    model.logits.weight.copy_(torch.as_tensor(weight, dtype=model.logits.weight.dtype))
    model.logits.bias.copy_(torch.as_tensor(bias - weight @ mean, dtype=model.logits.bias.dtype))
    return {"n": len(emb), "fitted": fitted, "c": chosen}


def fit_array_teacher(
    train: ArrayDataset,
    val: ArrayDataset | None,
    out: str | Path,
    *,
    n_outputs: int,
    leads: Sequence[str],
    backbone: str = "xresnet1d_small",
    config: Config | None = None,
    fs: float = 100.0,
    show_bar: bool = False,
) -> XResNet1d | ResNet1dWang | Inception1d:
    """Train a fixed-lead classifier (``backbone``: an ``xresnet1d``, ``resnet1d_wang`` or ``inception1d``) on
    ``leads`` (the first ``len(leads)`` of ``train``) with ``n_outputs`` sigmoid outputs, in run folder ``out``.
    Steps: ``finetune.epochs`` passes (at least ``finetune.min_steps``) with ``finetune.optim``. Returns the model
    in eval mode (best-validation weights when ``val`` is given); its pooled features (``forward_features``) are
    the embedding a student matches (:func:`teacher_targets`)."""
    cfg = config or load_config("quick")
    f, o = cfg.finetune, cfg.finetune.optim
    model_config = {"name": backbone, "leads": list(leads), "num_classes": n_outputs, "fs": fs,
                    "seconds": train.crop / fs}
    steps = steps_for_epochs(len(train), o.batch_size, f.epochs, f.min_steps)
    module = _seeded(cfg, lambda: ArrayTeacherModule(
        model_config, lr=o.lr, weight_decay=o.weight_decay, betas=o.betas, warmup_steps=o.warmup_steps,
        max_steps=steps, seed=cfg.trainer.seed))
    _fit(module, train, val, Path(out), cfg, o, steps, "val/loss", show_bar)
    return module.model


def _heads(model: nn.Module) -> tuple[int, nn.Module, Callable[[Tensor, Tensor | None], Tensor]]:
    """``(leads read, features, head)`` of a student or a fixed-lead classifier; the head takes the features and
    the rhythm features (None: the model takes none)."""
    if isinstance(model, StudentModel):
        return len(model.leads), model.backbone.forward_features, lambda f, r: model.logits(model.head_features(f, r))
    if isinstance(model, FIXED_LEAD_CLASSIFIERS):
        return model.in_leads, model.forward_features, lambda f, r: model.head(f)
    raise TypeError(f"predict_arrays needs a student or a fixed-lead classifier, got {type(model).__name__}")


@torch.no_grad()
def predict_arrays(
    model: nn.Module,
    x: np.ndarray,
    *,
    lengths: np.ndarray | None = None,
    window: int | None = None,
    normalise: bool = True,
    batch_size: int = 256,
    rhythm: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` (a student or a fixed-lead classifier, in eval mode) per recording of
    ``x [N, L, T]`` (the model reads the first leads; ``lengths [N]`` real samples, default ``T``).

    Each recording is cut into the windows of :func:`window_starts` (``window`` samples, default ``T``),
    each lead of each window z-scored over its real samples when ``normalise``. Returns float32 arrays
    ``probs [N, C]`` (the mean over windows of the sigmoid probabilities, as the edge runtime reports),
    ``logits [N, C]`` and ``embedding [N, D]`` (the backbone's pooled features; both means over windows).
    ``rhythm [N, n]``: each recording's rhythm features, given to every one of its windows (a student that
    takes them needs them). A :class:`~cardiodistill.models.StudentEnsemble` gives its members' mean ``probs``,
    the ``logits`` of those and their ``embedding`` s side by side; :class:`~cardiodistill.models.FeatureTrees`
    give their probabilities from ``rhythm`` alone (and an empty embedding).
    """
    if isinstance(model, StudentEnsemble):
        if rhythm is not None and np.shape(rhythm)[1:] != (model.n_rhythm,):
            raise DataError(f"this ensemble takes rhythm features [N, {model.n_rhythm}] "
                            f"({', '.join(model.rhythm_names)}), got {np.shape(rhythm)}")
        runs = [predict_arrays(member, x, lengths=lengths, window=window, normalise=normalise, batch_size=batch_size,
                               rhythm=None if rhythm is None or model.rhythm_columns(i) is None
                               else np.asarray(rhythm)[:, model.rhythm_columns(i)])
                for i, member in enumerate(model.members)]
        probs = np.mean([r["probs"] for r in runs], axis=0)
        return {"probs": probs.astype(np.float32), "logits": probability_logits(probs),
                "embedding": np.concatenate([r["embedding"] for r in runs], axis=1)}
    if isinstance(model, FeatureTrees):  # the recording's features alone: one prediction per recording
        if rhythm is None or np.shape(rhythm) != (len(x), model.n_features):
            raise DataError(f"feature trees take rhythm features [{len(x)}, {model.n_features}] "
                            f"({', '.join(model.rhythm_names)}), got {None if rhythm is None else np.shape(rhythm)}")
        probs = model.probabilities(torch.from_numpy(np.asarray(rhythm, np.float32))).numpy()
        return {"probs": probs, "logits": probability_logits(probs), "embedding": np.zeros((len(x), 0), np.float32)}
    n, _, t = x.shape
    lengths = np.full(n, t, np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    window = t if window is None else int(window)
    n_leads, features, head = _heads(model)
    if x.shape[1] < n_leads:
        raise DataError(f"the model reads {n_leads} leads; the arrays have {x.shape[1]}")
    if rhythm is not None and len(rhythm) != n:
        raise DataError(f"rhythm features for {len(rhythm)} recordings, the arrays have {n}")
    chunks: dict[str, list[np.ndarray]] = {"probs": [], "logits": [], "embedding": []}
    pending: list[np.ndarray] = []
    pending_rhythm: list[np.ndarray] = []

    def flush() -> None:
        emb = features(torch.from_numpy(np.concatenate(pending)))
        r = torch.from_numpy(np.concatenate(pending_rhythm)).float() if pending_rhythm else None
        pending.clear()
        pending_rhythm.clear()
        logits = head(emb, r)
        for name, value in (("probs", torch.sigmoid(logits)), ("logits", logits), ("embedding", emb)):
            chunks[name].append(value.float().numpy())

    counts = np.zeros(n, np.int64)
    for i in range(n):
        length = int(lengths[i])
        pending.append(_windows(np.asarray(x[i, :n_leads]), window_starts(length, window), window, length, normalise))
        counts[i] = len(pending[-1])
        if rhythm is not None:
            pending_rhythm.append(np.repeat(np.asarray(rhythm[i : i + 1], np.float32), counts[i], axis=0))
        if sum(map(len, pending)) >= batch_size:
            flush()
    if pending:
        flush()
    offsets = np.r_[0, np.cumsum(counts)[:-1]]
    return {k: (np.add.reduceat(np.concatenate(v), offsets, axis=0) / counts[:, None]).astype(np.float32)
            for k, v in chunks.items()}


def probability_logits(probs: np.ndarray) -> np.ndarray:
    """The logits (float32) of sigmoid probabilities, clipped to [1e-6, 1 - 1e-6] first: the logits of an
    ensemble, whose prediction is its members' mean probability."""
    clipped = np.clip(probs, 1e-6, 1 - 1e-6)
    return np.log(clipped / (1 - clipped)).astype(np.float32)


def teacher_targets(
    teacher: nn.Module, x: np.ndarray, train_rows: np.ndarray, *, lengths: np.ndarray | None = None,
    window: int | None = None,
) -> dict[str, np.ndarray]:
    """The distillation arrays of every recording of ``x``: ``t_logits [N, C]`` and ``t_embedding [N, D]``,
    the teacher's pooled features minus their mean over ``train_rows`` (the features of a ReLU network share a
    large common direction, so uncentred their cosine is near 1 for any pair and matching them teaches little;
    the pipeline centres the fused embedding the same way)."""
    out = predict_arrays(teacher, x, lengths=lengths, window=window)
    return {"t_logits": out["logits"], "t_embedding": out["embedding"] - out["embedding"][train_rows].mean(0)}

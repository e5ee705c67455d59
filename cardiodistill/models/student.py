"""The mobile-ECG student: a small depthwise-separable 1-D CNN for 1-6 limb leads, and its heads.

The student is what runs on the edge device (a phone paired with a 1-, 2- or 6-lead recorder), so it
is built for batch-1 CPU latency well under 50 ms rather than for capacity:

* input ``x [B, L, T]`` float32: ``L`` limb leads in the order I, II, III, aVR, aVL, aVF (1 lead = I,
  2 leads = I, II), each z-scored over its window, at 100 Hz; ``T = 1000`` (10 s) in training, but
  any ``T >= 250`` (2.5 s) works because the head pools globally over time;
* stem: a strided conv (``kernel_size``, stride 2) -> BN -> activation;
* stages: ``depth_per_stage`` residual depthwise-separable blocks per width (MobileNet style:
  depthwise ``kernel_size`` conv -> BN -> act -> pointwise 1x1 conv -> BN -> squeeze-excitation),
  the first block of each stage with stride 2; the shortcut is average-pool /2 then a 1x1 conv + BN
  where the width changes (as in xresnet), and the last BN of each block starts at zero so every
  block begins as the identity;
* head: global average and max pooling concatenated -> dropout -> linear -> ``dim`` embedding. With
  ``temporal="gru"`` a bidirectional GRU (``gru_hidden`` units each way) also reads the last feature map in
  time order, and the average and maximum of its outputs join the pooled features: the pooling alone keeps
  what the beats look like, not in what order they come.

The time axis shrinks ``2 ** (1 + len(widths))``-fold: 32x, so 1000 samples end as 32 steps and
250 samples as 8. Only ONNX-friendly ops are used (Conv1d, BatchNorm, ReLU/SiLU, AvgPool, mean,
amax, Linear, and GRU with ``temporal="gru"``), so :func:`cardiodistill.deploy.export_onnx` exports it with
a dynamic batch axis.

:class:`StudentModel` puts the distillation heads on a backbone: multi-label logits (triage first,
then the diagnoses), LVEF in standardised units and an optional projection of the embedding into
the teacher's embedding space for embedding matching. Its :meth:`~StudentModel.predict` is the one
tensor the exported graph returns.

:class:`StudentEnsemble` (``student_ensemble``) is several students that read the same input and give the same
outputs, as one model whose :meth:`~StudentEnsemble.predict` is the mean of theirs: one file, one graph. A member
may be gradient-boosted trees on the recording's features (:mod:`cardiodistill.models.trees`).

Backbone parameters: ``student_cnn`` 145 k with 6 leads (144 k with 1), ``student_cnn_tiny`` 39 k (ranges
checked in ``tests/test_student_analysis.py``). Exported to ONNX, ``student_cnn`` runs a 10 s, 6-lead
window in about 1 ms on one CPU thread of a desktop (onnxruntime, batch 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..signals.filters import DEFAULT_BAND
from ..signals.leads import LIMB_LEADS, normalize_lead_name
from ..signals.rhythm import RECORDING_FEATURES, check_rhythm_names
from .ecg_transformer import check_band
from .registry import legacy_keys, model_from_config, model_test, register_model, register_test
from .resnet1d import check_signal, concat_pool, signal_example
from .trees import FeatureTrees

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "silu": nn.SiLU}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name](inplace=True)


class SqueezeExcite(nn.Module):
    """Channel gating from the time-averaged features (Hu et al. 2018): ``x * sigmoid(W2 act(W1 mean_t(x)))``."""

    def __init__(self, channels: int, reduction: int = 4, act: str = "relu"):
        super().__init__()
        hidden = max(8, channels // reduction)
        # Linear rather than 1x1 convs on [B, C, 1]: same weights, but a CPU training step is ~3x faster
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden), _activation(act), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x.mean(dim=-1))[..., None]


class SeparableBlock(nn.Module):
    """Residual depthwise-separable block ``[B, c_in, T] -> [B, c_out, ceil(T / stride)]``."""

    def __init__(self, c_in: int, c_out: int, *, kernel_size: int, stride: int, se: bool, act: str):
        super().__init__()
        last_bn = nn.BatchNorm1d(c_out)
        nn.init.zeros_(last_bn.weight)
        self.convs = nn.Sequential(
            nn.Conv1d(c_in, c_in, kernel_size, stride=stride, padding=kernel_size // 2, groups=c_in, bias=False),
            nn.BatchNorm1d(c_in),
            _activation(act),
            nn.Conv1d(c_in, c_out, 1, bias=False),
            last_bn,
            SqueezeExcite(c_out, act=act) if se else nn.Identity(),
        )
        shortcut: list[nn.Module] = []
        if stride != 1:
            shortcut.append(nn.AvgPool1d(stride, ceil_mode=True))
        if c_in != c_out:
            shortcut += [nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out)]
        self.shortcut = nn.Sequential(*shortcut)
        self.act = _activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.convs(x) + self.shortcut(x))


class StudentCNN(nn.Module):
    """Mobile-ECG backbone: ``x [B, in_leads, T]`` (z-scored, 100 Hz, ``T >= 250``) -> embedding ``[B, dim]``.

    See the module docstring for the architecture. ``se`` switches the squeeze-excitation gates, ``act``
    picks ``"relu"`` (fastest on edge runtimes) or ``"silu"``.
    """

    def __init__(
        self,
        in_leads: int,
        widths: Sequence[int] = (32, 64, 96, 128),
        depth_per_stage: int = 2,
        kernel_size: int = 7,
        dim: int = 128,
        dropout: float = 0.1,
        *,
        se: bool = True,
        act: str = "relu",
        temporal: str = "none",
        gru_hidden: int = 64,
    ):
        super().__init__()
        if temporal not in ("none", "gru"):
            raise ConfigError(f"temporal must be 'none' or 'gru', got {temporal!r}")
        if in_leads < 1:
            raise ConfigError(f"in_leads must be at least 1, got {in_leads}")
        if not widths or depth_per_stage < 1:
            raise ConfigError(f"need at least one stage of one block, got widths={list(widths)}, "
                              f"depth_per_stage={depth_per_stage}")
        if kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {kernel_size}")
        self.in_leads = in_leads
        self.dim = dim
        self.stem = nn.Sequential(
            nn.Conv1d(in_leads, widths[0], kernel_size, stride=2, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(widths[0]),
            _activation(act),
        )
        stages, c_in = [], widths[0]
        for width in widths:
            blocks = []
            for j in range(depth_per_stage):
                blocks.append(SeparableBlock(c_in, width, kernel_size=kernel_size, stride=2 if j == 0 else 1,
                                             se=se, act=act))
                c_in = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.gru = nn.GRU(widths[-1], gru_hidden, batch_first=True, bidirectional=True) if temporal == "gru" else None
        pooled = 2 * widths[-1] + (4 * gru_hidden if self.gru is not None else 0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(pooled, dim))
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def feature_map(self, x: Tensor) -> Tensor:
        """The last stage's features ``[B, widths[-1], T']`` of ``x [B, in_leads, T]``, before pooling."""
        check_signal(x, self.in_leads)
        return self.stages(self.stem(x))

    def pool(self, fmap: Tensor) -> Tensor:
        """What the head reads from a feature map ``[B, C, T']``: its average and maximum over time, and with the
        GRU those of the GRU's outputs over it."""
        pooled = concat_pool(fmap)
        if self.gru is None:
            return pooled
        sequence, _ = self.gru(fmap.transpose(1, 2))  # [B, T', 2 * gru_hidden]
        return torch.cat([pooled, concat_pool(sequence.transpose(1, 2))], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Embedding ``[B, dim]`` of ``x [B, in_leads, T]``."""
        return self.head(self.pool(self.feature_map(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def lr_layers(self) -> list[nn.Module]:
        """The layers from input to output, for layer-wise learning-rate decay
        (:func:`cardiodistill.train.module.param_groups`): the stem, each stage, the GRU, the head."""
        return [self.stem, *self.stages, *([self.gru] if self.gru is not None else []), self.head]


class StudentModel(nn.Module):
    """A backbone (anything with ``.dim`` and ``forward_features(x) -> [B, dim]``) with the distillation heads.

    * ``logits = Linear(dim, n_outputs)``: the multi-label outputs, triage first, then the diagnoses;
    * ``lvef = Linear(dim, 1)``: LVEF in standardised units (the training set's z-score);
    * ``project = Linear(dim, embed_dim)``: maps the embedding into the teacher's space for embedding
      matching; ``embed_dim=None``: no projection, the backbone embedding is matched as it is.

    ``rhythm=n`` (n > 0) gives the model a second input, ``rhythm [B, n]``: the whole recording's rhythm
    (and beat) features (:mod:`cardiodistill.signals.rhythm`), batch-normalised and mapped to :attr:`RHYTHM_DIM`
    features that join the backbone's embedding before ``logits`` and ``lvef`` (the matched embedding stays the
    backbone's own).
    """

    RHYTHM_DIM = 32

    def __init__(self, backbone: nn.Module, n_outputs: int, embed_dim: int | None = None, rhythm: int = 0):
        super().__init__()
        if n_outputs < 1:
            raise ConfigError(f"n_outputs must be at least 1, got {n_outputs}")
        if rhythm < 0:
            raise ConfigError(f"rhythm must be a number of features (0: none), got {rhythm}")
        self.backbone = backbone
        self.dim = int(backbone.dim)
        self.n_outputs = n_outputs
        self.n_rhythm = int(rhythm)
        self.rhythm = None if not rhythm else nn.Sequential(
            nn.BatchNorm1d(rhythm), nn.Linear(rhythm, self.RHYTHM_DIM), nn.ReLU(inplace=True))
        head_dim = self.dim + (self.RHYTHM_DIM if rhythm else 0)
        self.logits = nn.Linear(head_dim, n_outputs)
        self.lvef = nn.Linear(head_dim, 1)
        self.project = None if embed_dim is None else nn.Linear(self.dim, embed_dim)

    def head_features(self, features: Tensor, rhythm: Tensor | None = None) -> Tensor:
        """What ``logits`` and ``lvef`` read: the backbone's ``features [B, dim]``, with the mapped ``rhythm``
        features beside them when the model takes them."""
        if self.rhythm is None:
            return features
        if rhythm is None or rhythm.shape != (features.shape[0], self.n_rhythm):
            got = None if rhythm is None else tuple(rhythm.shape)
            raise ValueError(f"this student takes rhythm features [batch, {self.n_rhythm}] beside the ECG, got {got}")
        return torch.cat([features, self.rhythm(rhythm.to(features.dtype))], dim=1)

    def forward(self, x: Tensor, rhythm: Tensor | None = None) -> dict[str, Tensor]:
        """Training outputs: ``logits [B, n_outputs]``, ``lvef [B]`` and ``embedding [B, embed_dim]``
        (the projected embedding; ``[B, dim]``, the backbone's own, when ``embed_dim`` is None)."""
        features = self.backbone.forward_features(x)
        embedding = features if self.project is None else self.project(features)
        head = self.head_features(features, rhythm)
        return {"logits": self.logits(head), "lvef": self.lvef(head)[:, 0], "embedding": embedding}

    def predict(self, x: Tensor, rhythm: Tensor | None = None) -> Tensor:
        """Deployed output ``[B, n_outputs + 1]``: the sigmoid probabilities, then LVEF (standardised units)."""
        head = self.head_features(self.backbone.forward_features(x), rhythm)
        return torch.cat([torch.sigmoid(self.logits(head)), self.lvef(head)], dim=1)


class StudentEnsemble(nn.Module):
    """Students (:class:`StudentModel`) that read the same input (leads, rate, window length, band) and give the
    same outputs, averaged: :meth:`predict` is the mean of the members' predictions (each output's probability
    and the standardised LVEF), so a recording's probabilities averaged over its windows are the mean of the
    members' averages, as an ensemble's are scored offline.

    A member may also be :class:`~cardiodistill.models.trees.FeatureTrees` (gradient-boosted trees on the
    recording's features, no ECG input and no LVEF): its probabilities join the mean, the LVEF is the mean of the
    students'. At least one member is a student.

    The ensemble takes the rhythm features any member takes (:attr:`rhythm_names`, in the order of
    :data:`~cardiodistill.signals.rhythm.RECORDING_FEATURES`) and gives each member its own columns; a member
    without them reads the ECG alone. ``leads``, ``outputs``, ``backbone_config`` (the input),
    ``lvef_mean`` / ``lvef_std`` are the students' own, which must agree.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        students = [m for m in members if isinstance(m, StudentModel)]
        if len(members) < 2 or not students or not all(isinstance(m, (StudentModel, FeatureTrees)) for m in members):
            raise ConfigError(f"an ensemble needs at least two members, students or feature trees, one of them a "
                              f"student; got {[type(m).__name__ for m in members]}")
        first = students[0]
        for i, m in enumerate(members, start=1):
            checks = [("outputs", list(first.outputs), list(m.outputs))]
            if isinstance(m, StudentModel):
                checks += [("leads", tuple(first.leads), tuple(m.leads)), ("input", _input_of(first), _input_of(m)),
                           ("LVEF scale", (first.lvef_mean, first.lvef_std), (m.lvef_mean, m.lvef_std))]
            for what, a, b in checks:
                if a != b:
                    raise ConfigError(f"ensemble member {i} has {what} {b}, the first student {a}: members must agree")
        self.members = nn.ModuleList(members)
        self.leads, self.outputs = tuple(first.leads), list(first.outputs)
        self.lvef_mean, self.lvef_std = first.lvef_mean, first.lvef_std
        self.backbone_config = dict(first.backbone_config)
        wanted = {n for m in members for n in m.rhythm_names}
        self.rhythm_names = tuple(n for n in RECORDING_FEATURES if n in wanted)
        self.n_rhythm = len(self.rhythm_names)
        self._columns = [[self.rhythm_names.index(n) for n in m.rhythm_names] for m in members]
        self._students = [i for i, m in enumerate(members) if isinstance(m, StudentModel)]

    def rhythm_columns(self, i: int) -> list[int] | None:
        """The columns of the ensemble's rhythm input that member ``i`` reads (None: it reads the ECG alone)."""
        return self._columns[i] or None

    def _member_rhythm(self, i: int, rhythm: Tensor | None) -> Tensor | None:
        columns = self.rhythm_columns(i)
        if columns is None:
            return None
        if rhythm is None or rhythm.shape[-1] != self.n_rhythm:
            got = None if rhythm is None else tuple(rhythm.shape)
            raise ValueError(f"this ensemble takes rhythm features [batch, {self.n_rhythm}] beside the ECG, got {got}")
        return rhythm if columns == list(range(self.n_rhythm)) else rhythm[:, columns]

    def predict(self, x: Tensor, rhythm: Tensor | None = None) -> Tensor:
        """Deployed output ``[B, n_outputs + 1]``: the members' mean probabilities, then the students' mean LVEF."""
        outs = [m.predict(x, self._member_rhythm(i, rhythm)) for i, m in enumerate(self.members)]
        probs = torch.stack([o[:, :len(self.outputs)] for o in outs]).mean(0)
        lvef = torch.stack([outs[i][:, -1] for i in self._students]).mean(0)
        return torch.cat([probs, lvef[:, None]], dim=1)

    def forward(self, x: Tensor, rhythm: Tensor | None = None) -> dict[str, Tensor]:
        """``logits``: those of the mean probabilities; ``lvef``: the mean standardised LVEF."""
        out = self.predict(x, rhythm)
        return {"logits": torch.logit(out[:, :-1], eps=1e-6), "lvef": out[:, -1]}


def _input_of(student: StudentModel) -> tuple:
    """What a student's backbone reads: rate, window length and band (its resolved config)."""
    config = getattr(student.backbone, "model_config", student.backbone_config)
    return tuple(_floats(config.get(k)) for k in ("fs", "seconds", "band"))


def _floats(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def _leads_from_in_leads(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``in_leads = n`` (the older option, still what the trainers pass) means the first ``n``
    limb leads, ``LIMB_LEADS[:n]``; it wins over a ``leads`` given with it."""
    if "in_leads" in given:
        n = given.pop("in_leads")
        if not isinstance(n, int) or not 1 <= n <= len(LIMB_LEADS):
            raise ConfigError(f"in_leads must be the number of limb leads (1-{len(LIMB_LEADS)}), got {n!r}")
        given["leads"] = list(LIMB_LEADS[:n])
    return given


def _check_leads(leads: Sequence[str]) -> tuple[str, ...]:
    """The ordered input leads of a fixed-lead backbone, canonically spelled (LeadError on an unknown one)."""
    if not leads:
        raise ConfigError("a student backbone needs at least one input lead")
    return tuple(normalize_lead_name(name) for name in leads)


# ``leads``: the ordered input leads (channel i is leads[i]); the handheld recorders give the limb
# leads in the order of ``LIMB_LEADS``, so ``in_leads=n`` (n = 1-6) stands for ``LIMB_LEADS[:n]``.
@register_model("student_cnn")
@register_model("student_cnn_tiny", widths=(16, 32, 48, 64), dim=64)
@legacy_keys(_leads_from_in_leads)
def student_cnn(
    *,
    leads: Sequence[str] = ("I",),
    fs: float = 100.0,
    seconds: float = 10.0,
    normalisation: str = "per-lead z-score",
    band: Sequence[float] | None = DEFAULT_BAND,
    widths: Sequence[int] = (32, 64, 96, 128),
    depth_per_stage: int = 2,
    kernel_size: int = 7,
    dim: int = 128,
    dropout: float = 0.1,
    se: bool = True,
    act: str = "relu",
    temporal: str = "none",
    gru_hidden: int = 64,
) -> StudentCNN:
    """``student_cnn``: widths 32-128, dim 128 (~0.15 M); ``student_cnn_tiny``: widths 16-64, dim 64.
    Both default to lead I alone (a single-lead handheld recorder). ``temporal="gru"``: a bidirectional GRU
    over the last feature map beside the pooling (module doc).

    The model gets ``.leads``, the ordered leads it reads.
    """
    leads = _check_leads(leads)
    check_band(band)
    model = StudentCNN(len(leads), tuple(widths), depth_per_stage, kernel_size, dim, dropout, se=se, act=act,
                       temporal=temporal, gru_hidden=gru_hidden)
    model.leads = leads
    return model


class EncoderBackbone(nn.Module):
    """A lead-agnostic ECG encoder (the stage-1 / 2 transformer, or the stage-1 CNN) as a student
    backbone on fixed limb leads."""

    def __init__(self, encoder: nn.Module, leads: Sequence[str]):
        super().__init__()
        self.encoder = encoder
        self.leads = tuple(leads)
        self.in_leads = len(self.leads)
        self.dim = int(encoder.embed_dim)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.encoder.forward_features(x, list(self.leads))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)

    def lr_layers(self) -> list[nn.Module]:
        """The encoder's layers from input to output (layer-wise learning-rate decay)."""
        if not hasattr(self.encoder, "lr_layers"):
            raise ConfigError(f"layer-wise learning-rate decay needs an encoder that lists its layers; "
                              f"{type(self.encoder).__name__} does not")
        return self.encoder.lr_layers()


@register_model("ecg_encoder_backbone")
@legacy_keys(_leads_from_in_leads)
def ecg_encoder_backbone(
    *,
    encoder: Mapping[str, Any] = {"name": "ecg_vit_tiny", "fs": 100.0},  # the registry copies defaults
    leads: Sequence[str] = ("I",),
    fs: float = 100.0,
    seconds: float = 10.0,
    normalisation: str = "per-lead z-score",
    band: Sequence[float] | None = DEFAULT_BAND,
) -> EncoderBackbone:
    """A student backbone from an ECG encoder config (``encoder``: an ``ecg_vit`` or ``ecg_cnn`` model_config),
    reading ``leads`` (``in_leads=n``: the first ``n`` limb leads) at ``fs`` Hz for ``seconds``.
    Its weights come from the aligned model, so ``fs`` must be the encoder's own rate (its patches
    span fixed times) and a ``seconds`` window must fit the encoder's patches."""
    check_band(band)
    if fs != encoder["fs"] or seconds > encoder["seconds"]:
        raise ConfigError(f"ecg_encoder_backbone reads {seconds} s at {fs} Hz, but its encoder was built for "
                          f"{encoder['seconds']} s at {encoder['fs']} Hz")
    return EncoderBackbone(model_from_config(encoder), _check_leads(leads))


@register_model("ecg_student")
def ecg_student(
    *,
    backbone: Mapping[str, Any] = {"name": "student_cnn"},  # the registry copies defaults, never mutates them
    outputs: Sequence[str] = ("triage",),
    embed_dim: int = 0,
    lvef_mean: float = 55.0,
    lvef_std: float = 10.0,
    rhythm: Sequence[str] = (),
) -> StudentModel:
    """The whole student: a ``backbone`` config (``student_cnn``, the default: lead I, or
    ``ecg_encoder_backbone``) with one logit per name in ``outputs`` (triage first), LVEF, and a
    projection to the teacher's ``embed_dim`` (0: none). The model knows its ``leads``,
    ``outputs`` and how to turn its standardised LVEF back into % (``lvef_mean``, ``lvef_std``).
    ``rhythm``: the names of the recording's features (:data:`~cardiodistill.signals.rhythm.RECORDING_FEATURES`) it
    takes beside the ECG, in their input order (empty: the ECG alone); the model knows them as ``.rhythm_names``."""
    if not outputs:
        raise ConfigError("ecg_student needs at least one output")
    rhythm = check_rhythm_names(rhythm)
    net = model_from_config(backbone)
    model = StudentModel(net, len(outputs), embed_dim or None, rhythm=len(rhythm))
    model.rhythm_names = rhythm
    model.leads = tuple(net.leads)
    model.outputs = list(outputs)
    model.lvef_mean, model.lvef_std = float(lvef_mean), float(lvef_std)
    model.backbone_config = dict(backbone)
    return model


@register_model("student_ensemble")
def student_ensemble(
    *,
    members: Sequence[Mapping[str, Any]] = ({"name": "ecg_student"},
                                            {"name": "ecg_student", "backbone": {"name": "student_cnn",
                                                                                 "temporal": "gru"}}),
) -> StudentEnsemble:
    """Students averaged as one model (:class:`StudentEnsemble`): ``members``, their ``ecg_student`` (or
    ``feature_trees``) configs (default: the default student and the same with a GRU over its feature map). Made
    from trained students by :func:`cardiodistill.deploy.ensemble_students`."""
    return StudentEnsemble([model_from_config(dict(m)) for m in members])


# ----------------------------------------------------------------------------- test configs


def _student_example(model: StudentModel) -> tuple[tuple, dict]:
    """The example input of the student's backbone, with rhythm features when the student takes them."""
    (x,), kwargs = model_test(model.backbone.model_config["name"]).example(model.backbone)
    if model.n_rhythm:
        kwargs = {**kwargs, "rhythm": torch.rand(len(x), model.n_rhythm, generator=torch.Generator().manual_seed(2))}
    return (x,), kwargs


_SMALL_VIT = {"seconds": 2.0, "dim": 32, "depth": 1, "heads": 2}
register_test("student_cnn", "student_cnn_tiny", example=signal_example, seconds=2.5)
register_test("ecg_encoder_backbone", example=signal_example, encoder=_SMALL_VIT, leads=["I", "II"], seconds=2.0)
register_test("ecg_student", example=_student_example, backbone={"seconds": 2.5, "leads": ["I", "II"]},
              outputs=["triage", "af"], embed_dim=16, rhythm=["rr_cv", "pnn50", "few_beats"])


def _ensemble_example(model: StudentEnsemble) -> tuple[tuple, dict]:
    (x,), kwargs = _student_example(model.members[0])
    if model.n_rhythm:
        kwargs = {"rhythm": torch.rand(len(x), model.n_rhythm, generator=torch.Generator().manual_seed(3))}
    return (x,), kwargs


_SMALL_CNN = {"name": "student_cnn", "seconds": 2.5, "widths": [8, 16], "dim": 16}
register_test("student_ensemble", example=_ensemble_example,
              members=[{"name": "ecg_student", "backbone": _SMALL_CNN, "outputs": ["triage", "af"]},
                       {"name": "ecg_student", "backbone": {**_SMALL_CNN, "temporal": "gru", "gru_hidden": 8},
                        "outputs": ["triage", "af"], "rhythm": ["rr_cv", "pnn50"]},
                       {"name": "feature_trees", "rhythm": ["pnn50", "p_coherence"], "outputs": ["triage", "af"],
                        "trees": 3, "depth": 2}])

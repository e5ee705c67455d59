"""The multimodal model of stages 2 and 3: four modality encoders and an early-fusion transformer.

::

    12-lead ECG  -> EcgTransformer   -> tokens [L x P] -> lead-mean per patch   -> P time tokens ---+
                 or EcgConvEncoder   -> feature map      -> pooled per patch      -> P time tokens ---+
    echo clip    -> VideoTransformer -> tokens [T x S] -> space-mean per slice  -> T time tokens ---+-> fusion
                 or VideoConvEncoder -> feature map      -> kept-mean per slice   -> T time tokens ---+
    labs         -> LabsEncoder      -> one token per measured lab                              ---+   blocks
    note         -> NoteEncoder      -> one summary token                                       ---+   -> pooled

Every modality encoder is the stage-1 model of its modality (or a fresh one); each summary token
is projected to the fusion width and gets a modality embedding (time tokens also a sin-cos time
position). A study may lack any modality, and any token may be hidden: hidden and absent tokens
never reach an encoder (they are compacted away, as in MAE), so a missing echo costs nothing and
changes nothing. A convolutional ECG encoder cannot drop tokens: it sees hidden and absent lead
patches as zeros with a presence channel of 0 (:meth:`~cardiodistill.models.ecg_cnn.EcgConvEncoder.encode_patches`);
a convolutional echo encoder likewise sees hidden tubelets as zeros with a shown channel of 0
(:meth:`~cardiodistill.models.video_cnn.VideoConvEncoder.encode_tubelets`).

What the stages read from one :meth:`CardioFusion.forward` (:class:`FusionOutput`):

* ``unimodal[m]``: each encoder's own pooled embedding, before fusion - the CLIP objectives
  align these through ``clip_heads`` (so the ECG encoder alone carries the alignment to the
  student and to ECG -> echo retrieval);
* ``ecg_time`` / ``echo_time``: per-time encoder tokens - the temporal objective reads the ECG
  at its R-peak and T end and the echo at its end-diastolic and end-systolic frames through
  :meth:`CardioFusion.phase_embeddings`;
* ``tokens`` / ``pooled``: the fused sequence (MultiMAE's decoders cross-attend to it) and its
  mean (the teacher's heads and the student's embedding target).

:class:`CardioTeacher` adds the stage-3 heads: one logit per binary output (triage first, then
diagnoses) and LVEF (standardised).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..lab_units import LAB_UNITS
from ..objectives.contrastive import ProjectionHead
from ..signals.leads import LEADS_12
from .labs import LabNormaliser
from .registry import model_from_config, register_model, register_test
from .transformer import Block, init_weights, masked_mean, run_blocks, sincos_embedding
from .video_transformer import VideoLayout, compact

__all__ = ["MODALITIES", "CardioFusion", "CardioTeacher", "FusionOutput", "drop_modalities", "encode_subset"]

MODALITIES = ("ecg", "echo", "labs", "note")
PHASE_OFFSET_DIM = 8  # sin-cos features of where an event falls inside its ECG patch


@dataclass
class FusionOutput:
    """What one forward pass gives (module doc). ``present[m]`` is bool ``[B]``: modality ``m``
    took part for that study (there, not dropped, at least one token visible)."""

    tokens: Tensor  # [B, N, dim] fused tokens
    key_mask: Tensor  # [B, N] bool
    token_modality: Tensor  # [N] long, index into the model's modalities
    pooled: Tensor  # [B, dim] mean of the fused tokens
    unimodal: dict[str, Tensor]  # m -> [B, D_m]
    present: dict[str, Tensor]  # m -> [B] bool
    ecg_time: Tensor | None = None  # [B, P, D_ecg], zero where no lead is visible at that patch
    echo_time: Tensor | None = None  # [B, T, D_echo]
    ecg_time_present: Tensor | None = None  # [B, P] bool
    echo_time_present: Tensor | None = None  # [B, T] bool


def _gather(tokens: Tensor, ids: Tensor) -> Tensor:
    return tokens.gather(1, ids[..., None].expand(-1, -1, tokens.shape[-1]))


def encode_subset(encoder: nn.Module, tokens: Tensor, keep: Tensor) -> Tensor:
    """Run ``encoder.encode`` on the kept tokens only; ``[B, N, D]`` with zeros elsewhere.

    A row with nothing kept gets zeros (one filler token is encoded for it, then discarded), so
    attention never sees an all-masked row.
    """
    none = ~keep.any(1)
    safe = keep.clone()
    safe[none, 0] = True
    ids, valid = compact(safe)
    encoded, _ = encoder.encode(_gather(tokens, ids), valid)
    valid = valid & ~none[:, None]
    encoded = torch.where(valid[..., None], encoded, torch.zeros((), dtype=encoded.dtype, device=encoded.device))
    return encoded.new_zeros(tokens.shape[:2] + encoded.shape[-1:]).scatter(1, ids[..., None].expand_as(encoded),
                                                                            encoded)


def _group_mean(tokens: Tensor, keep: Tensor, groups: int, size: int, over: int) -> tuple[Tensor, Tensor]:
    """Mean of ``tokens [B, groups * size, D]`` (reshaped ``[B, groups, size, D]``) over axis
    ``over`` (1: groups, 2: within a group) where ``keep``; returns ``(mean, any kept)``."""
    b, _, d = tokens.shape
    t = tokens.view(b, groups, size, d)
    k = keep.view(b, groups, size).to(tokens.dtype)
    total = (t * k[..., None]).sum(over)
    count = k.sum(over)
    return total / count.clamp_min(1.0)[..., None], count > 0


class CardioFusion(nn.Module):
    """The aligned multimodal model (module doc).

    ``ecg`` / ``echo`` / ``labs`` / ``note``: ``model_config`` dicts of the modality encoders (a
    stage-1 encoder's config, so its weights load in); ``lab_stats``: the robust per-lab
    standardisation fitted on training labs (:meth:`~cardiodistill.models.labs.LabNormaliser.to_dict`), applied
    inside the model so raw canonical values go in. ``modalities``: the ones this model uses.
    """

    def __init__(
        self,
        *,
        ecg: Mapping[str, Any],
        echo: Mapping[str, Any],
        labs: Mapping[str, Any],
        note: Mapping[str, Any],
        lab_stats: Mapping[str, Sequence],
        modalities: Sequence[str] = MODALITIES,
        dim: int = 192,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        proj_dim: int = 128,
        grad_checkpointing: bool = False,
    ):
        super().__init__()
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities:
            raise ConfigError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(modalities)}")
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        configs = {"ecg": ecg, "echo": echo, "labs": labs, "note": note}
        self.encoders = nn.ModuleDict({m: model_from_config(configs[m]) for m in self.modalities})
        if "ecg" in self.modalities and not any(hasattr(self.encoders["ecg"], a) for a in ("embed", "encode_patches")):
            raise ConfigError(f"stages 2-3 fuse the ECG encoder's lead-patch tokens, and {configs['ecg'].get('name')!r} "
                              "has none: use an ecg_vit or ecg_cnn encoder here")
        echo_views = ("embed", "encode_tubelets")
        if "echo" in self.modalities and not any(hasattr(self.encoders["echo"], a) for a in echo_views):
            raise ConfigError(f"stages 2-3 fuse the echo encoder's tubelet tokens, and {configs['echo'].get('name')!r} "
                              "has none: use a video_vit or video_cnn encoder here")
        widths = {m: _width(enc) for m, enc in self.encoders.items()}
        self.dim, self.grad_checkpointing = dim, grad_checkpointing

        self.to_fusion = nn.ModuleDict({m: nn.Linear(widths[m], dim) for m in self.modalities})
        self.modality_embed = nn.Parameter(torch.zeros(len(self.modalities), dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.clip_heads = nn.ModuleDict({m: ProjectionHead(widths[m], out=proj_dim, norm="layer")
                                         for m in self.modalities})
        self.phase_heads = nn.ModuleDict()
        if "ecg" in self.modalities:
            self.phase_heads["ecg"] = nn.Sequential(nn.Linear(widths["ecg"] + PHASE_OFFSET_DIM, proj_dim), nn.GELU(),
                                                    nn.Linear(proj_dim, proj_dim))
        if "echo" in self.modalities:
            self.phase_heads["echo"] = nn.Sequential(nn.Linear(widths["echo"], proj_dim), nn.GELU(),
                                                     nn.Linear(proj_dim, proj_dim))
        for part in (self.to_fusion, self.blocks, self.norm, self.clip_heads, self.phase_heads):
            part.apply(init_weights)
        nn.init.trunc_normal_(self.modality_embed, std=0.02)

        names = list(lab_stats.get("names", []))
        self.lab_names = names
        self.register_buffer("lab_log", torch.tensor(list(lab_stats.get("log", [])), dtype=torch.bool))
        self.register_buffer("lab_center", torch.tensor(list(lab_stats.get("median", [])), dtype=torch.float32))
        self.register_buffer("lab_scale", torch.tensor(list(lab_stats.get("scale", [])), dtype=torch.float32))
        self.lab_clip = float(lab_stats.get("clip", 6.0))
        if "labs" in self.modalities and len(names) != int(labs.get("n_labs", len(names))):
            raise ConfigError(f"lab_stats name {len(names)} labs, the labs encoder expects {labs.get('n_labs')}")

    # ------------------------------------------------------------------------------- helpers

    @property
    def echo_tubelet_frames(self) -> int:
        return self.encoders["echo"].tubelet[0]

    @property
    def ecg_patch_size(self) -> int:
        return self.encoders["ecg"].patch_size

    def normalise_labs(self, values: Tensor) -> Tensor:
        """Raw canonical lab values ``[B, n_labs]`` (NaN = missing) -> robust z-scores: the torch
        twin of :meth:`~cardiodistill.models.labs.LabNormaliser.transform`, so the model takes raw values."""
        x = values.float()
        logged = torch.where(self.lab_log, torch.log1p(x.clamp_min(0.0)), x)
        return ((logged - self.lab_center) / self.lab_scale).clamp(-self.lab_clip, self.lab_clip)

    def _note_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        if "note_ids" not in batch:
            return self.encoders["note"].encode_texts(list(batch["note"]))
        return batch["note_ids"], batch["note_mask"]

    # ------------------------------------------------------------------------------- branches

    def _ecg(self, batch, has: Tensor, hide: Tensor | None):
        enc = self.encoders["ecg"]
        lead_present = batch["ecg_present"].bool() & has[:, None]
        if not hasattr(enc, "embed"):  # a convolutional encoder hides patches in its input signal
            x = batch["ecg"].float()
            keep = lead_present.repeat_interleave(x.shape[-1] // enc.patch_size, dim=1)
            return enc.encode_patches(x, list(LEADS_12[: x.shape[1]]), keep if hide is None else keep & ~hide)
        safe = lead_present.clone()
        safe[~safe.any(1), 0] = True  # the embedding wants a lead per row; its tokens are dropped below
        tokens, layout = enc.embed(batch["ecg"].float(), list(LEADS_12[: batch["ecg"].shape[1]]), safe)
        keep = layout.present & lead_present.repeat_interleave(layout.n_patches, dim=1)
        if hide is not None:
            keep = keep & ~hide
        encoded = encode_subset(enc, tokens, keep)
        time, time_present = _group_mean(encoded, keep, layout.n_leads, layout.n_patches, over=1)
        return masked_mean(encoded, keep), time, time_present

    def echo_layout(self, x: Tensor) -> VideoLayout:
        """The tubelet layout of echo clips ``x [B, T, H, W]`` (tubelet pixels, presence): the MultiMAE targets."""
        enc = self.encoders["echo"]
        return enc.layout(x) if hasattr(enc, "layout") else enc.embed(x)[1]

    def _echo(self, batch, has: Tensor, hide: Tensor | None):
        enc = self.encoders["echo"]
        if not hasattr(enc, "embed"):  # a convolutional encoder hides tubelets in its input clip
            x = batch["echo"].float()
            keep = has[:, None].expand(-1, (x.shape[1] // enc.tubelet[0]) * enc.grid[0] * enc.grid[1])
            return enc.encode_tubelets(x, keep if hide is None else keep & ~hide)
        tokens, layout = enc.embed(batch["echo"].float())
        keep = layout.present & has[:, None]
        if hide is not None:
            keep = keep & ~hide
        encoded = encode_subset(enc, tokens, keep)
        time, time_present = _group_mean(encoded, keep, layout.n_t, layout.n_s, over=2)
        return masked_mean(encoded, keep), time, time_present

    def _labs(self, batch, has: Tensor, hide: Tensor | None):
        values = self.normalise_labs(batch["labs"])
        values = torch.where(has[:, None], values, torch.full_like(values, float("nan")))
        tokens, present = self.encoders["labs"].forward_tokens(values, hide)
        return masked_mean(tokens, present), tokens, present

    def _note(self, batch, has: Tensor):
        ids, mask = self._note_inputs(batch)
        feats = self.encoders["note"].forward_features(ids.to(has.device), mask.to(has.device))
        return feats, feats[:, None], has[:, None]

    # ------------------------------------------------------------------------------- forward

    def forward(
        self, batch: Mapping[str, Any], *, hide: Mapping[str, Tensor] | None = None, drop: Mapping[str, Tensor] | None = None
    ) -> FusionOutput:
        """Encode a batch of studies (a :class:`~cardiodistill.data.paired.PairedDataset` batch).

        ``hide[m]``: bool per token of modality ``m`` to keep from the encoders (masked modelling:
        ``ecg`` ``[B, 12 * P]`` lead-major, ``echo`` ``[B, T * S]`` time-major, ``labs`` ``[B, n_labs]``);
        ``drop[m]``: bool ``[B]``, leave modality ``m`` out for those studies (modality dropout).
        """
        hide, drop = hide or {}, drop or {}
        device = self.modality_embed.device
        parts, masks, owners = [], [], []
        unimodal, present = {}, {}
        ecg_time = echo_time = ecg_time_present = echo_time_present = None
        for index, m in enumerate(self.modalities):
            has = batch[f"has_{m}"].to(device=device, dtype=torch.bool)
            if m in drop:
                has = has & ~drop[m].to(device=device, dtype=torch.bool)
            if m == "ecg":
                pooled, tokens, mask = self._ecg(batch, has, hide.get("ecg"))
                ecg_time, ecg_time_present = tokens, mask & has[:, None]
                tokens = self.to_fusion[m](tokens) + sincos_embedding(tokens.shape[1], self.dim).to(tokens)
            elif m == "echo":
                pooled, tokens, mask = self._echo(batch, has, hide.get("echo"))
                echo_time, echo_time_present = tokens, mask & has[:, None]
                tokens = self.to_fusion[m](tokens) + sincos_embedding(tokens.shape[1], self.dim).to(tokens)
            elif m == "labs":
                pooled, tokens, mask = self._labs(batch, has, hide.get("labs"))
                tokens = self.to_fusion[m](tokens)
            else:
                pooled, tokens, mask = self._note(batch, has)
                tokens = self.to_fusion[m](tokens)
            mask = mask & has[:, None]
            parts.append(tokens + self.modality_embed[index])
            masks.append(mask)
            owners.append(torch.full((tokens.shape[1],), index, dtype=torch.long, device=device))
            unimodal[m] = pooled
            present[m] = mask.any(1)
        tokens, key_mask = torch.cat(parts, 1), torch.cat(masks, 1)
        empty = ~key_mask.any(1)
        safe_mask = key_mask.clone()
        safe_mask[empty, 0] = True
        fused = self.norm(run_blocks(self.blocks, tokens, safe_mask, self.grad_checkpointing))
        return FusionOutput(fused, key_mask, torch.cat(owners), masked_mean(fused, key_mask), unimodal, present,
                            ecg_time, echo_time, ecg_time_present, echo_time_present)

    # ------------------------------------------------------------------------------- alignment views

    def clip_embeddings(self, out: FusionOutput) -> dict[str, Tensor]:
        """Per-modality CLIP projections ``[B, proj_dim]`` of the unimodal embeddings."""
        return {m: self.clip_heads[m](out.unimodal[m]) for m in self.modalities}

    def phase_embeddings(self, out: FusionOutput, ecg_samples: Tensor, echo_frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Embeddings of the ECG at ``ecg_samples [B, E]`` (model-rate samples, -1 = none) and of
        the echo at ``echo_frames [B, E]`` (frames of the model's clip): ``(ecg [B, E, proj],
        echo [B, E, proj], valid [B, E])``; an event is valid where both were found and both
        modalities took part."""
        if out.ecg_time is None or out.echo_time is None:
            raise ConfigError("the temporal objective needs both the ecg and the echo modality")
        patch = self.ecg_patch_size
        n_p, n_t = out.ecg_time.shape[1], out.echo_time.shape[1]
        samples, frames = ecg_samples.long(), echo_frames.long()
        p = (samples.clamp_min(0) // patch).clamp_max(n_p - 1)
        t = (frames.clamp_min(0) // self.echo_tubelet_frames).clamp_max(n_t - 1)
        offset = (samples.clamp_min(0) % patch).float() / patch  # [B, E] where in its patch
        k = torch.arange(1, PHASE_OFFSET_DIM // 2 + 1, device=offset.device, dtype=offset.dtype)
        angle = 2 * math.pi * offset[..., None] * k
        ecg_feat = torch.cat([_gather(out.ecg_time, p), torch.sin(angle), torch.cos(angle)], -1)
        echo_feat = _gather(out.echo_time, t)
        valid = (samples >= 0) & (frames >= 0) & (samples // patch < n_p) & (frames // self.echo_tubelet_frames < n_t)
        valid = valid & out.ecg_time_present.gather(1, p) & out.echo_time_present.gather(1, t)
        return self.phase_heads["ecg"](ecg_feat.to(out.ecg_time.dtype)), self.phase_heads["echo"](echo_feat), valid

    @torch.no_grad()
    def attention_maps(self, batch: Mapping[str, Any]) -> tuple[list[Tensor], FusionOutput]:
        """The fusion blocks' attention probabilities ``[B, heads, N, N]``, one per block, recorded
        during one forward pass (for attention rollout), and that pass's output."""
        maps: list[Tensor] = []

        def record(block: Block, args: tuple[Tensor, Tensor]) -> None:
            x, key_mask = args
            h = block.norm1(x)
            b, n, d = h.shape
            heads = block.attn.heads
            q, k, _ = block.attn.qkv(h).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(d // heads)
            maps.append(logits.masked_fill(~key_mask[:, None, None, :], float("-inf")).softmax(-1))

        handles = [block.register_forward_pre_hook(record) for block in self.blocks]
        try:
            out = self.forward(batch)
        finally:
            for handle in handles:
                handle.remove()
        return maps, out


def _width(encoder: nn.Module) -> int:
    for name in ("embed_dim", "dim"):
        value = getattr(encoder, name, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"cannot tell the output width of {type(encoder).__name__}")


class CardioTeacher(nn.Module):
    """:class:`CardioFusion` plus the stage-3 heads: ``logits [B, C]`` for the binary ``outputs``
    (triage first, then diagnoses) and ``lvef [B]`` in standardised units (``lvef_mean`` /
    ``lvef_std`` undo it)."""

    def __init__(self, *, fusion: Mapping[str, Any], outputs: Sequence[str], lvef_mean: float = 55.0,
                 lvef_std: float = 10.0, dropout: float = 0.1):
        super().__init__()
        self.fusion = model_from_config(fusion)
        self.outputs = list(outputs)
        self.lvef_mean, self.lvef_std = float(lvef_mean), float(lvef_std)
        # The fused embedding varies little around a large common direction (per-unit SD ~2 % of its
        # mean on the simulated cohort), so the heads read it standardised: a linear probe on the
        # standardised embedding reached 0.82 AUROC where heads on the raw one stayed near 0.58.
        self.standardise = nn.BatchNorm1d(self.fusion.dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.fusion.dim, len(self.outputs))
        self.lvef_head = nn.Linear(self.fusion.dim, 1)
        for head in (self.head, self.lvef_head):
            head.apply(init_weights)

    def forward(self, batch: Mapping[str, Any], *, drop: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        out = self.fusion(batch, drop=drop)
        h = self.dropout(self.standardise(out.pooled))
        return {"logits": self.head(h), "lvef": self.lvef_head(h)[:, 0], "embedding": out.pooled,
                "present": out.present}

    def lvef_percent(self, lvef: Tensor) -> Tensor:
        return lvef * self.lvef_std + self.lvef_mean


@register_model("cardio_fusion")
def cardio_fusion(
    *,
    ecg: Mapping[str, Any] | None = {"name": "ecg_vit_tiny"},  # the registry copies defaults, never mutates them
    echo: Mapping[str, Any] | None = {"name": "video_vit_tiny"},
    labs: Mapping[str, Any] | None = {"name": "labs_encoder"},
    note: Mapping[str, Any] | None = {"name": "note_encoder"},
    lab_stats: Mapping[str, Any] | None = None,
    modalities: Sequence[str] = MODALITIES,
    dim: int = 192,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    proj_dim: int = 128,
    grad_checkpointing: bool = False,
) -> CardioFusion:
    """The stage-2 model (:class:`CardioFusion`): the encoder configs of the modalities it uses
    (default: the tiny ECG and video transformers, the labs encoder and the hashing note encoder)
    and the fitted lab statistics (``lab_stats``, :meth:`LabNormaliser.to_dict`; None: labs go in
    standardised already, in :data:`~cardiodistill.lab_units.LAB_UNITS` order); the rest are the
    fusion transformer's sizes."""
    configs = {"ecg": ecg, "echo": echo, "labs": labs, "note": note}
    missing = [m for m in modalities if configs.get(m) is None]
    if missing:
        raise ConfigError(f"cardio_fusion needs an encoder config for {missing}")
    if lab_stats is None and "labs" in modalities:
        if labs.get("n_labs") != len(LAB_UNITS):
            raise ConfigError(f"cardio_fusion needs lab_stats for a panel of {labs.get('n_labs')} labs")
        lab_stats = LabNormaliser.identity(list(LAB_UNITS)).to_dict()
    return CardioFusion(ecg=ecg or {}, echo=echo or {}, labs=labs or {}, note=note or {}, lab_stats=lab_stats or {},
                        modalities=modalities, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                        dropout=dropout, proj_dim=proj_dim, grad_checkpointing=grad_checkpointing)


@register_model("cardio_teacher")
def cardio_teacher(
    *,
    fusion: Mapping[str, Any] = {"name": "cardio_fusion"},  # the registry copies defaults, never mutates them
    outputs: Sequence[str] = ("triage",),
    lvef_mean: float = 55.0,
    lvef_std: float = 10.0,
    dropout: float = 0.1,
) -> CardioTeacher:
    """The stage-3 teacher: a ``fusion`` config (``cardio_fusion``, default: its defaults) plus
    heads for ``outputs`` (triage first, then diagnoses)."""
    if not outputs:
        raise ConfigError("cardio_teacher needs at least one output")
    return CardioTeacher(fusion=fusion, outputs=outputs, lvef_mean=lvef_mean, lvef_std=lvef_std, dropout=dropout)


def drop_modalities(present: Mapping[str, Tensor], p: float, generator: torch.Generator) -> dict[str, Tensor]:
    """Whole-modality dropout: each present modality of each study is left out with probability
    ``p``, never all of a study's modalities. Returns ``{m: bool [B]}`` (True = drop)."""
    names = list(present)
    has = torch.stack([present[m].bool() for m in names], 1)  # [B, M]
    device = has.device
    u = torch.rand(has.shape, generator=generator, device=device)
    drop = has & (u < p)
    all_gone = (has & ~drop).sum(1) == 0
    if bool(all_gone.any()):  # keep the present modality with the largest draw
        keep_one = torch.where(has, u, torch.full_like(u, -1.0)).argmax(1)
        restore = F.one_hot(keep_one, len(names)).bool() & all_gone[:, None]
        drop = drop & ~restore
    return {m: drop[:, i] for i, m in enumerate(names)}


# ----------------------------------------------------------------------------- test configs


def fusion_example(model: CardioFusion | CardioTeacher) -> tuple[tuple, dict]:
    """A batch of two studies for the model's encoders: the first complete, the second with
    lead I and II only and without its echo. ``((batch,), {})``."""
    fusion = model.fusion if isinstance(model, CardioTeacher) else model
    config = fusion.model_config
    g = torch.Generator().manual_seed(0)
    ecg, echo = config["ecg"], config["echo"]
    leads = len(LEADS_12)
    batch: dict[str, Any] = {f"has_{m}": torch.tensor([True, m != "echo"]) for m in MODALITIES}
    batch["ecg"] = torch.randn(2, leads, round(ecg["fs"] * ecg["seconds"]), generator=g)
    batch["ecg_present"] = torch.arange(leads)[None] < torch.tensor([[leads], [2]])
    batch["echo"] = torch.randn(2, echo["frames"], echo["size"], echo["size"], generator=g)
    batch["labs"] = torch.randn(2, config["labs"]["n_labs"], generator=g)
    batch["note"] = ["LV normal size, EF 55%.", "AF with rapid ventricular response; EF 35%."]
    return (batch,), {}


_SMALL_FUSION = {
    "ecg": {"seconds": 2.0, "dim": 32, "depth": 1, "heads": 2},
    "echo": {"size": 16, "frames": 4, "dim": 32, "depth": 1, "heads": 2},
    "labs": {"dim": 16, "heads": 2},
    "note": {"vocab_size": 64, "max_tokens": 16, "dim": 16, "depth": 1, "heads": 2},
    "dim": 32, "depth": 1, "heads": 2, "proj_dim": 16,
}
register_test("cardio_fusion", example=fusion_example, **_SMALL_FUSION)
# the teacher's test runs the convolutional echo encoder through the fusion model (the fusion's, the transformer)
_SMALL_CNN_ECHO = {"name": "video_cnn", "size": 16, "frames": 4, "widths": [8, 16], "dim": 16}
register_test("cardio_teacher", example=fusion_example, fusion={**_SMALL_FUSION, "echo": _SMALL_CNN_ECHO},
              outputs=["triage", "af"])

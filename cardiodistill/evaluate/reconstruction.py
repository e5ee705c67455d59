"""How well an ECG masked autoencoder fills in what it did not see: numbers and a figure.

Scoring
    The MAE runs in eval mode, without gradients, on masks drawn from a ``torch.Generator``
    seeded with ``seed``, so the same call gives the same numbers. Only *masked, present* patches
    are scored (visible patches are copied and absent leads have no truth). Signals are expected
    as the model was trained on them: per-lead z-scored, absent leads zero, so errors are in
    z-score units (MSE 1.0 is as far off as predicting a lead's mean everywhere).

    By default whole-lead dropping (``lead_mask_prob``, a training augmentation) is switched off
    for the evaluation, so every masked patch is predicted from the visible patches of its own
    lead and of the other leads; ``drop_leads=True`` scores the model with its training masks.

``norm_pix``
    A model trained with ``norm_pix`` predicts each patch standardised by its own mean and std.
    ``mse_norm`` compares that prediction with the standardised target (the training loss);
    ``mse`` compares it, de-normalised with each patch's *true* mean and std, with the raw target
    (so ``mse`` then credits the model with the patch's level and amplitude; only its shape
    error is left). ``ncc`` (Pearson correlation per patch) is invariant to that affine map, so
    it means the same with or without ``norm_pix``. Without ``norm_pix``, ``mse_norm`` is None.

Baseline
    ``baseline_interp_*`` score a model-free guess on the same masks: every masked sample is
    linearly interpolated between the nearest visible samples of its own lead (held flat before
    the first and after the last visible sample; zero for a lead with nothing visible). An MAE
    that does not beat it has learned little beyond smoothness.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from ..models.ecg_transformer import EcgMAE
from ..objectives.mae import NORM_PIX_EPS, normalise_patches, normalised_cross_correlation
from ..signals.leads import LEADS_12


@contextmanager
def _evaluating(mae: EcgMAE, drop_leads: bool) -> Iterator[None]:
    """Eval mode and, unless ``drop_leads``, no whole-lead dropping; both restored afterwards."""
    was_training, drop_prob = mae.training, mae.lead_mask_prob
    mae.eval()
    if not drop_leads:
        mae.lead_mask_prob = 0.0
    try:
        yield
    finally:
        mae.lead_mask_prob = drop_prob
        mae.train(was_training)


def _as_inputs(mae: EcgMAE, signals, present, leads: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Checked float32 signals ``[N, L, S]`` and bool presence ``[N, L]`` on the model's device."""
    device = next(mae.parameters()).device
    x = torch.as_tensor(signals, dtype=torch.float32).to(device)
    lead_present = torch.as_tensor(present, dtype=torch.bool).to(device)
    if x.ndim != 3 or x.shape[1] != len(leads):
        raise DataError(f"signals must be [records, {len(leads)} leads, samples], got shape {tuple(x.shape)}")
    if lead_present.shape != x.shape[:2]:
        raise DataError(f"present must be {tuple(x.shape[:2])} (records x leads), got {tuple(lead_present.shape)}")
    patch, max_patches = mae.encoder.patch_size, mae.encoder.max_patches
    if x.shape[2] % patch or x.shape[2] // patch > max_patches:
        need = f"a multiple of {patch}, at most {patch * max_patches}"
        raise DataError(f"{x.shape[2]} samples per lead: the model needs {need}")
    if not bool(lead_present.any(dim=1).all()):
        raise DataError("every record needs at least one present lead")
    if not bool(torch.isfinite(x[lead_present]).all()):
        raise DataError("signals hold NaN or infinite values in present leads")
    return x, lead_present


def _reconstruct(mae: EcgMAE, x: Tensor, leads, present: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
    """One MAE pass: ``pred`` (signal space), ``pred_model`` (as output), ``target``, ``mask`` (bool)."""
    out = mae(x, leads, present, generator=generator)
    target, pred = out["target"], out["pred"]
    signal_pred = pred
    if mae.norm_pix:
        scale = torch.sqrt(target.var(dim=-1, keepdim=True) + NORM_PIX_EPS)
        signal_pred = pred * scale + target.mean(dim=-1, keepdim=True)
    return {"pred": signal_pred, "pred_model": pred, "target": target, "mask": out["mask"].bool()}


def interpolation_baseline(target: Tensor, mask: Tensor, n_leads: int) -> Tensor:
    """Masked patches filled by linear interpolation along their lead (see the module docstring).

    ``target`` ``[B, N, patch]`` and ``mask`` ``[B, N]`` in the MAE's lead-major token layout
    (``N = n_leads * patches per lead``); returns ``[B, N, patch]``, equal to ``target`` where
    ``mask`` is False.
    """
    b, n, patch = target.shape
    signal = target.detach().reshape(b, n_leads, -1).cpu().numpy().copy()
    hidden = mask.bool().reshape(b, n_leads, -1).repeat_interleave(patch, dim=-1).cpu().numpy()
    t = np.arange(signal.shape[-1])
    for i, lead in zip(*np.nonzero(hidden.any(axis=-1))):
        seen = ~hidden[i, lead]
        fill = np.interp(t[~seen], t[seen], signal[i, lead, seen]) if seen.any() else 0.0
        signal[i, lead, ~seen] = fill
    return torch.from_numpy(signal).reshape(b, n, patch).to(target)


def _patch_mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).pow(2).mean(dim=-1)


def reconstruction_metrics(
    mae: EcgMAE,
    signals: np.ndarray | Tensor,
    present: np.ndarray | Tensor,
    *,
    leads: Sequence[str] = LEADS_12,
    batch_size: int = 64,
    seed: int = 0,
    drop_leads: bool = False,
) -> dict:
    """Score the MAE's masked-patch reconstruction of ``signals`` (see the module docstring).

    ``signals`` ``[N, L, S]`` float, per-lead z-scored, absent leads zero; ``present`` ``[N, L]``
    bool; ``leads`` the ``L`` lead names. Returns a JSON-ready dict: ``mse``, ``mse_norm`` (None
    without ``norm_pix``), ``ncc``, ``baseline_interp_mse``, ``baseline_interp_ncc`` (means over
    all scored patches), ``per_lead`` {name: the same five and ``n_patches``} for every lead with
    a scored patch, ``n_patches``, ``n_records``, ``mask_ratio``, ``lead_mask_prob`` (as used)
    and ``norm_pix``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    x, lead_present = _as_inputs(mae, signals, present, leads)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    keys = ("lead", "mse", "mse_norm", "ncc", "interp_mse", "interp_ncc")
    columns: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    with _evaluating(mae, drop_leads), torch.no_grad():
        used_drop_prob = mae.lead_mask_prob
        for start in range(0, len(x), batch_size):
            batch = slice(start, start + batch_size)
            r = _reconstruct(mae, x[batch], leads, lead_present[batch], generator)
            pred, target, mask = r["pred"], r["target"], r["mask"]
            baseline = interpolation_baseline(target, mask, len(leads))
            token_lead = torch.arange(mask.shape[1], device=mask.device) // (mask.shape[1] // len(leads))
            per_patch = {
                "lead": token_lead.expand_as(mask),
                "mse": _patch_mse(pred, target),
                "mse_norm": _patch_mse(r["pred_model"], normalise_patches(target)),
                "ncc": normalised_cross_correlation(pred, target, mask, reduction="none"),
                "interp_mse": _patch_mse(baseline, target),
                "interp_ncc": normalised_cross_correlation(baseline, target, mask, reduction="none"),
            }
            for key, value in per_patch.items():
                columns[key].append(value[mask].cpu().numpy())
    col = {key: np.concatenate(parts) for key, parts in columns.items()}
    if not len(col["lead"]):
        raise ConfigError(f"the MAE masked no patch (mask_ratio {mae.mask_ratio}): nothing to score")

    def summary(sel: np.ndarray) -> dict:
        return {
            "mse": float(col["mse"][sel].mean()),
            "mse_norm": float(col["mse_norm"][sel].mean()) if mae.norm_pix else None,
            "ncc": float(col["ncc"][sel].mean()),
            "baseline_interp_mse": float(col["interp_mse"][sel].mean()),
            "baseline_interp_ncc": float(col["interp_ncc"][sel].mean()),
            "n_patches": int(sel.sum()),
        }

    per_lead = {str(name): summary(col["lead"] == i) for i, name in enumerate(leads) if (col["lead"] == i).any()}
    overall = summary(np.ones(len(col["lead"]), dtype=bool))
    return {
        **overall,
        "per_lead": per_lead,
        "n_records": len(x),
        "mask_ratio": float(mae.mask_ratio),
        "lead_mask_prob": float(used_drop_prob),
        "norm_pix": bool(mae.norm_pix),
    }


def reconstruction_figure(
    mae: EcgMAE,
    signal: np.ndarray | Tensor,
    present: np.ndarray | Tensor,
    *,
    leads: Sequence[str] = LEADS_12,
    fs: float,
    seed: int = 0,
    title: str | None = None,
    drop_leads: bool = False,
):
    """The figure of :func:`plot_reconstruction` (a matplotlib ``Figure``, one axes per row)."""
    from ..viz import _plt

    plt = _plt()
    if np.ndim(signal) != 2 or np.ndim(present) != 1:
        shapes = f"{np.shape(signal)} and {np.shape(present)}"
        raise DataError(f"expected one record, signal [leads, samples] and present [leads]; got {shapes}")
    x, lead_present = _as_inputs(mae, torch.as_tensor(signal)[None], torch.as_tensor(present)[None], leads)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with _evaluating(mae, drop_leads), torch.no_grad():
        r = _reconstruct(mae, x, leads, lead_present, generator)
    n_leads, n_samples = x.shape[1:]
    patch = mae.encoder.patch_size
    ncc = normalised_cross_correlation(r["pred"], r["target"], r["mask"], reduction="none")
    ncc = ncc[0].view(n_leads, -1).cpu().numpy()
    hidden = r["mask"][0].view(n_leads, -1).cpu().numpy()
    recon = r["pred"][0].reshape(n_leads, n_samples).cpu().numpy()
    truth = r["target"][0].reshape(n_leads, n_samples).cpu().numpy()
    rows = [lead for lead in range(n_leads) if lead_present[0, lead]][:12]
    t = np.arange(n_samples) / fs

    fig, axes = plt.subplots(len(rows), 1, sharex=True, squeeze=False, figsize=(11, 0.8 * len(rows) + 1.3))
    for ax, lead in zip(axes[:, 0], rows):
        for q in np.flatnonzero(hidden[lead]):
            ax.axvspan(q * patch / fs, (q + 1) * patch / fs, color="0.9", lw=0)
        ax.plot(t, truth[lead], color="k", lw=0.7)
        ax.plot(t, np.where(np.repeat(hidden[lead], patch), recon[lead], np.nan), color="red", lw=0.8)
        score = f"NCC {np.nanmean(ncc[lead]):.2f}" if hidden[lead].any() else "nothing masked"
        ax.set_ylabel(f"{leads[lead]}\n{score}", rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].set_xlim(0, n_samples / fs)
    note = "black: signal (z-score); red: reconstruction of the masked patches (grey)"
    if mae.norm_pix:
        note += "\nnorm_pix model: prediction de-normalised with each patch's true mean and std"
    heading = title or f"MAE reconstruction, {mae.mask_ratio:.0%} of patches masked (seed {seed})"
    fig.suptitle(f"{heading}\n{note}", fontsize=9, x=0.01, ha="left")
    return fig


def plot_reconstruction(
    mae: EcgMAE,
    signal: np.ndarray | Tensor,
    present: np.ndarray | Tensor,
    path: str | Path,
    *,
    leads: Sequence[str] = LEADS_12,
    fs: float,
    seed: int = 0,
    title: str | None = None,
    drop_leads: bool = False,
) -> Path:
    """Write one record's reconstruction to a PNG, atomically; returns the path.

    ``signal`` ``[L, S]`` (per-lead z-scored), ``present`` ``[L]`` bool, ``fs`` in Hz. One row per
    present lead (at most 12): the signal in black, the prediction in red on the masked patches
    (shaded grey), the lead name and its NCC over masked patches on the left, time in seconds.
    """
    from ..io.atomic import atomic_path
    from ..viz import _plt

    fig = reconstruction_figure(mae, signal, present, leads=leads, fs=fs, seed=seed, title=title, drop_leads=drop_leads)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    finally:
        _plt().close(fig)
    return path

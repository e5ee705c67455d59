"""Figures a clinician reads: the 12-lead on ECG paper, echo frames.

``plot_ecg_paper`` draws the standard printout: 25 mm/s, 10 mm/mV, four columns of 2.5 s
(I II III | aVR aVL aVF | V1-V3 | V4-V6) over a 10 s rhythm strip of lead II, on a 1 mm / 5 mm grid.
A record without all twelve standard leads (a handheld recording, a 2-lead Holter) is drawn as one
10 s strip per lead it has, so that no empty slot is drawn.
Matplotlib is imported lazily (headless ``Agg`` backend) so importing cardiodistill stays fast.
"""

from __future__ import annotations

import numpy as np

from .records import EcgRecord

_PAPER_LAYOUT = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
_MM_PER_S = 25.0
_MM_PER_MV = 10.0
_ROW_MM = 30.0


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(ax, width_mm: float, height_mm: float) -> None:
    for x in np.arange(0, width_mm + 0.01, 1.0):
        ax.axvline(x, color="#f4c2c2" if x % 5 else "#e08080", lw=0.3 if x % 5 else 0.6, zorder=0)
    for y in np.arange(0, height_mm + 0.01, 1.0):
        ax.axhline(y, color="#f4c2c2" if y % 5 else "#e08080", lw=0.3 if y % 5 else 0.6, zorder=0)
    ax.set_xlim(0, width_mm)
    ax.set_ylim(0, height_mm)
    ax.set_aspect("equal")
    ax.axis("off")


def plot_ecg_paper(record: EcgRecord, ax=None, title: str | None = None, rhythm_lead: str = "II"):
    """Draw a record on ECG paper (module doc): the standard layout for a 12-lead, else one strip per
    lead; returns the axes."""
    plt = _plt()
    seconds = min(10.0, record.duration_s)
    col_s = seconds / 4.0
    width = seconds * _MM_PER_S
    standard = all(name in record.leads for row in _PAPER_LAYOUT for name in row)
    rows = [*_PAPER_LAYOUT, (rhythm_lead,)] if standard else [(name,) for name in record.leads]
    height = _ROW_MM * len(rows)
    if ax is None:
        _, ax = plt.subplots(figsize=(width / 25.4 * 0.8, height / 25.4 * 0.8))
    _grid(ax, width, height)
    t = np.arange(record.n_samples) / record.fs
    for r, names in enumerate(rows):
        baseline = height - _ROW_MM * (r + 0.5)
        for c, name in enumerate(names):
            if name not in record.leads:
                continue
            t0, t1 = (0.0, seconds) if len(names) == 1 else (c * col_s, (c + 1) * col_s)
            sel = (t >= t0) & (t < t1)
            ax.plot(t[sel] * _MM_PER_S, baseline + record.lead(name)[sel] * _MM_PER_MV, color="k", lw=0.6)
            ax.text(t0 * _MM_PER_S + 1, baseline + 7, name, fontsize=7)
    # 1 mV calibration pulse
    ax.plot([0, 0, 2, 2], [2, 2 + _MM_PER_MV, 2 + _MM_PER_MV, 2], color="k", lw=0.8)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return ax


def plot_echo_frames(frames: np.ndarray, indices, labels, axes) -> None:
    """Show ``frames[i]`` for each index on the given axes, labelled."""
    for ax, i, label in zip(axes, indices, labels):
        ax.imshow(frames[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{label} (frame {i})", fontsize=8)
        ax.axis("off")

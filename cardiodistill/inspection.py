"""What was read from an ECG file or a cine: the summaries behind ``cardiodistill inspect``.

One function builds a JSON-ready dict (format, leads, rate, duration, units, per-lead quality,
R-peaks per lead set) and one renders it for a terminal, so the human and the machine-readable
views can never disagree. No free-text field of a file (a DICOM SeriesDescription, a MUSE comment)
is ever shown: such fields may hold a patient's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import EcgRecord
from .signals.leads import LIMB_LEADS

#: Standard echo and cine-MR view codes: the only ``view`` values shown (a view read from a file's free
#: text, such as a DICOM SeriesDescription, may hold anything, a patient's name included).
VIEW_CODES = frozenset({"a2c", "a3c", "a4c", "a5c", "plax", "psax", "sax", "lax", "2ch", "3ch", "4ch", "lvot", "rvot"})

#: Lead sets whose R-peaks are reported when the record has them: what each device would see.
LEAD_SETS = {
    "all": None,
    "six_lead": LIMB_LEADS,
    "single_lead": ("I",),
}


def plural(n: int, noun: str) -> str:
    """``"1 lead"``, ``"2 leads"``: a count with its noun (regular English plural)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def summarize_ecg(record: EcgRecord) -> dict:
    """A JSON-ready summary of a record: shape, units, quality per lead, R-peaks per lead set."""
    from .signals.quality import lead_quality
    from .signals.rpeaks import detect_r_peaks, heart_rate

    quality = lead_quality(record)
    summary = {
        "source": record.source,
        "format": record.meta.get("format"),
        "fs": record.fs,
        "n_samples": record.n_samples,
        "duration_s": round(record.duration_s, 3),
        "leads": list(record.leads),
        "units": "mV",
        "units_in_file": _units_in_file(record.meta.get("units_found")),
        "quality": {lead: _quality_dict(q) for lead, q in quality.items()},
        "r_peaks": {},
    }
    usable = [lead for lead in record.leads if quality[lead].usable]
    for name, leads in LEAD_SETS.items():
        chosen = usable if leads is None else [lead for lead in leads if lead in usable]
        if leads is not None and len(chosen) != len(leads):
            continue
        if not chosen:
            continue
        peaks = detect_r_peaks(record, leads=chosen)
        summary["r_peaks"][name] = {
            "leads": chosen,
            "samples": [int(p) for p in peaks],
            "heart_rate_bpm": None if len(peaks) < 2 else round(float(heart_rate(peaks, record.fs)), 1),
        }
    return summary


def _units_in_file(found) -> str | None:
    """``["uV", "uV", ...]`` -> ``"uV"``; mixed units are listed once each."""
    if found is None:
        return None
    if isinstance(found, str):
        return found
    return ", ".join(dict.fromkeys(str(u) for u in found))


def _quality_dict(q) -> dict:
    out = {"usable": bool(q.usable), "reasons": list(q.reasons)}
    for key in ("amplitude_mv", "hf_noise_ratio"):
        value = getattr(q, key, None)
        if value is not None:
            out[key] = None if not np.isfinite(value) else round(float(value), 4)
    return out


def format_summary(summary: dict) -> str:
    """The summary as a few readable lines."""
    lines = [
        f"{summary['source']}",
        f"  format {summary['format'] or 'unknown'}, {plural(len(summary['leads']), 'lead')}, {summary['fs']:g} Hz, "
        f"{summary['duration_s']:g} s ({summary['n_samples']} samples), mV"
        + (f" (file: {summary['units_in_file']})" if summary.get("units_in_file") else ""),
        "  quality:",
    ]
    for lead, q in summary["quality"].items():
        state = "ok" if q["usable"] else "NOT USABLE: " + ", ".join(q["reasons"])
        amp = f"{q['amplitude_mv']:.2f} mV" if q.get("amplitude_mv") is not None else ""
        lines.append(f"    {lead:<4} {amp:>9}  {state}")
    for name, entry in summary["r_peaks"].items():
        hr = f", {entry['heart_rate_bpm']:g} bpm" if entry["heart_rate_bpm"] else ""
        lines.append(f"  R-peaks ({name}: {'+'.join(entry['leads'])}): {len(entry['samples'])}{hr}")
    return "\n".join(lines)


def plot_summary(record: EcgRecord, summary: dict, path: str | Path) -> Path:
    """Write the record on ECG paper (the standard 12-lead layout, or one strip per lead for other lead
    sets) to a PNG, atomically, creating missing parent folders."""
    from .io.atomic import atomic_path
    from .viz import _plt, plot_ecg_paper

    plt = _plt()
    title = f"{Path(record.source or '').name}  {record.fs:g} Hz  {plural(len(record.leads), 'lead')}"
    ax = plot_ecg_paper(record, title=title)
    fig = ax.figure
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def summarize_video(path: str | Path, *, png: str | Path | None = None, fps: float | None = None) -> dict:
    """A JSON-ready summary of a cine (no patient attribute in it): frames, rate, field of view,
    cardiac cycle, and what :func:`~cardiodistill.video.prepare_clip` makes of it with the default
    :class:`~cardiodistill.video.ClipSpec`. With ``png``, the preprocessing figure is written there."""
    from .io.video import read_video
    from .video import ClipSpec, field_of_view_and_overlay, prepare_clip, save_preprocessing_figure

    clip = read_video(path, fps=fps)
    fov, overlay = field_of_view_and_overlay(clip)
    spec = ClipSpec()
    prepared = prepare_clip(clip, spec)
    if png is not None:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        save_preprocessing_figure(clip, prepared, png)
    spacing = clip.meta.get("pixel_spacing_mm")
    return {
        "source": clip.source,
        "format": clip.meta.get("transfer_syntax") or clip.meta.get("format"),
        "modality": clip.modality,
        "view": clip.view if clip.view.lower() in VIEW_CODES else None,  # never free text
        "n_frames": clip.n_frames,
        "fps": round(clip.fps, 3),
        "duration_s": round(clip.n_frames / clip.fps, 3),
        "frame_size": list(clip.frames.shape[1:]),
        "pixel_spacing_mm": list(spacing) if spacing else None,
        "field_of_view_fraction": round(float(fov.mean()), 3),
        "overlay_pixels": int(overlay.sum()),
        "cycle_period_s": round(prepared.period_s, 3),
        "cycle_period_source": prepared.period_source,
        "heart_rate_bpm": round(60.0 / prepared.period_s, 1),
        "prepared": {**spec.to_dict(), "window_s": [round(t, 3) for t in prepared.window_s]},
    }


def format_video_summary(summary: dict) -> str:
    """The cine summary as a few readable lines."""
    prepared = summary["prepared"]
    height, width = summary["frame_size"]
    return "\n".join([
        f"{summary['source']}",
        f"  {summary['modality']} cine, view {summary['view'] or 'not coded'}, format {summary['format'] or 'unknown'}",
        f"  {summary['n_frames']} frames of {height}x{width} px at {summary['fps']:g} fps ({summary['duration_s']:g} s)",
        f"  field of view {summary['field_of_view_fraction']:.0%} of the frame, {summary['overlay_pixels']} overlay "
        "pixels blanked",
        f"  cardiac cycle {summary['cycle_period_s']:g} s ({summary['heart_rate_bpm']:g} bpm, from "
        f"{summary['cycle_period_source']})",
        f"  model input: {prepared['frames']} frames of {prepared['size']}x{prepared['size']} over "
        f"{prepared['window_s'][0]:g}-{prepared['window_s'][1]:g} s",
    ])

"""Accuracy of the cardiac phases against the simulator's ground truth, and the phases of a real echo.

    python benchmarks/bench_phases.py --patients 200

For every simulated patient: :func:`cardiodistill.signals.phases.ecg_phases` on the 12-lead (500 Hz)
and the handheld (300 Hz) ECG, against the beat train's R-peaks and T-wave ends; and
:func:`cardiodistill.video.phases.echo_phases` on the A4C cine, against the frames of the R-peaks
(end-diastole) and T ends (end-systole). Per event type and group (all, sinus rhythm, atrial fibrillation, and bundle branch block of
either rhythm, whose broad QRS moves the R-peak):

* ``median_ms`` / ``p90_ms``: absolute error of each true event to the nearest detection, over the
  true events with a detection within ``MATCH_S`` (a farther one answers another event);
* ``sensitivity``: share of true events with a detection within the tolerance (R 20 ms, T end
  60 ms, ED / ES 40 ms = 2 frames at 50 fps); ``sensitivity_interior`` the same for events at
  least ``EDGE_S`` from either end of the record (an extremum on the first or last frame cannot be
  confirmed);
* ``false``: detections with no true event within the tolerance (``false_per_record`` per record).

True T ends are those of beats whose R-peak lies inside the recording (a T end belongs to a beat).
The real apical echo (``../shared/data/dicom``, skipped when absent) has no ground truth: its ED and
ES frames and cycle length are reported. Results go to ``benchmarks/results/phases.json``; a
markdown table is printed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from cardiodistill.config import SynthConfig
from cardiodistill.io import read_video
from cardiodistill.io.atomic import write_json_atomic
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12
from cardiodistill.signals.phases import ecg_phases
from cardiodistill.synth.cohort import chunk_bounds, generate_chunk
from cardiodistill.synth.ecg import MOBILE_LEADS
from cardiodistill.synth.rhythm import events_to_samples
from cardiodistill.video import estimate_cycle_period, field_of_view_and_overlay
from cardiodistill.video.phases import echo_phases

RESULTS = Path(__file__).parent / "results" / "phases.json"
REAL_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dicom"
REAL_ECHOES = ("color3d_jpeg_baseline.dcm",)  # the one apical cine; the others are Doppler or MR
TOLERANCE_S = {"R": 0.020, "T end": 0.060, "R (handheld)": 0.020, "T end (handheld)": 0.060, "ED": 0.040, "ES": 0.040}
MATCH_S = 0.15
EDGE_S = 0.06
GROUPS = ("all", "sinus", "af", "bbb")


def _nearest(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Distance from each of ``true`` to the nearest of ``found`` (inf when nothing was found)."""
    if len(found) == 0:
        return np.full(len(true), np.inf)
    return np.abs(found[None, :].astype(float) - true[:, None]).min(axis=1)


def _compare(found: np.ndarray, true: np.ndarray, rate: float, n: int) -> dict:
    """Per-record errors (seconds) of the true events, their distance to the ends, and false detections."""
    true = np.asarray(true, float)
    found = np.asarray(found, float)
    return {"error_s": _nearest(found, true) / rate, "edge_s": np.minimum(true, n - 1 - true) / rate,
            "found_error_s": _nearest(true, found) / rate}


def _ecg_rows(record: EcgRecord, beats_r: np.ndarray, beats_t: np.ndarray, duration: float) -> tuple[dict, dict]:
    fs = record.fs
    phases = ecg_phases(record)
    keep = np.isfinite(beats_r) & (beats_r >= 0) & (beats_r < duration)
    true_t = beats_t[keep & (beats_t < duration)]
    n = record.n_samples
    r = _compare(phases.r, events_to_samples(beats_r[None], 0.0, duration, fs)[0], fs, n)
    t = _compare(phases.t_end[phases.t_end >= 0], np.round(true_t * fs), fs, n)
    return r, t


def simulate(patients: int, chunk_size: int, seed: int) -> tuple[dict[str, list[tuple[set, dict]]], SynthConfig]:
    """Run the detectors on every simulated patient; per event type a list of (groups, comparison)."""
    cfg = SynthConfig(patients=patients, chunk_size=chunk_size, seed=seed)
    rows: dict[str, list[tuple[set, dict]]] = {name: [] for name in TOLERANCE_S}
    leads = MOBILE_LEADS[cfg.mobile.device]
    for index in range(len(chunk_bounds(cfg))):
        chunk = generate_chunk(cfg, index)
        beats, echo = chunk.beats, chunk.echo
        for i in range(len(chunk)):
            groups = {"all", "af" if chunk.pop.af[i] else "sinus"} | ({"bbb"} if chunk.pop.bbb[i] else set())
            r, t = _ecg_rows(EcgRecord(chunk.ecg[i], cfg.ecg.fs, LEADS_12), beats.r[i], beats.t_end[i], beats.duration_s)
            rm, tm = _ecg_rows(EcgRecord(chunk.mobile[i], cfg.mobile.fs, leads), beats.r[i], beats.t_end[i],
                               beats.duration_s)
            phases = echo_phases(echo.frames[i], echo.fps)
            n_frames = echo.frames.shape[1]
            ed = _compare(phases.ed, echo.ed_frames[i], echo.fps, n_frames)
            es = _compare(phases.es, echo.es_frames[i], echo.fps, n_frames)
            for name, row in zip(TOLERANCE_S, (r, t, rm, tm, ed, es)):
                rows[name].append((groups, row))
    return rows, cfg


def summarise(rows: list[dict], tol: float) -> dict:
    """Median / 90th-percentile error (ms), sensitivity and false detections of one event type."""
    err = np.concatenate([r["error_s"] for r in rows])
    edge = np.concatenate([r["edge_s"] for r in rows])
    false = int(sum((r["found_error_s"] > tol).sum() for r in rows))
    matched = err[err <= MATCH_S]
    interior = err[edge >= EDGE_S]
    return {
        "records": len(rows),
        "events": len(err),
        "median_ms": round(1000 * float(np.median(matched)), 1) if len(matched) else None,
        "p90_ms": round(1000 * float(np.percentile(matched, 90)), 1) if len(matched) else None,
        "sensitivity": round(float(np.mean(err <= tol)), 4) if len(err) else None,
        "sensitivity_interior": round(float(np.mean(interior <= tol)), 4) if len(interior) else None,
        "false": false,
        "false_per_record": round(false / max(len(rows), 1), 3),
        "tolerance_ms": round(1000 * tol),
    }


def real_echoes() -> list[dict]:
    """ED / ES frames and cycle length of the real echo cines that are present."""
    out = []
    for name in REAL_ECHOES:
        path = REAL_DICOM / name
        if not path.is_file():
            continue
        clip = read_video(path)
        start = time.perf_counter()
        phases = echo_phases(clip.frames, clip.fps)
        seconds = time.perf_counter() - start
        fov, overlay = field_of_view_and_overlay(clip)
        period = estimate_cycle_period(clip.frames, clip.fps, fov & ~overlay)
        out.append({
            "file": name, "frames": clip.n_frames, "fps": round(clip.fps, 3), "shape": list(clip.frames.shape[1:]),
            "period_s": None if not np.isfinite(period) else round(float(period), 3),
            "ed": phases.ed.tolist(), "es": phases.es.tolist(),
            "ed_to_ed_s": np.round(np.diff(phases.ed) / clip.fps, 3).tolist(),
            "seconds": round(seconds, 3),
        })
    return out


def table(groups: dict) -> str:
    lines = ["| event | rhythm | events | median error | p90 error | sensitivity (interior) | false / record |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in TOLERANCE_S:
        for group in GROUPS:
            s = groups[group][name]
            if not s["events"]:
                continue
            lines.append(f"| {name} | {group} | {s['events']} | {s['median_ms']} ms | {s['p90_ms']} ms | "
                         f"{s['sensitivity']:.3f} ({s['sensitivity_interior']:.3f}) within {s['tolerance_ms']} ms | "
                         f"{s['false_per_record']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    start = time.perf_counter()
    rows, cfg = simulate(args.patients, args.chunk_size, args.seed)
    groups = {
        group: {name: summarise([r for member, r in rows[name] if group in member], tol)
                for name, tol in TOLERANCE_S.items()}
        for group in GROUPS
    }
    real = real_echoes()
    result = {
        "patients": args.patients, "seed": args.seed,
        "ecg_fs": cfg.ecg.fs, "mobile_fs": cfg.mobile.fs, "mobile_device": cfg.mobile.device,
        "echo_size": cfg.echo.size, "echo_fps": cfg.echo.fps, "echo_duration_s": cfg.echo.duration_s,
        "groups": groups, "real_echo": real,
        "seconds": round(time.perf_counter() - start, 1), "cores": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(args.out, result)
    print(table(groups))
    for r in real:
        print(f"\n{r['file']}: {r['frames']} frames at {r['fps']} fps, cycle {r['period_s']} s, "
              f"ED {r['ed']}, ES {r['es']} ({r['seconds']} s)")
    print(f"\n{result['seconds']} s; written to {args.out}")


if __name__ == "__main__":
    main()

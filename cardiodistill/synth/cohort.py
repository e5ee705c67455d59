"""Assemble and write a paired cohort: latent state -> every modality -> clinical files.

The cohort is generated in chunks of ``chunk_size`` patients. Chunk ``k`` draws all its random
numbers from ``SeedSequence([seed, k])`` (one child stream per component), so

* the same config and seed give the same cohort, whatever ``workers`` is;
* memory is bounded by one chunk per worker, whatever the cohort size;
* a run that was interrupted resumes: finished chunks are skipped, the rest regenerated exactly.

Written layout (paths in the manifest are relative to the cohort folder)::

    manifest.csv      one row per study: ids, split, file paths, labels (triage, dx_*, lvef)
    labs.csv          blood work in canonical units (lab_units.json gives the units)
    timing.jsonl      ground-truth timing: R-peak samples (12-lead and mobile), echo ED/ES frames
    latent.csv        the full latent state, for analysis only: never a model input
    ecg/<id>.hea/.dat      12-lead WFDB, 500 Hz, mV
    mobile/<id>.hea/.dat   handheld ECG WFDB (lead I, or I and II plus the 4 derived limb leads), 300 Hz
    echo/<id>.dcm          apical four-chamber cine, multi-frame ultrasound DICOM
    notes/<id>.txt         cardiologist-style note

With ``synth.stream=true`` the ``synth`` command then writes ``stream/`` from these files, as
``cardiodistill stream`` does (:mod:`cardiodistill.data.streaming`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config, SynthConfig
from ..io.atomic import write_json_atomic, write_text_atomic
from ..io.dicom import write_echo_dicom
from ..io.wfdb import write_wfdb
from ..records import EcgRecord, VideoClip
from ..signals.leads import LEADS_12
from .ecg import MOBILE_LEADS, render_12lead, render_mobile, sample_ecg_params
from .echo import EchoBatch, render_echo
from .labels import make_labels
from .labs import LAB_UNITS, sample_labs
from .notes import write_notes
from .population import Population, sample_population
from .rhythm import BeatTrain, sample_beats

PARTS_DIR = ".parts"
SPLITS = ("train", "val", "test")


@dataclass
class CohortChunk:
    """Everything generated for one chunk of patients, in memory."""

    index: int
    pop: Population
    beats: BeatTrain
    ecg: np.ndarray  # float32 [n, 12, S] mV
    mobile: np.ndarray | None  # float32 [n, L, S_mobile] mV
    echo: EchoBatch | None
    labs: pd.DataFrame
    notes: list[str]
    labels: pd.DataFrame
    split: np.ndarray  # str [n]

    def __len__(self) -> int:
        return len(self.pop)

    def timing(self, cfg: SynthConfig) -> list[dict]:
        """Ground-truth timing per patient, JSON-ready."""
        r12 = self.beats.r_peak_samples(cfg.ecg.fs)
        rm = self.beats.r_peak_samples(cfg.mobile.fs) if self.mobile is not None else None
        rows = []
        for i, pid in enumerate(self.pop.patient_id):
            row = {"patient_id": str(pid), "ecg_fs": cfg.ecg.fs, "r_peaks": r12[i].tolist()}
            if rm is not None:
                row.update(mobile_fs=cfg.mobile.fs, mobile_r_peaks=rm[i].tolist())
            if self.echo is not None:
                row.update(
                    echo_fps=self.echo.fps,
                    echo_start_s=round(float(self.echo.start_s[i]), 6),
                    ed_frames=self.echo.ed_frames[i].tolist(),
                    es_frames=self.echo.es_frames[i].tolist(),
                )
            rows.append(row)
        return rows


def chunk_bounds(cfg: SynthConfig) -> list[tuple[int, int]]:
    """(first patient, number of patients) of every chunk."""
    return [(s, min(cfg.chunk_size, cfg.patients - s)) for s in range(0, cfg.patients, cfg.chunk_size)]


#: generate_chunk's independent random streams, in spawn order
STREAMS = ("population", "beats", "ecg_params", "ecg_noise", "mobile", "echo", "labs", "notes", "labels")


def chunk_rng(cfg: SynthConfig, index: int, stream: str) -> np.random.Generator:
    """The generator behind ``stream`` (one of :data:`STREAMS`) of chunk ``index``: redraws exactly what
    :func:`generate_chunk` drew from it."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, index]).spawn(len(STREAMS))[STREAMS.index(stream)])


def generate_chunk(cfg: SynthConfig, index: int) -> CohortChunk:
    """Generate chunk ``index`` of the cohort described by ``cfg`` (pure: no files)."""
    start, n = chunk_bounds(cfg)[index]
    streams = [chunk_rng(cfg, index, name) for name in STREAMS]
    pop = sample_population(n, cfg.prevalence, streams[0], first_id=start)
    beats = sample_beats(pop, cfg.ecg.duration_s, streams[1])
    params = sample_ecg_params(pop, streams[2])
    ecg = render_12lead(pop, beats, params, cfg.ecg.fs, streams[3], noise=cfg.ecg.noise, resolution_uv=cfg.ecg.resolution_uv)
    mobile = None
    if cfg.mobile.enabled:
        mobile = render_mobile(
            pop, beats, params, cfg.mobile.fs, streams[4],
            device=cfg.mobile.device, noise=cfg.mobile.noise, resolution_uv=cfg.mobile.resolution_uv,
        )
    echo = None
    if cfg.echo.enabled:
        rng = streams[5]
        latest = cfg.ecg.duration_s - cfg.echo.duration_s
        start_s = rng.uniform(0.0, latest, n) if latest > 0 else np.zeros(n)
        echo = render_echo(
            pop, beats, rng, start_s=start_s, size=cfg.echo.size, fps=cfg.echo.fps,
            duration_s=min(cfg.echo.duration_s, cfg.ecg.duration_s), noise=cfg.echo.noise, view=cfg.echo.views[0],
        )
    labs = sample_labs(pop, streams[6], missing_rate=cfg.labs.missing_rate)
    notes = write_notes(pop, streams[7], omission_rate=cfg.notes.omission_rate, labs=labs, style=cfg.notes.style)
    rng = streams[8]
    labels = make_labels(pop, rng, cfg.label_noise)
    split = rng.choice(np.asarray(SPLITS), size=n, p=[cfg.splits.train, cfg.splits.val, cfg.splits.test])
    return CohortChunk(index, pop, beats, ecg, mobile, echo, labs, notes, labels, split)


def iter_chunks(cfg: SynthConfig) -> Iterator[CohortChunk]:
    """Generate the cohort chunk by chunk in memory (for analysis and probes)."""
    for index in range(len(chunk_bounds(cfg))):
        yield generate_chunk(cfg, index)


# ---------------------------------------------------------------------------------------------
# writing


def _dx_comment(labels: pd.Series) -> str:
    found = [c[3:] for c, v in labels.items() if c.startswith("dx_") and v]
    return "Dx: " + (", ".join(found) if found else "none")


def _write_chunk_files(chunk: CohortChunk, cfg: SynthConfig, out: Path) -> pd.DataFrame:
    """Write one chunk's per-patient clinical files; return its manifest rows."""
    rows = []
    pop = chunk.pop
    mobile_leads = MOBILE_LEADS[cfg.mobile.device]
    for i, pid in enumerate(pop.patient_id):
        pid = str(pid)
        sex = "M" if pop.male[i] else "F"
        labels = chunk.labels.iloc[i]
        row = {"patient_id": pid, "study_id": f"S{pid[1:]}", "split": str(chunk.split[i]),
               "age": round(float(pop.age[i]), 1), "sex": sex}
        if cfg.files:
            comments = [f"Age: {pop.age[i]:.0f}", f"Sex: {sex}", _dx_comment(labels), "Simulated by cardiodistill"]
            write_wfdb(EcgRecord(chunk.ecg[i], cfg.ecg.fs, LEADS_12), out / "ecg" / pid,
                       resolution_uv=cfg.ecg.resolution_uv, comments=comments)
            row["ecg_path"] = f"ecg/{pid}"
            if chunk.mobile is not None:
                write_wfdb(EcgRecord(chunk.mobile[i], cfg.mobile.fs, mobile_leads), out / "mobile" / pid,
                           resolution_uv=cfg.mobile.resolution_uv, comments=comments[:2] + [f"Device: {cfg.mobile.device}"])
                row["mobile_path"] = f"mobile/{pid}"
            if chunk.echo is not None:
                clip = VideoClip(chunk.echo.frames[i], chunk.echo.fps, view=cfg.echo.views[0])
                write_echo_dicom(clip, out / "echo" / f"{pid}.dcm", patient_id=pid, patient_age=float(pop.age[i]),
                                 patient_sex=sex, heart_rate=float(pop.heart_rate[i]))
                row["echo_path"] = f"echo/{pid}.dcm"
            write_text_atomic(out / "notes" / f"{pid}.txt", chunk.notes[i] + "\n")
            row["note_path"] = f"notes/{pid}.txt"
        rows.append(row)
    manifest = pd.DataFrame(rows).set_index("patient_id").join(chunk.labels)
    return manifest.reset_index()


def _chunk_job(args: tuple[SynthConfig, int, str]) -> int:
    cfg, index, out = args
    out = Path(out)
    chunk = generate_chunk(cfg, index)
    manifest = _write_chunk_files(chunk, cfg, out)
    parts = out / PARTS_DIR
    latent = chunk.pop.to_frame()
    labs = chunk.labs.reset_index(names="patient_id")
    # the part's manifest is written last: its presence means the chunk is complete
    write_text_atomic(parts / f"latent-{index:05d}.csv", latent.to_csv(index=False))
    write_text_atomic(parts / f"labs-{index:05d}.csv", labs.to_csv(index=False))
    write_text_atomic(parts / f"timing-{index:05d}.jsonl", "".join(json.dumps(r) + "\n" for r in chunk.timing(cfg)))
    write_text_atomic(parts / f"manifest-{index:05d}.csv", manifest.to_csv(index=False))
    return len(chunk)


def _done_chunks(out: Path) -> set[int]:
    parts = out / PARTS_DIR
    if not parts.is_dir():
        return set()
    return {int(p.stem.split("-")[1]) for p in parts.glob("manifest-*.csv")}


def write_cohort(config: Config, out: str | Path, progress: Callable[[int], None] | None = None) -> pd.DataFrame:
    """Generate the cohort of ``config.synth`` into ``out`` (a prepared run folder); return the manifest.

    Resumes from finished chunks. ``progress(n)`` is called with each finished chunk's size.
    """
    cfg = config.synth
    out = Path(out)
    for sub in ("ecg", "mobile", "echo", "notes", PARTS_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)
    bounds = chunk_bounds(cfg)
    done = _done_chunks(out)
    if progress:
        progress(sum(bounds[i][1] for i in done))
    todo = [(cfg, i, str(out)) for i in range(len(bounds)) if i not in done]
    if cfg.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            for n in pool.map(_chunk_job, todo):
                if progress:
                    progress(n)
    else:
        for job in todo:
            n = _chunk_job(job)
            if progress:
                progress(n)
    return _assemble(out, len(bounds))


def _assemble(out: Path, n_chunks: int) -> pd.DataFrame:
    parts = out / PARTS_DIR

    def concat(kind: str) -> pd.DataFrame:
        return pd.concat([pd.read_csv(parts / f"{kind}-{i:05d}.csv", dtype={"patient_id": str}) for i in range(n_chunks)])

    write_text_atomic(out / "latent.csv", concat("latent").to_csv(index=False))
    write_text_atomic(out / "labs.csv", concat("labs").to_csv(index=False))
    write_json_atomic(out / "lab_units.json", dict(LAB_UNITS))
    timing = "".join((parts / f"timing-{i:05d}.jsonl").read_text() for i in range(n_chunks))
    write_text_atomic(out / "timing.jsonl", timing)
    manifest = concat("manifest")
    write_text_atomic(out / "manifest.csv", manifest.to_csv(index=False))
    for p in parts.iterdir():
        os.remove(p)
    parts.rmdir()
    for sub in ("ecg", "mobile", "echo", "notes"):
        folder = out / sub
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return manifest

"""Paired multimodal studies for stages 2 and 3: every modality of a study preprocessed once, side by side.

Stage 2 distils the 12-lead ECG, the echo, the labs and the note into a shared space; stage 3
teaches the handheld ECG encoder from it. Both read every study many times, so
:func:`build_paired_cache` reads a cohort folder once and stores, per study (one row each), what
the stage-1 encoders saw in pretraining:

* ``ecg`` float16 ``[12, S]`` and ``ecg_present`` bool ``[12]``: the record's first window
  (:func:`~cardiodistill.data.ecg_windows.record_windows`: canonical leads, gaps filled, resampled
  to ``spec.ecg.fs``, band-passed, z-scored per lead), in :data:`~cardiodistill.signals.leads.LEADS_12` order;
* ``mobile`` float16 ``[L, S]`` and ``mobile_present`` bool ``[L]``: the handheld ECG, same steps, its
  leads in ``spec.mobile_leads`` order (a one-lead device fills lead I only);
* ``echo`` uint8 ``[F, H, W]`` and ``echo_mask`` bool ``[H, W]``: the cine prepared from its start
  (:func:`~cardiodistill.video.prepare_clip`);
* ``labs`` float32 ``[n_labs]``: ``labs.csv`` values in canonical units, NaN where missing (all NaN and
  ``has_labs`` False for a patient without a row or without any value);
* ``ecg_phase`` int32 ``[2]``: (R-peak, T-wave end) sample at ``spec.ecg.fs`` of one beat inside the
  12-lead window, the one nearest its middle among those whose T end was found
  (:func:`~cardiodistill.signals.phases.ecg_phases`); ``echo_phase`` int32 ``[2]``: (end-diastole,
  end-systole) as indices into the prepared frames (:func:`~cardiodistill.video.phases.echo_phases`
  on the original cine, each event mapped to the prepared frame nearest in time, within half a
  prepared-frame spacing; the first of each); -1 where not found;
* ``gt_ecg_phase`` / ``gt_echo_phase`` int32 ``[2]``: the same from the simulator's ``timing.jsonl``
  (-1 without it). The simulator puts end-systole at the end of the T wave, so the T-end truth is
  the echo's end-systole truth on the ECG clock and is known only for beats the echo clip covers.
  ``gt_ecg_phase`` is the truth of the beat ``ecg_phase`` reports (the true R-peak nearest it), or,
  when nothing was detected, of the true beat nearest the middle whose T end is known;
* ``has_ecg``, ``has_mobile``, ``has_echo``, ``has_labs``, ``has_note`` bool.

``items.csv`` holds patient_id, study_id, split, sex, age, the note's text, triage, dx_*, lvef
(NaN when missing) and split_bucket. A modality whose file cannot be read is left out of that study
and listed in ``cache.json``'s ``skipped`` as ``[patient_id, modality, reason]`` (the reason without
the path); the study stays. The layout, atomic build and reuse rules are
:mod:`~cardiodistill.data.cache`'s.

Identifiers. ``patient_id`` and ``study_id`` in ``items.csv`` and ``skipped`` are keyed pseudonyms of
the manifest's ids (:func:`~cardiodistill.data.cache.written_id`; real ids only with
``real_ids=True`` or ``$CARDIODISTILL_REAL_IDS=1``). Pseudonyms are distinct per id, so grouping by
patient is unchanged. Whatever must hash the *real* id reads ``split_bucket`` instead, the
:func:`~cardiodistill.data.cache.split_bucket` of the manifest's patient_id: the labelled subset and
the stage-2 holdout are ``in_fraction(table["split_bucket"], share)``, exactly the studies that
hashing the real ids chose before ids were pseudonymised (so every split and published number stays
as it was), while the real ids stay in the manifest and in memory during the build. The alternative,
re-reading the manifest whenever a cache is opened, would make a cache useless without its cohort
folder and keep real ids in memory for every job that reads it.

Manifest paths. Every file the manifest names is checked by
:func:`~cardiodistill.data.cache.manifest_file` before it is opened: inside the cohort folder once
symlinks and ``..`` are resolved (files elsewhere only with ``$CARDIODISTILL_ALLOW_OUTSIDE_PATHS=1``),
a regular file, and no larger than
:data:`~cardiodistill.data.cache.MAX_FILE_BYTES` for its kind (a note at most 1 MiB; ECG and echo
files are further bounded by their readers). A file that fails is that study's modality absent,
with the reason in ``skipped``; it is never read. ``manifest.csv``, ``labs.csv`` and
``timing.jsonl`` are read whole only as regular files of at most
:data:`~cardiodistill.data.cache.MAX_TABLE_BYTES`.

:class:`PairedDataset` serves the rows as model input, with zeros and ``has_x`` False for a modality
that is absent or not asked for, so :func:`~torch.utils.data.default_collate` batches any mix.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import CardiodistillError, ConfigError, DataError, one_line
from ..io import read_ecg, read_video
from ..records import EcgRecord
from ..signals.leads import LEADS_12
from ..signals.phases import ecg_phases
from ..signals.preprocess import canonicalize, fill_gaps
from ..video import ClipSpec, normalise_frames, prepare_clip
from ..video.phases import echo_phases
from .cache import (
    INDEX_NAME,
    MAX_FILE_BYTES,
    MAX_TABLE_BYTES,
    OUTSIDE_PATHS_ENV,
    REAL_IDS_ENV,
    ArrayCache,
    CacheBuilder,
    ids_fingerprint,
    manifest_file,
    opted_in,
    read_bounded,
    redact,
    reuse_cache,
    split_bucket,
    written_id,
)
from .ecg_windows import WindowSpec, record_windows

__all__ = ["MODALITIES", "PairedCache", "PairedDataset", "PairedSpec", "build_paired_cache", "model_item", "model_zeros"]

CACHE_FORMAT = "cardiodistill-paired"
CACHE_VERSION = 2  # 2: pseudonymous ids, split_bucket, bounded and confined manifest paths
MODALITIES = ("ecg", "mobile", "echo", "labs", "note")
TEXT_COLUMNS = ("patient_id", "study_id", "split", "sex", "note")
PATH_COLUMNS = {"ecg": "ecg_path", "mobile": "mobile_path", "echo": "echo_path", "note": "note_path"}
PHASES = ("ecg_phase", "echo_phase", "gt_ecg_phase", "gt_echo_phase")
STUDIES_PER_JOB = 8  # studies handed to a worker process at once
NONE = (-1, -1)


@dataclass(frozen=True)
class PairedSpec:
    """What the encoders see of a study: the ECG window (both devices), the echo clip, the handheld lead order.

    ``ecg``: rate (Hz), length (s) and band of the ECG encoder (its stage-1 :class:`WindowSpec`);
    ``clip``: the video encoder's :class:`~cardiodistill.video.ClipSpec`; ``mobile_leads``: the stored
    order of the handheld ECG's leads (canonical names).
    """

    ecg: WindowSpec = field(default_factory=lambda: WindowSpec(100.0, 10.0))
    clip: ClipSpec = field(default_factory=ClipSpec)
    mobile_leads: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF")

    def __post_init__(self) -> None:
        if not isinstance(self.ecg, WindowSpec):
            raise ConfigError(f"PairedSpec.ecg must be a WindowSpec, got {type(self.ecg).__name__}")
        if not isinstance(self.clip, ClipSpec):
            raise ConfigError(f"PairedSpec.clip must be a ClipSpec, got {type(self.clip).__name__}")
        leads = tuple(self.mobile_leads)
        unknown = [lead for lead in leads if lead not in LEADS_12]
        if not leads or unknown or len(set(leads)) != len(leads):
            raise ConfigError(f"PairedSpec.mobile_leads must be distinct canonical lead names "
                              f"({', '.join(LEADS_12)}), got {list(leads)}")
        object.__setattr__(self, "mobile_leads", leads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        band = list(self.ecg.band) if self.ecg.band is not None else None
        return {"ecg": {"fs": self.ecg.fs, "seconds": self.ecg.seconds, "band": band},
                "clip": self.clip.to_dict(), "mobile_leads": list(self.mobile_leads)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedSpec:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"PairedSpec must be given as a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"PairedSpec has no field(s) {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        if "ecg" in data:
            ecg = data["ecg"]
            if not isinstance(ecg, dict) or not {"fs", "seconds"} <= set(ecg) or set(ecg) - {"fs", "seconds", "band"}:
                raise ConfigError(f"PairedSpec.ecg must be a mapping of fs, seconds and band, got {ecg!r}")
            band = ecg.get("band", WindowSpec.band)
            try:
                kwargs["ecg"] = WindowSpec(float(ecg["fs"]), float(ecg["seconds"]),
                                           None if band is None else (float(band[0]), float(band[1])))
            except (TypeError, ValueError, IndexError):
                raise ConfigError(f"PairedSpec.ecg needs numbers for fs, seconds and band, got {ecg!r}") from None
        if "clip" in data:
            kwargs["clip"] = ClipSpec.from_dict(data["clip"])
        if "mobile_leads" in data:
            kwargs["mobile_leads"] = tuple(data["mobile_leads"])
        return cls(**kwargs)


# ----------------------------------------------------------------------------------- reading the cohort


@dataclass(frozen=True)
class _Study:
    """What a worker needs to preprocess one study (picklable)."""

    patient_id: str  # as written (a pseudonym unless real ids were asked for): names the study in ``skipped``
    paths: dict[str, str | None]  # modality -> path relative to the cohort folder (or absolute), None if absent
    labs: np.ndarray | None  # float32 [n_labs], None without a labs.csv row
    timing: dict[str, Any] | None  # the study's timing.jsonl entry


def _read_csv(path: Path, text: Iterable[str], max_bytes: int | None = MAX_TABLE_BYTES) -> pd.DataFrame:
    """``path`` with the ``text`` columns read literally ("" when blank; an id "NA" stays "NA") and the
    others by pandas' rules (blank, "NA", "NaN" are missing). An input table is read only as a regular
    file of at most ``max_bytes`` (None: this module's own ``items.csv``, as large as the cohort)."""
    text = set(text)
    data = None if max_bytes is None else read_bounded(path, max_bytes, "table")
    try:
        frame = pd.read_csv(path if data is None else io.BytesIO(data))
        literal = pd.read_csv(path if data is None else io.BytesIO(data), dtype=str, keep_default_na=False,
                              usecols=lambda c: c in text)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the table: {one_line(err)}", path) from None
    frame[literal.columns] = literal
    return frame


def _read_manifest(path: Path) -> pd.DataFrame:
    manifest = _read_csv(path, (*TEXT_COLUMNS, *PATH_COLUMNS.values()))
    if "patient_id" not in manifest:
        raise DataError("manifest.csv has no patient_id column", path)
    blank = int((manifest["patient_id"].str.strip() == "").sum())
    if blank:
        raise DataError(f"manifest.csv has {blank} row(s) without a patient_id", path)
    for column in ("age", "triage", *(c for c in manifest.columns if c.startswith("dx_")), "lvef"):
        if column in manifest:
            try:
                manifest[column] = manifest[column].astype(np.float64)
            except ValueError:
                raise DataError(f"manifest.csv column {column!r} is not numeric", path) from None
    return manifest


def _read_labs(path: Path) -> tuple[pd.DataFrame | None, list[str]]:
    """``labs.csv`` indexed by patient_id (float64 values), and the lab names in file order."""
    if not path.is_file():
        return None, []
    labs = _read_csv(path, ("patient_id",))
    if "patient_id" not in labs:
        raise DataError("labs.csv has no patient_id column", path)
    duplicated = labs["patient_id"].duplicated()
    if duplicated.any():
        raise DataError(f"labs.csv has more than one row for patient {labs['patient_id'][duplicated].iloc[0]}", path)
    names = [c for c in labs.columns if c != "patient_id"]
    for name in names:
        try:
            labs[name] = labs[name].astype(np.float64)
        except ValueError:
            raise DataError(f"labs.csv column {name!r} is not numeric", path) from None
    return labs.set_index("patient_id"), names


def _read_timing(path: Path) -> dict[str, dict[str, Any]]:
    """The simulator's ground-truth timing by patient_id (empty without the file)."""
    if not path.is_file():
        return {}
    try:
        lines = read_bounded(path, MAX_TABLE_BYTES, "table").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError("timing.jsonl is not UTF-8 text", path) from None
    timing = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            timing[str(entry["patient_id"])] = entry
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"timing.jsonl line {number} is not a JSON object with a patient_id", path) from None
    return timing


def _fingerprint(root: Path, spec: PairedSpec) -> dict[str, Any]:
    """Spec plus the identity (path, size, mtime) of the manifest and of the optional labs and timing
    files, so editing any of them means a new cache."""
    files = {}
    for name in ("manifest.csv", "labs.csv", "timing.jsonl"):
        path = (root / name).resolve()
        if path.is_file():
            stat = path.stat()
            files[name] = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "spec": spec.to_dict(), "files": files}


def _table_row(row: pd.Series, dx_names: list[str], note: str, real_ids: bool) -> dict[str, Any]:
    """One ``items.csv`` row: ids as written and text ("" when missing), age and labels (NaN when
    missing), and the split bucket of the real patient id (module doc)."""
    text = {c: str(row[c]) if pd.notna(row.get(c)) else "" for c in TEXT_COLUMNS[:4]}
    bucket = split_bucket(text["patient_id"])
    text.update({c: written_id(text[c], real_ids) for c in ("patient_id", "study_id")})
    numbers = {c: float(row[c]) if pd.notna(row.get(c)) else math.nan for c in ("age", "triage", *dx_names, "lvef")}
    return {**text, "age": numbers.pop("age"), "note": note, **numbers, "split_bucket": bucket}


def _read_table(path: Path, dx_names: list[str]) -> pd.DataFrame:
    """``items.csv`` back, text as written (an empty or "NA" note stays a string), numbers with NaN."""
    numeric = ["age", "triage", *dx_names, "lvef"]
    table = _read_csv(path, TEXT_COLUMNS, max_bytes=None)
    table[numeric] = table[numeric].astype(np.float64)
    table["split_bucket"] = table["split_bucket"].astype(np.int64)
    return table[[*TEXT_COLUMNS[:4], "age", "note", *numeric[1:], "split_bucket"]]


# ----------------------------------------------------------------------------------- one study


def _manifest_file(root: Path, name: str, modality: str, allow_outside: bool) -> Path:
    """The checked file of ``modality`` that the manifest names ``name`` (module doc); an ECG may be a
    WFDB record named without its ``.hea`` (as the simulator's manifest does)."""
    ecg = modality in ("ecg", "mobile")
    return manifest_file(root, name, what="handheld ECG" if modality == "mobile" else modality,
                         max_bytes=MAX_FILE_BYTES[modality], allow_outside=allow_outside,
                         or_suffix=".hea" if ecg else None)


def _first_window(record: EcgRecord, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(window float32 [12, S], present bool [12])``: the record's first window as in stage 1."""
    windows, present, _ = record_windows(record, spec, max_windows=1)
    if not len(windows):
        raise DataError(f"no usable lead in the first {spec.seconds:g} s (flat, or shorter than half of it)")
    return windows[0], present[0]


def _middle_beat(r: np.ndarray, t_end: np.ndarray, n_samples: int) -> np.ndarray:
    """``(R, T end)`` int32 ``[2]`` of the beat nearest the window's middle among ``r``/``t_end`` pairs
    (samples, T end known) inside ``[0, n_samples)``; (-1, -1) if none."""
    inside = (r >= 0) & (t_end > r) & (t_end < n_samples)
    if not inside.any():
        return np.array(NONE, np.int32)
    k = int(np.argmin(np.abs(r[inside] - n_samples / 2)))
    return np.array([r[inside][k], t_end[inside][k]], np.int32)


def _ecg_phase(record: EcgRecord, spec: WindowSpec) -> np.ndarray:
    """Detected ``(R, T end)`` int32 ``[2]`` at ``spec.fs`` of the window's middle beat (module doc)."""
    record = fill_gaps(canonicalize(record), missing="zero")
    window = EcgRecord(record.signal[:, : math.ceil(spec.seconds * record.fs)], record.fs, record.leads, record.source)
    try:
        phases = ecg_phases(window)
    except CardiodistillError:
        return np.array(NONE, np.int32)
    scale = spec.fs / phases.fs
    found = phases.t_end >= 0
    return _middle_beat(np.rint(phases.r[found] * scale), np.rint(phases.t_end[found] * scale), spec.n_samples)


def _gt_ecg_phase(timing: dict[str, Any], spec: WindowSpec, detected: np.ndarray) -> np.ndarray:
    """True ``(R, T end)`` int32 ``[2]`` at ``spec.fs`` of the beat ``detected`` reports (module doc)."""
    if "r_peaks" not in timing or "ecg_fs" not in timing:
        return np.array(NONE, np.int32)
    r_s = np.asarray(timing["r_peaks"], np.float64) / float(timing["ecg_fs"])
    t_end_s = np.full(len(r_s), np.nan)
    if "es_frames" in timing and "echo_fps" in timing:  # end-systole on the ECG clock, where the echo covers it
        es_s = float(timing.get("echo_start_s", 0.0)) + np.asarray(timing["es_frames"], np.float64) / float(
            timing["echo_fps"])
        for k, (start, stop) in enumerate(zip(r_s, np.append(r_s[1:], np.inf), strict=True)):
            inside = es_s[(es_s > start) & (es_s < stop)]
            t_end_s[k] = inside[0] if len(inside) else np.nan
    r = np.rint(r_s * spec.fs)
    t_end = np.where(np.isfinite(t_end_s), np.rint(np.nan_to_num(t_end_s) * spec.fs), -1)
    keep = r < spec.n_samples
    r, t_end = r[keep], t_end[keep]
    if detected[0] < 0 or not len(r):
        return _middle_beat(r, t_end, spec.n_samples)
    k = int(np.argmin(np.abs(r - detected[0])))
    return np.array([r[k], t_end[k] if 0 < t_end[k] < spec.n_samples else -1], np.int32)


def _prepared_frame(events_s: np.ndarray, times_s: np.ndarray) -> int:
    """The first prepared frame (index into ``times_s``) within half a frame spacing of an event; -1 if none."""
    if not len(events_s):
        return -1
    half = 0.5 * (times_s[-1] - times_s[0]) / (len(times_s) - 1) if len(times_s) > 1 else 0.0
    nearest = np.abs(times_s[None, :] - events_s[:, None]).argmin(axis=1)
    near = np.abs(times_s[nearest] - events_s) <= half + 1e-9
    return int(nearest[near].min()) if near.any() else -1


def _ecg_arrays(path: Path, spec: WindowSpec) -> dict[str, np.ndarray]:
    record = read_ecg(path)
    window, present = _first_window(record, spec)
    return {"ecg": window, "ecg_present": present, "ecg_phase": _ecg_phase(record, spec)}


def _mobile_arrays(path: Path, spec: PairedSpec) -> dict[str, np.ndarray]:
    window, present = _first_window(read_ecg(path), spec.ecg)
    rows = [LEADS_12.index(lead) for lead in spec.mobile_leads]
    if not present[rows].any():
        raise DataError(f"none of the leads {', '.join(spec.mobile_leads)} is usable")
    return {"mobile": window[rows], "mobile_present": present[rows]}


def _echo_arrays(path: Path, spec: ClipSpec, timing: dict[str, Any] | None) -> dict[str, np.ndarray]:
    video = read_video(path)
    prepared = prepare_clip(video, spec, start_s=0.0)
    try:
        phases = echo_phases(video.frames, video.fps,
                             period_s=prepared.period_s if prepared.period_source != "default" else None)
        found = [_prepared_frame(events / video.fps, prepared.times_s) for events in (phases.ed, phases.es)]
    except CardiodistillError:  # no phases is not a reason to drop the echo
        found = list(NONE)
    out = {"echo": prepared.frames, "echo_mask": prepared.mask, "echo_phase": np.array(found, np.int32)}
    if timing is not None and {"echo_fps", "ed_frames", "es_frames"} <= set(timing):
        fps = float(timing["echo_fps"])
        out["gt_echo_phase"] = np.array([_prepared_frame(np.asarray(timing[key], np.float64) / fps,
                                                         prepared.times_s) for key in ("ed_frames", "es_frames")],
                                        np.int32)
    return out


def _read_note(path: Path) -> dict[str, str]:
    try:  # as written: line endings are not translated
        note = read_bounded(path, MAX_FILE_BYTES["note"], "note").decode("utf-8")
    except UnicodeDecodeError:
        raise DataError("not UTF-8 text") from None
    if not note.strip():
        raise DataError("the note is empty")
    return {"note": note}


def _study_arrays(root: Path, spec: PairedSpec, study: _Study, *,
                  allow_outside: bool = False) -> tuple[dict[str, np.ndarray], str, list[list[str]]]:
    """Every array of one study, its note text and its skipped modalities ``[patient_id, modality, reason]``.

    A modality is read whole or not at all: its arrays stay zeros (phases -1) unless every step succeeds.
    A file the manifest names is opened only if it passes :func:`_manifest_file` (``allow_outside``: files
    outside ``root`` may pass)."""
    n_mobile, win, clip = len(spec.mobile_leads), spec.ecg.n_samples, spec.clip
    out: dict[str, Any] = {
        "ecg": np.zeros((len(LEADS_12), win), np.float32), "ecg_present": np.zeros(len(LEADS_12), bool),
        "mobile": np.zeros((n_mobile, win), np.float32), "mobile_present": np.zeros(n_mobile, bool),
        "echo": np.zeros((clip.frames, clip.size, clip.size), np.uint8), "echo_mask": np.zeros((clip.size,) * 2, bool),
        "labs": np.full(0 if study.labs is None else len(study.labs), np.nan, np.float32),
        **{name: np.array(NONE, np.int32) for name in PHASES},
        **{f"has_{m}": np.array(False) for m in MODALITIES},
        "note": "",
    }
    readers: dict[str, Callable[[Path], dict[str, Any]]] = {
        "ecg": lambda path: _ecg_arrays(path, spec.ecg),
        "mobile": lambda path: _mobile_arrays(path, spec),
        "echo": lambda path: _echo_arrays(path, spec.clip, study.timing),
        "note": _read_note,
    }
    skipped: list[list[str]] = []
    for modality, read in readers.items():
        path = study.paths[modality]
        if path is None:
            continue
        try:
            out.update(read(_manifest_file(root, path, modality, allow_outside)), **{f"has_{modality}": np.array(True)})
        except CardiodistillError as err:  # the reason without the file's path (names can identify)
            skipped.append([study.patient_id, modality, redact(getattr(err, "problem", str(err)), path)])
    if study.labs is not None:
        out["labs"] = study.labs.astype(np.float32)
        out["has_labs"] = np.array(bool(np.isfinite(study.labs).any()))
    if study.timing is not None:
        out["gt_ecg_phase"] = _gt_ecg_phase(study.timing, spec.ecg, out["ecg_phase"])
    note = out.pop("note")
    return out, note, skipped


Job = tuple[str, PairedSpec, list[_Study], bool]  # cohort folder, spec, studies, allow_outside


def _process_studies(job: Job) -> list[tuple[dict[str, np.ndarray], str, list]]:
    """A worker's job: the arrays, note and skipped entries of a few studies (module level, so spawn can pickle it)."""
    root, spec, studies, allow_outside = job
    return [_study_arrays(Path(root), spec, study, allow_outside=allow_outside) for study in studies]


def _results(jobs: list[Job], workers: int) -> Iterator[list[tuple]]:
    """The jobs' results in order, from ``workers`` processes (the platform's start method) or this one."""
    if workers == 1 or len(jobs) == 1:
        yield from map(_process_studies, jobs)
        return
    with multiprocessing.get_context().Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_process_studies, jobs)


# ----------------------------------------------------------------------------------- the cache


def _dtypes() -> dict[str, Any]:
    return {"ecg": np.float16, "ecg_present": bool, "mobile": np.float16, "mobile_present": bool, "echo": np.uint8,
            "echo_mask": bool, "labs": np.float32, **{name: np.int32 for name in PHASES},
            **{f"has_{m}": bool for m in MODALITIES}}


def build_paired_cache(
    cohort: str | PathLike[str],
    out: str | PathLike[str],
    spec: PairedSpec,
    *,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
    chunk_studies: int = 512,
    real_ids: bool | None = None,
) -> PairedCache:
    """Write (or reuse) the paired cache of the cohort folder ``cohort`` at ``out`` (module doc); returns it open.

    ``cohort`` holds ``manifest.csv`` (one row per study; ``ecg_path``, ``mobile_path``, ``echo_path``
    and ``note_path`` relative to the folder and inside it (module doc), any of them blank or missing;
    labels may be blank),
    optionally ``labs.csv`` (patient_id plus one column per lab) and ``timing.jsonl`` (simulator truth).
    ``progress(studies done)`` is called as studies finish. ``workers > 1`` preprocesses with that many
    processes (any start method: the job function is module-level); ``chunk_studies`` studies are stored
    per chunk file. A cache built from the same spec and the same manifest (path, size, modification
    time) is reused; one built from anything else is refused (:func:`~cardiodistill.data.cache.reuse_cache`).
    ``real_ids`` writes the manifest's ids instead of pseudonyms (None: ``$CARDIODISTILL_REAL_IDS``).
    """
    if not isinstance(spec, PairedSpec):
        raise ConfigError(f"spec must be a PairedSpec, got {type(spec).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    root, out = Path(cohort), Path(out)
    manifest_path = root / "manifest.csv"
    if not manifest_path.is_file():
        raise DataError("manifest.csv not found: not a cohort folder", root)
    real_ids, allow_outside = opted_in(real_ids, REAL_IDS_ENV), opted_in(None, OUTSIDE_PATHS_ENV)
    wanted = {**_fingerprint(root, spec), **ids_fingerprint(real_ids), "outside_paths": allow_outside}
    if reuse_cache(out, wanted):
        return PairedCache(out)
    manifest = _read_manifest(manifest_path)
    if not len(manifest):
        raise DataError("manifest.csv lists no study", manifest_path)
    labs, lab_names = _read_labs(root / "labs.csv")
    timing = _read_timing(root / "timing.jsonl")
    dx_names = [c for c in manifest.columns if c.startswith("dx_")]
    studies = []
    for _, row in manifest.iterrows():
        pid = row["patient_id"]
        paths = {m: (row[c].strip() or None) if c in row else None for m, c in PATH_COLUMNS.items()}
        lab_row = None if labs is None or pid not in labs.index else labs.loc[pid, lab_names].to_numpy(np.float32)
        studies.append(_Study(written_id(pid, real_ids), paths, lab_row, timing.get(pid)))
    jobs = [(str(root), spec, studies[k:k + STUDIES_PER_JOB], allow_outside)
            for k in range(0, len(studies), STUDIES_PER_JOB)]

    skipped: list[list[str]] = []
    counts = dict.fromkeys(MODALITIES, 0)  # studies with each modality
    with CacheBuilder(out, _dtypes(), chunk=chunk_studies) as builder:
        for results in _results(jobs, workers):
            for arrays, note, skipped_one in results:
                row = _table_row(manifest.iloc[len(builder)], dx_names, note, real_ids)
                builder.add([row], **{name: a[None] for name, a in arrays.items()})
                skipped.extend(skipped_one)
                for m in MODALITIES:
                    counts[m] += int(arrays[f"has_{m}"])
            if progress is not None:
                progress(len(builder))
        builder.commit({**wanted, "leads": list(LEADS_12), "lab_names": lab_names, "dx_names": dx_names,
                        "counts": counts, "skipped": skipped})
    return PairedCache(out)


class PairedCache(ArrayCache):
    """A paired cache read back (module doc). Arrays per study via ``item(name, i)`` / ``load(name)``;
    ``table`` the ``items.csv`` rows (index = position), ``lab_names`` / ``dx_names`` the columns of
    ``labs`` / the dx labels, ``present[modality]`` bool ``[N]`` in memory."""

    def __init__(self, folder: str | PathLike[str]):
        super().__init__(folder, CACHE_FORMAT)
        if self.meta.get("version") != CACHE_VERSION:
            raise DataError(f"a paired cache of version {self.meta.get('version')}; this toolkit reads version "
                            f"{CACHE_VERSION}: delete it and build it again", self.folder)
        self.spec = PairedSpec.from_dict(self.meta["spec"])
        self.lab_names: list[str] = list(self.meta["lab_names"])
        self.dx_names: list[str] = list(self.meta["dx_names"])
        self.table = _read_table(self.folder / INDEX_NAME, self.dx_names)
        self.index = self.table
        self.present = {m: self.load(f"has_{m}") for m in MODALITIES}


def model_zeros(spec: PairedSpec, n_labs: int) -> dict[str, np.ndarray]:
    """What an absent modality reads as (:func:`model_item`): zeros of each model input's shape and dtype."""
    win, n_mobile, clip = spec.ecg.n_samples, len(spec.mobile_leads), spec.clip
    return {
        "ecg": np.zeros((len(LEADS_12), win), np.float32), "ecg_present": np.zeros(len(LEADS_12), bool),
        "mobile": np.zeros((n_mobile, win), np.float32), "mobile_present": np.zeros(n_mobile, bool),
        "echo": np.zeros((clip.frames, clip.size, clip.size), np.float32),
        "echo_mask": np.zeros((clip.size,) * 2, bool), "labs": np.zeros(n_labs, np.float32),
    }


def model_item(stored: Callable[[str], np.ndarray], has: Mapping[str, bool], *, labels: Mapping[str, Any], note: str,
               phases: Mapping[str, Any], row: int, zeros: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One study as model input (:class:`PairedDataset`'s items) from its stored arrays (``stored(name)``, the
    cache's dtypes), the modalities it has and may use (``has``), its labels, note text, phases and cache row.
    Shared by the cache and the streaming format (:mod:`~cardiodistill.data.streaming`), so both feed the
    models the same item."""
    item: dict[str, Any] = {}

    def array(name: str, present: bool) -> np.ndarray:
        if not present:
            return zeros[name].copy()  # a copy: an item modified in place must not change the next one
        return np.array(stored(name), dtype=zeros[name].dtype)

    for modality, names in (("ecg", ("ecg", "ecg_present")), ("mobile", ("mobile", "mobile_present")),
                            ("echo", ("echo_mask",)), ("labs", ("labs",))):
        for name in names:
            item[name] = torch.from_numpy(array(name, has[modality]))
    frames = stored("echo") if has["echo"] else zeros["echo"]  # normalising copies
    item["echo"] = torch.from_numpy(normalise_frames(frames, item["echo_mask"].numpy()))
    item["note"] = note if has["note"] else ""
    item.update({f"has_{m}": torch.tensor(has[m]) for m in MODALITIES})
    item.update({name: torch.tensor(v) for name, v in labels.items()})
    for name in PHASES:
        blank = name in ("ecg_phase", "echo_phase") and not has[name.split("_")[0]]
        item[name] = torch.tensor(NONE if blank else phases[name], dtype=torch.long)
    item["index"] = torch.tensor(row, dtype=torch.long)
    return item


class PairedDataset(Dataset):
    """Studies of a :class:`PairedCache` (optionally a subset, by cache row) as model input.

    An item: ``ecg`` float32 ``[12, S]`` and ``ecg_present`` bool ``[12]``; ``mobile`` float32 ``[L, S]``
    and ``mobile_present`` bool ``[L]``; ``echo`` float32 ``[F, H, W]`` z-scored inside ``echo_mask``
    bool ``[H, W]``; ``labs`` float32 ``[n_labs]`` (NaN where missing); ``note`` str; ``has_<modality>``
    bool; ``triage`` float32, ``dx`` float32 ``[n_dx]``, ``lvef`` float32 (NaN when unlabelled); the
    four phases long ``[2]`` (-1 when unknown); ``index`` long, the cache row. A modality that is
    absent or not in ``modalities`` is zeros (``""`` for the note) with ``has_<modality>`` False, and
    its detected phase -1.
    """

    def __init__(self, cache: PairedCache, indices: Sequence[int] | np.ndarray | None = None, *,
                 modalities: Iterable[str] = MODALITIES):
        modalities = tuple(modalities)
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown:
            raise ConfigError(f"unknown modalities {', '.join(unknown)}; expected some of {', '.join(MODALITIES)}")
        self.cache = cache
        self.modalities = modalities
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)
        table = cache.table
        self._has = {m: cache.present[m] & (m in modalities) for m in MODALITIES}
        self._labels = {
            "triage": table["triage"].to_numpy(np.float32),
            "dx": table[cache.dx_names].to_numpy(np.float32).reshape(len(table), len(cache.dx_names)),
            "lvef": table["lvef"].to_numpy(np.float32),
        }
        self._notes = table["note"].tolist()
        self._phases = {name: cache.load(name).astype(np.int64) for name in PHASES}
        self._zeros = model_zeros(cache.spec, len(cache.lab_names))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.indices[i])
        return model_item(lambda name: self.cache.item(name, row), {m: bool(self._has[m][row]) for m in MODALITIES},
                          labels={name: v[row] for name, v in self._labels.items()}, note=self._notes[row],
                          phases={name: v[row] for name, v in self._phases.items()}, row=row, zeros=self._zeros)

    def targets(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``triage`` float32 ``[n]``, ``dx`` float32 ``[n, n_dx]``, ``lvef`` float32 ``[n]`` (NaN when
        unlabelled) of dataset items ``indices`` (default: all), without loading any array."""
        rows = self.indices if indices is None else self.indices[np.asarray(indices, dtype=np.int64)]
        return {name: v[rows] for name, v in self._labels.items()}

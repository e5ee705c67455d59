"""Predict on ECG files and folders with an :class:`~.runtime.EdgeModel`: one JSON-ready dict per recording.

:func:`predict_file` reads one file (any format :func:`cardiodistill.io.read_ecg` knows, told by
content) and returns its result; :func:`predict_paths` does the same for files and folders (searched
recursively, see :func:`scan_paths`), running the model on the windows of several recordings at once
(up to ``batch_windows``), and never stops for a bad file: ANY failure on one file (a typed error, a
reader's or onnxruntime's own exception, a ``MemoryError``) yields an error row
``{"file": ..., "error": "<file>: <one line>"}`` and the batch goes on; only ``KeyboardInterrupt``
(and ``SystemExit``) stop it.

A WFDB record may be named without its extension (``.../A00001`` for ``A00001.hea``, the WFDB habit):
:func:`record_path`.

A result row (:func:`result_keys`; floats rounded to 4 decimals, NaN written as null):

* ``file``, ``model_id``, ``model_version``, ``precision``: what was read, by which model;
* ``leads_used`` (the model's leads, in its order), ``derived_leads`` (``{lead: how}`` for leads
  computed from others, e.g. ``{"I": "from II, III"}``), ``fs_in`` (Hz), ``duration_s``, ``windows``;
* a ``multiclass`` model (mutually exclusive classes, e.g. the bundled CinC 2017 model):
  ``class_probabilities`` (``{class: p}``, summing to 1: the model's one-vs-rest sigmoid outputs,
  averaged over windows, divided by their sum) and ``scores`` (those sigmoid outputs themselves, each
  in 0-1 but not summing to 1; what one-vs-rest AUROCs are measured on);
  a ``multilabel`` model (each output its own yes/no): ``probabilities`` (``{output: p}``, independent,
  the mean over windows);
* ``triage_probability``: only for a model with a triage output (the triage output's entry above);
* ``prediction``: multiclass: the most probable class; multilabel: the outputs at or above their
  thresholds; None when abstaining (a multiclass model also abstains when an abstain output's score
  reaches its threshold in the spec);
* ``lvef`` (%): only for a model trained with LVEF;
* ``quality``: per lead used, ``usable``, ``issues`` (flat, clipped, lead_off, noisy, nan) and the
  measurements behind them (:class:`~cardiodistill.signals.quality.LeadQuality`);
* ``abstain`` and ``abstain_reason`` (the reasons joined by ``"; "``, None when not abstaining);
* ``error``: None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import CardiodistillError, DataError, one_line
from ..io.detect import detect_format, read_ecg
from ..records import EcgRecord
from ..signals.quality import LeadQuality
from .runtime import EdgeModel, Prediction, RecordInfo
from .spec import EdgeSpec

__all__ = [
    "BATCH_WINDOWS", "ERROR_KEYS", "RecordScan", "failure_message", "find_records", "predict_file", "predict_paths",
    "record_path", "result_keys", "result_row", "scan_paths",
]

#: Keys of the row of a file that could not be scored.
ERROR_KEYS = ("file", "error")
#: Windows collected from consecutive recordings before the model runs on them in one batch.
BATCH_WINDOWS = 64
#: WFDB header suffix: signal and annotation files next to a ``<stem>.hea`` belong to that record.
_WFDB_HEADER = ".hea"
#: Suffixes of the signal formats: a file with one of them is always read in a folder scan (a damaged
#: one then gets its error row); any other file is read only when its content is a known format.
_SIGNAL_SUFFIXES = frozenset({".hea", ".dat", ".mat", ".edf", ".dcm", ".xml", ".npy"})
#: Index and documentation files of PhysioNet-style downloads (upper-cased stem before any "-"), never
#: recordings even when their content would parse as a one-column CSV.
_INDEX_FILES = frozenset({"RECORDS", "ANNOTATORS", "DBS", "SHA256SUMS", "MD5SUMS", "LICENSE", "README", "REFERENCE"})
#: Formats that may not state their rate and leads (``tabular=`` of :func:`predict_file`).
_TABULAR = ("csv", "npy")
#: Longest error message kept from a foreign exception (onnxruntime's can be pages long).
_MAX_MESSAGE = 300


def result_keys(spec: EdgeSpec) -> tuple[str, ...]:
    """The keys of a result row of a model with ``spec``, in order (module doc)."""
    outputs = ("class_probabilities", "scores") if spec.task == "multiclass" else ("probabilities",)
    return (
        "file", "model_id", "model_version", "precision", "leads_used", "derived_leads", "fs_in", "duration_s",
        "windows", *(("triage_probability",) if spec.triage is not None else ()), *outputs, "prediction",
        *(("lvef",) if _has_lvef(spec) else ()), "quality", "abstain", "abstain_reason", "error",
    )


def _has_lvef(spec: EdgeSpec) -> bool:
    return spec.lvef_mean is not None and spec.lvef_std is not None


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _quality_row(q: LeadQuality) -> dict[str, Any]:
    return {"usable": q.usable, "issues": list(q.reasons), "amplitude_mv": _round(q.amplitude_mv),
            "hf_noise_ratio": _round(q.hf_noise_ratio), "baseline_wander_mv": _round(q.baseline_wander_mv),
            "clipped_fraction": _round(q.clipped_fraction)}


def _class_probabilities(scores: dict[str, float]) -> dict[str, float]:
    """One-vs-rest sigmoid scores of mutually exclusive classes as a distribution (divided by their sum;
    uniform in the degenerate case of all zeros). The ranking, hence the prediction, is unchanged."""
    total = sum(scores.values())
    if not math.isfinite(total) or total <= 0:
        return {name: 1.0 / len(scores) for name in scores}
    return {name: p / total for name, p in scores.items()}


def _result(model: EdgeModel, path: str | PathLike[str], info: RecordInfo, pred: Prediction) -> dict[str, Any]:
    spec = model.spec
    row: dict[str, Any] = {
        "file": str(path), "model_id": spec.model_id, "model_version": spec.version, "precision": spec.precision,
        "leads_used": list(info.leads), "derived_leads": dict(info.derived), "fs_in": _round(info.fs_in),
        "duration_s": _round(info.duration_s), "windows": info.n_windows,
    }
    if spec.task == "multiclass":
        probabilities = _class_probabilities(pred.probabilities)
        outputs = {"class_probabilities": probabilities, "scores": pred.probabilities}
    else:
        probabilities = pred.probabilities
        outputs = {"probabilities": probabilities}
    if spec.triage is not None:
        row["triage_probability"] = _round(probabilities[spec.triage])
    row.update({key: {name: _round(p) for name, p in values.items()} for key, values in outputs.items()})
    row["prediction"] = pred.prediction
    if _has_lvef(spec):
        row["lvef"] = _round(pred.lvef)
    row.update({
        "quality": {lead: _quality_row(q) for lead, q in info.quality.items()},
        "abstain": pred.abstain, "abstain_reason": "; ".join(pred.reasons) or None, "error": None,
    })
    return row


def result_row(model: EdgeModel, source: str | PathLike[str], info: RecordInfo, pred: Prediction) -> dict[str, Any]:
    """The result row (module doc) of the recording named ``source``, from what :meth:`EdgeModel.prepare`
    found and :meth:`EdgeModel.interpret` decided: for callers that run those steps themselves (the service)."""
    return _result(model, source, info, pred)


def failure_message(path: str | PathLike[str], err: BaseException) -> str:
    """One line naming the file and what went wrong: a typed error's own message (with the file put in
    front when it does not name it), or ``"<file>: cannot be scored (<Type>: <message>)"`` for any other
    exception, cut to a readable length."""
    if isinstance(err, CardiodistillError):
        text = str(err)
        return text if str(path) in text or (isinstance(err, DataError) and err.path) else f"{path}: {text}"
    detail = one_line(err)
    detail = type(err).__name__ if detail == type(err).__name__ else f"{type(err).__name__}: {detail}"
    if len(detail) > _MAX_MESSAGE:
        detail = detail[: _MAX_MESSAGE - 3] + "..."
    return str(DataError(f"cannot be scored ({detail})", path))


def record_path(path: str | PathLike[str]) -> Path:
    """``path``, or ``<path>.hea`` when ``path`` does not exist and names a WFDB record without its
    extension (``.../A00001`` for ``A00001.hea``, as WFDB tools take it)."""
    path = Path(path)
    header = path.with_name(path.name + _WFDB_HEADER)
    return header if not path.exists() and path.name and header.is_file() else path


def _read(path: Path, tabular: Mapping[str, Any] | None = None) -> EcgRecord:
    """:func:`read_ecg`, with a reader's own failure on a malformed file (not a typed error) turned into a
    :class:`DataError` naming the file. ``tabular`` (``fs``, ``leads``, ``units``) is passed to the
    CSV and NumPy readers only: the other formats state their own."""
    try:
        fmt = detect_format(path)
        return read_ecg(path, format=fmt, **((tabular or {}) if fmt in _TABULAR else {}))
    except CardiodistillError:
        raise
    except Exception as err:  # any reader failure is a bad file here
        raise DataError(f"cannot read ({type(err).__name__}: {one_line(err)})", path) from err


def predict_file(model: EdgeModel, path: str | PathLike[str], *,
                 tabular: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result row of the recording in the file at ``path`` (module doc). A file that cannot be read
    or prepared raises :class:`~cardiodistill.errors.CardiodistillError` naming it. ``tabular``: the
    rate, lead names and units of CSV and NumPy files that do not carry them (``{"fs": 300.0}``)."""
    path = record_path(path)
    prediction, info = model.predict(_read(path, tabular))
    return _result(model, path, info, prediction)


class RecordScan(NamedTuple):
    """What :func:`scan_paths` found: the files to read, and the folder files left out as not recordings."""

    files: list[Path]
    skipped: list[Path]


def _is_part_of_a_record(path: Path, root: Path) -> bool:
    """True for hidden files (and anything in a hidden folder) and for the companions of a WFDB header
    (``rec.dat``, ``rec.mat``, ``rec.atr`` next to ``rec.hea``: one record, read through its header)."""
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        return True
    return path.suffix.lower() != _WFDB_HEADER and path.with_suffix(_WFDB_HEADER).is_file()


def _is_recording(path: Path) -> bool:
    """For a file found in a folder: False when it plainly is not a recording: a PhysioNet index or
    documentation file (``RECORDS``, ``REFERENCE.csv``...), or a file without a signal-format suffix
    whose content no reader recognises (notes, JSON, markdown, images, archives)."""
    if path.stem.split("-")[0].upper() in _INDEX_FILES:
        return False
    if path.suffix.lower() in _SIGNAL_SUFFIXES:
        return True
    try:
        detect_format(path)
    except CardiodistillError:
        return False
    return True


def scan_paths(paths: Iterable[str | PathLike[str]]) -> RecordScan:
    """The files to read: each path that is not a folder as given (:func:`record_path`; a missing one
    gives its error row later), and every recording under each folder, recursively, sorted, each file
    once. Folder files that are part of another record or hidden are passed over silently; files that
    plainly are not recordings (:func:`_is_recording`) are listed in ``skipped``."""
    found: dict[Path, Path] = {}
    skipped: list[Path] = []
    for path in map(record_path, paths):
        if path.is_dir():
            files = []
            for file in sorted(f for f in path.rglob("*") if f.is_file() and not _is_part_of_a_record(f, path)):
                (files if _is_recording(file) else skipped).append(file)
        else:
            files = [path]
        for file in files:
            found.setdefault(file.resolve(), file)
    return RecordScan(list(found.values()), skipped)


def find_records(paths: Iterable[str | PathLike[str]]) -> list[Path]:
    """The files :func:`predict_paths` reads for ``paths`` (:func:`scan_paths`, without the skipped list)."""
    return scan_paths(paths).files


@dataclass
class _Pending:
    """A recording read and prepared, waiting for its batch; or the error that stopped it."""

    path: Path
    windows: np.ndarray | None = None
    info: RecordInfo | None = None
    error: str | None = None
    outputs: np.ndarray | None = field(default=None, repr=False)


def _rhythm_rows(model: EdgeModel, ready: Sequence[_Pending]) -> np.ndarray | None:
    """Each window's recording's rhythm features, for a model that reads them (None otherwise)."""
    if not model.spec.rhythm:
        return None
    return np.concatenate([np.repeat(item.info.rhythm[None], len(item.windows), axis=0) for item in ready])


def _run(model: EdgeModel, ready: Sequence[_Pending]) -> None:
    """Set each recording's window outputs, running the model once on all their windows; when that run
    fails, each recording runs on its own, so that only the one at fault gets the error."""
    if not ready:
        return
    try:
        outputs = model.run(np.concatenate([item.windows for item in ready]), _rhythm_rows(model, ready))
        bounds = np.cumsum([0, *(len(item.windows) for item in ready)])
        for item, start, stop in zip(ready, bounds[:-1], bounds[1:]):
            item.outputs = outputs[start:stop]
        return
    except Exception as err:
        if len(ready) == 1:
            ready[0].error = failure_message(ready[0].path, err)
            return
    for item in ready:
        try:
            item.outputs = model.run(item.windows, item.info.rhythm)
        except Exception as err:
            item.error = failure_message(item.path, err)


def _flush(model: EdgeModel, pending: list[_Pending]) -> Iterator[dict[str, Any]]:
    """Run the model on the windows of every pending recording; their rows, in order."""
    _run(model, [item for item in pending if item.error is None])
    for item in pending:
        if item.error is None:
            try:
                row = _result(model, item.path, item.info, model.interpret(item.outputs, item.info))
            except Exception as err:
                item.error = failure_message(item.path, err)
        yield {"file": str(item.path), "error": item.error} if item.error is not None else row


def predict_paths(
    paths: Iterable[str | PathLike[str]],
    model: EdgeModel,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_windows: int = BATCH_WINDOWS,
    tabular: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Result rows for every recording in ``paths`` (files and folders, :func:`scan_paths`), in file order.
    ``tabular``: as for :func:`predict_file`.

    Any failure on a file (module doc) yields its error row ``{"file": ..., "error": "<one line>"}``
    (:func:`failure_message`) and the batch goes on. ``progress(done, total)`` is called after each file.
    """
    files = find_records(paths)
    pending: list[_Pending] = []
    n_windows = 0
    for done, path in enumerate(files, start=1):
        try:
            windows, info = model.prepare(_read(path, tabular))
            pending.append(_Pending(path, windows, info))
            n_windows += len(windows)
        except Exception as err:  # never KeyboardInterrupt: it is not an Exception
            pending.append(_Pending(path, error=failure_message(path, err)))
        if n_windows >= batch_windows:
            yield from _flush(model, pending)
            pending, n_windows = [], 0
        if progress is not None:
            progress(done, len(files))
    yield from _flush(model, pending)

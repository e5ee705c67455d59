"""Predict on ECG files and folders with an :class:`~.runtime.EdgeModel`: one JSON-ready dict per recording.

:func:`predict_file` reads one file (any format :func:`cardiodistill.io.read_ecg` knows, told by
content) and returns its result; :func:`predict_paths` does the same for files and folders (searched
recursively, see :func:`find_records`), running the model on the windows of several recordings at once
(up to ``batch_windows``), and never stops for a bad file: a file that cannot be read or prepared
yields an error row ``{"file": ..., "error": "<one line>"}`` and the batch goes on.

A result row (:data:`RESULT_KEYS`; floats rounded to 4 decimals, NaN written as null):

* ``file``, ``model_id``, ``model_version``, ``precision``: what was read, by which model;
* ``leads_used`` (the model's leads, in its order), ``derived_leads`` (``{lead: how}`` for leads
  computed from others, e.g. ``{"I": "from II, III"}``), ``fs_in`` (Hz), ``duration_s``, ``windows``;
* ``triage_probability`` (None for a model without a triage output), ``probabilities``
  (``{output: p}``, the mean over windows), ``prediction`` (multiclass: the most probable output;
  multilabel: the outputs at or above their thresholds; None when abstaining), ``lvef`` (%, or None);
* ``quality``: per lead used, ``usable``, ``issues`` (flat, clipped, lead_off, noisy, nan) and the
  measurements behind them (:class:`~cardiodistill.signals.quality.LeadQuality`);
* ``abstain`` and ``abstain_reason`` (the reasons joined by ``"; "``, None when not abstaining);
* ``error``: None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CardiodistillError, DataError, one_line
from ..io.detect import read_ecg
from ..records import EcgRecord
from ..signals.quality import LeadQuality
from .runtime import EdgeModel, Prediction, RecordInfo

__all__ = ["BATCH_WINDOWS", "RESULT_KEYS", "find_records", "predict_file", "predict_paths"]

RESULT_KEYS = (
    "file", "model_id", "model_version", "precision", "leads_used", "derived_leads", "fs_in", "duration_s", "windows",
    "triage_probability", "probabilities", "prediction", "lvef", "quality", "abstain", "abstain_reason", "error",
)
#: Windows collected from consecutive recordings before the model runs on them in one batch.
BATCH_WINDOWS = 64
#: WFDB header suffix: signal and annotation files next to a ``<stem>.hea`` belong to that record.
_WFDB_HEADER = ".hea"


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _quality_row(q: LeadQuality) -> dict[str, Any]:
    return {"usable": q.usable, "issues": list(q.reasons), "amplitude_mv": _round(q.amplitude_mv),
            "hf_noise_ratio": _round(q.hf_noise_ratio), "baseline_wander_mv": _round(q.baseline_wander_mv),
            "clipped_fraction": _round(q.clipped_fraction)}


def _result(model: EdgeModel, path: str | PathLike[str], info: RecordInfo, pred: Prediction) -> dict[str, Any]:
    spec = model.spec
    return {
        "file": str(path), "model_id": spec.model_id, "model_version": spec.version, "precision": spec.precision,
        "leads_used": list(info.leads), "derived_leads": dict(info.derived), "fs_in": _round(info.fs_in),
        "duration_s": _round(info.duration_s), "windows": info.n_windows,
        "triage_probability": _round(pred.triage_probability),
        "probabilities": {name: _round(p) for name, p in pred.probabilities.items()},
        "prediction": pred.prediction, "lvef": _round(pred.lvef),
        "quality": {lead: _quality_row(q) for lead, q in info.quality.items()},
        "abstain": pred.abstain, "abstain_reason": "; ".join(pred.reasons) or None, "error": None,
    }


def _read(path: Path) -> EcgRecord:
    """:func:`read_ecg`, with a reader's own failure on a malformed file (not a typed error) turned into a
    :class:`DataError` naming the file, so that one file cannot end a batch."""
    try:
        return read_ecg(path)
    except CardiodistillError:
        raise
    except Exception as err:  # any reader failure is a bad file here, reported on its row
        raise DataError(f"cannot read ({type(err).__name__}: {one_line(err)})", path) from err


def predict_file(model: EdgeModel, path: str | PathLike[str]) -> dict[str, Any]:
    """The result row of the recording in the file at ``path`` (module doc). A file that cannot be read
    or prepared raises :class:`~cardiodistill.errors.CardiodistillError` naming it."""
    prediction, info = model.predict(_read(Path(path)))
    return _result(model, path, info, prediction)


def _is_record_file(path: Path, root: Path) -> bool:
    """False for hidden files (and anything in a hidden folder) and for the companions of a WFDB header
    (``rec.dat``, ``rec.mat``, ``rec.atr`` next to ``rec.hea``: one record, read through its header)."""
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        return False
    return path.suffix.lower() == _WFDB_HEADER or not path.with_suffix(_WFDB_HEADER).is_file()


def find_records(paths: Iterable[str | PathLike[str]]) -> list[Path]:
    """The files to read: each path that is not a folder as given (a missing one gives its error row
    later), and every record file under each folder, recursively, sorted (:func:`_is_record_file`);
    each file once."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and _is_record_file(f, path))
        else:
            files = [path]
        for file in files:
            found.setdefault(file.resolve(), file)
    return list(found.values())


@dataclass
class _Pending:
    """A recording read and prepared, waiting for its batch; or the error that stopped it."""

    path: Path
    windows: np.ndarray | None = None
    info: RecordInfo | None = None
    error: str | None = None


def _flush(model: EdgeModel, pending: list[_Pending]) -> Iterator[dict[str, Any]]:
    """Run the model once on the windows of every pending recording; their rows, in order."""
    ready = [item for item in pending if item.error is None]
    outputs = model.run(np.concatenate([item.windows for item in ready])) if ready else None
    start = 0
    for item in pending:
        if item.error is not None:
            yield {"file": str(item.path), "error": item.error}
            continue
        stop = start + len(item.windows)
        yield _result(model, item.path, item.info, model.interpret(outputs[start:stop], item.info))
        start = stop


def predict_paths(
    paths: Iterable[str | PathLike[str]],
    model: EdgeModel,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch_windows: int = BATCH_WINDOWS,
) -> Iterator[dict[str, Any]]:
    """Result rows for every recording in ``paths`` (files and folders, :func:`find_records`), in file order.

    A file that cannot be read or prepared (a :class:`~cardiodistill.errors.CardiodistillError`, or any
    failure inside a format reader) yields ``{"file": ..., "error": "<one line>"}``; other exceptions are
    bugs and propagate. ``progress(done, total)`` is called after each file.
    """
    files = find_records(paths)
    pending: list[_Pending] = []
    n_windows = 0
    for done, path in enumerate(files, start=1):
        try:
            windows, info = model.prepare(_read(path))
            pending.append(_Pending(path, windows, info))
            n_windows += len(windows)
        except CardiodistillError as err:
            pending.append(_Pending(path, error=str(err)))
        if n_windows >= batch_windows:
            yield from _flush(model, pending)
            pending, n_windows = [], 0
        if progress is not None:
            progress(done, len(files))
    yield from _flush(model, pending)

"""Running an exported student with numpy and onnxruntime only (no PyTorch): the ``edge`` install.

* :mod:`.spec`: :class:`EdgeSpec`, the model's contract, stored inside its ONNX file.
* :mod:`.runtime`: :class:`EdgeModel`: load a model, prepare a record (leads selected or derived,
  resampled, filtered, windowed, z-scored), run it, average the windows, decide to abstain.
* :mod:`.predict`: :func:`predict_file` and :func:`predict_paths`: JSON-ready result rows for files and
  folders (:func:`scan_paths` leaves out files that are not recordings), any failure on a file reported
  on its own row.
* :mod:`.command`: ``cardiodistill predict`` (imported by the CLI, not here: it needs Typer and rich).

Nothing here imports PyTorch, Lightning or scikit-learn.
"""

from .predict import (
    ERROR_KEYS,
    RecordScan,
    find_records,
    predict_file,
    predict_paths,
    record_path,
    result_keys,
    scan_paths,
)
from .runtime import EdgeModel, Prediction, RecordInfo
from .spec import METADATA_KEY, EdgeSpec, open_session, read_spec, spec_from_metadata

__all__ = [
    "ERROR_KEYS", "METADATA_KEY", "EdgeModel", "EdgeSpec", "Prediction", "RecordInfo", "RecordScan", "find_records",
    "open_session", "predict_file", "predict_paths", "read_spec", "record_path", "result_keys", "scan_paths",
    "spec_from_metadata",
]

"""A stage-3 student exported with its accuracy gate measured on its own cohort's validation studies.

:func:`student_val_arrays` gives the gate's validation set (the handheld ECG windows the student reads
and the binary labels) and :func:`export_student` writes the gated ONNX file
(:func:`~cardiodistill.deploy.student.export_student_model`); the demo calls it on its first student.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.cohort import Cohort
from ..errors import one_line

__all__ = ["export_student", "student_val_arrays"]


def student_val_arrays(cohort: Cohort, leads: Sequence[str], split: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """``(x [N, len(leads), S] float32, y [N, C])`` of a split's handheld ECG windows (the student's
    input, its leads in order) and binary labels (NaN = unknown): the accuracy gate's validation set."""
    rows = cohort.splits[split]
    order = [cohort.cache.spec.mobile_leads.index(lead) for lead in leads]
    data = cohort.dataset(rows, modalities=("mobile",))
    x = np.stack([np.asarray(data[i]["mobile"], np.float32)[order] for i in range(len(data))])
    return x, cohort.labels[rows].astype(np.float32)


def export_student(path: str | Path, onnx_path: str | Path, cohort: Cohort, *, precision: str = "int8",
                   margin: float = 0.02, thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The student at ``path`` as one ONNX file with its :class:`~cardiodistill.edge.EdgeSpec`, at
    ``precision`` behind the accuracy gate on the cohort's validation studies
    (:func:`~cardiodistill.deploy.export_student_model`): the gate record with ``path``, or
    ``{"error": ...}`` when the graph cannot be exported (the run's other outputs stand)."""
    from ..train.checkpoints import load_model
    from .student import export_student_model

    x, y = student_val_arrays(cohort, load_model(path).leads)
    try:
        return export_student_model(path, onnx_path, val_x=x, val_y=y, precision=precision, margin=margin,
                                    thresholds=thresholds, provenance={"cohort": str(cohort.cache.folder)})
    except Exception as err:  # noqa: BLE001 - e.g. an operator the exporter lacks; reported, not fatal
        return {"error": one_line(err)}

"""PhysioNet/CinC Challenge 2021: 12-lead ECGs from several hospitals, labelled with SNOMED-CT.

Each record is a WFDB header ``<name>.hea`` with a MATLAB ``<name>.mat`` signal file (500 Hz for
most sources) and ``#`` header comments ``Age:``, ``Sex:`` and ``Dx: <code>,<code>,...``. The
folder may be nested (the challenge ships one folder per source); every ``.hea`` below ``root``
is a record. Only the headers' comment lines are read up front; signals are read per item.

Labels are PTB-XL classes, so that a model trained on PTB-XL can be validated externally: SNOMED
codes go through :data:`~cardiodistill.data.datasets.snomed.SNOMED_TO_SCP` to SCP statements, then
through ``scp_statements.csv`` to the task's classes exactly as for PTB-XL. Codes without an SCP
equivalent are kept in ``frame["unmapped"]`` (and the record's meta) and give no label. NORM has no
SNOMED code; with ``derive_norm`` a record is NORM when it has sinus rhythm, only mapped codes and
no diagnostic statement (see :func:`~cardiodistill.data.datasets.snomed.derive_norm`).
This is an external test set, so there is no train/val split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DataError
from ...io.wfdb import parse_comment_fields, read_wfdb
from ...records import EcgRecord
from . import snomed
from .ptbxl import TASKS, load_scp_statements, multi_hot, scp_class_map, task_classes, task_labels

__all__ = ["CinC2021", "read_dx"]


def read_dx(header: str | PathLike[str]) -> dict[str, object]:
    """Age, sex and the SNOMED ``Dx`` codes from a header's ``#`` comment lines (no signal read)."""
    header = Path(header)
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError as err:
        raise DataError(f"cannot read WFDB header: {err.strerror}", header) from None
    fields = parse_comment_fields([line.lstrip("#").strip() for line in lines if line.startswith("#")])
    if "dx" not in fields:
        raise DataError("WFDB header has no '# Dx:' line", header)
    codes = [c.strip() for c in fields["dx"].split(",") if c.strip()]
    return {"age": fields.get("age"), "sex": fields.get("sex"), "dx": codes}


class CinC2021:
    """CinC 2021 records as ``(EcgRecord in mV, multi-hot float32 PTB-XL labels)``.

    ``scp_statements`` is PTB-XL's ``scp_statements.csv`` (it defines the task classes).
    ``labels`` fixes the class list, e.g. to a PTB-XL model's ``PTBXL(...).labels``; by default it
    is every class of ``task``.
    """

    def __init__(
        self,
        root: str | PathLike[str],
        *,
        scp_statements: str | PathLike[str],
        task: str = "superdiagnostic",
        labels: Sequence[str] | None = None,
        derive_norm: bool = True,
    ):
        root = Path(root)
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}", root)
        headers = sorted(root.rglob("*.hea"))
        if not headers:
            raise DataError("no WFDB headers (*.hea) found", root)
        self.root, self.task = root, task
        self.statements = load_scp_statements(scp_statements)
        self.labels: list[str] = list(labels) if labels is not None else task_classes(self.statements, task)

        rows = [{"record": h.stem, "path": str(h), **read_dx(h)} for h in headers]
        frame = pd.DataFrame(rows)
        mapped = [snomed.map_snomed(dx) for dx in frame["dx"]]
        frame["scp"] = [scp for scp, _ in mapped]
        frame["unmapped"] = [unmapped for _, unmapped in mapped]
        class_map = scp_class_map(self.statements, task)
        diagnostic = self.statements.index[self.statements["diagnostic"] == 1]
        norm_possible = derive_norm and "NORM" in task_labels(["NORM"], class_map)
        label_sets = []
        for dx, scp in zip(frame["dx"], frame["scp"]):
            found = task_labels(scp, class_map)
            if norm_possible and snomed.derive_norm(dx, diagnostic):
                found.add("NORM")
            label_sets.append(found)
        frame["labels"] = [sorted(s) for s in label_sets]
        self.frame = frame
        self.targets = multi_hot(label_sets, self.labels)

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> tuple[EcgRecord, np.ndarray]:
        row = self.frame.iloc[i]
        record = read_wfdb(row["path"])
        extra = {
            "units": "mV",
            "dx_snomed": list(row["dx"]),
            "scp": list(row["scp"]),
            "unmapped": list(row["unmapped"]),
        }
        return replace(record, meta={**record.meta, **extra}), self.targets[i]

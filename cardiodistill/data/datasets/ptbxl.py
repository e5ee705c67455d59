"""PTB-XL (Wagner et al. 2020): 21,837 clinical 12-lead ECGs of 10 s with SCP-ECG statements.

Two layouts are read:

* ``standard``: the PhysioNet release, ``ptbxl_database.csv`` + ``scp_statements.csv`` and the
  WFDB records under ``records100/`` (100 Hz) and ``records500/`` (500 Hz), named by the
  ``filename_lr`` / ``filename_hr`` columns. Records are read lazily, one per ``__getitem__``,
  in millivolts.
* ``subset``: one float16 array ``signals.npy`` ``[N, 12, 1000]`` (100 Hz) plus ``meta.csv`` with
  the database columns, row i describing signal i. It is memory-mapped, never loaded whole.
  Its amplitudes were band-passed and **z-scored per lead** by a third party, so they are not mV
  and the limb-lead identities (III = II - I) do not hold; records carry
  ``meta["units"] == "z-score"``.

Labels follow the PTB-XL benchmark (Strodthoff et al. 2021, ``compute_label_aggregations``):
``scp_codes`` is a dict string ``{statement: likelihood}``; every statement counts whatever its
likelihood (0 means "likelihood not given", not "absent"), mapped through ``scp_statements.csv``:

=================  =========================================================================
task               classes
=================  =========================================================================
diagnostic         statements with ``diagnostic == 1`` (44)
subdiagnostic      their ``diagnostic_subclass`` (23)
superdiagnostic    their ``diagnostic_class``: CD, HYP, MI, NORM, STTC
form               statements with ``form == 1`` (19)
rhythm             statements with ``rhythm == 1`` (12)
all                every statement (71)
=================  =========================================================================

Class lists are sorted (the benchmark's ``MultiLabelBinarizer`` order). As in the benchmark,
records with no label for the task are dropped (``drop_empty``), and ``min_count`` drops classes
seen in fewer records, both decided once over every fold so that all splits share one label set.
The standard split is ``strat_fold`` 1-8 train, 9 validation, 10 test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import DataError
from ...io.wfdb import read_wfdb
from ...records import EcgRecord
from ...signals.leads import LEADS_12

__all__ = [
    "PTBXL",
    "SPLIT_FOLDS",
    "TASKS",
    "load_scp_statements",
    "multi_hot",
    "parse_scp_codes",
    "scp_class_map",
    "task_classes",
    "task_labels",
]

TASKS = ("diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm", "all")
SPLIT_FOLDS = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9,), "test": (10,)}
_SUBSET_DIR = "subset100"
_SUBSET_NOTE = (
    "PTB-XL subset: band-passed 0.5-40 Hz and z-scored per lead by a third party, then decimated "
    "to 100 Hz; amplitudes are not mV and III = II - I does not hold"
)


def load_scp_statements(path: str | PathLike[str]) -> pd.DataFrame:
    """Read ``scp_statements.csv`` indexed by statement code (``NORM``, ``IMI``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("scp_statements.csv not found", path)
    table = pd.read_csv(path, index_col=0)
    missing = {"diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"} - set(table.columns)
    if missing:
        raise DataError(f"not an SCP statement table: missing columns {sorted(missing)}", path)
    return table


def parse_scp_codes(text: str, where: str | PathLike[str] | None = None) -> dict[str, float]:
    """``"{'NORM': 100.0, 'SR': 0.0}"`` -> ``{"NORM": 100.0, "SR": 0.0}``."""
    try:
        codes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise DataError(f"scp_codes is not a dict literal: {text!r}", where) from None
    if not isinstance(codes, dict):
        raise DataError(f"scp_codes is not a dict literal: {text!r}", where)
    return {str(k): float(v) for k, v in codes.items()}


def scp_class_map(statements: pd.DataFrame, task: str) -> dict[str, tuple[str, ...]]:
    """``{statement: classes of task it implies}`` for every statement of the table, e.g. for
    ``superdiagnostic`` ``IMI -> ("MI",)`` and ``SR -> ()``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    mapping: dict[str, tuple[str, ...]] = {}
    for code, row in statements.iterrows():
        if task == "all":
            classes = (code,)
        elif task in ("diagnostic", "form", "rhythm"):
            classes = (code,) if row[task] == 1 else ()
        else:
            column = "diagnostic_subclass" if task == "subdiagnostic" else "diagnostic_class"
            classes = (row[column],) if isinstance(row[column], str) else ()
        mapping[str(code)] = classes
    return mapping


def task_labels(codes: Iterable[str], class_map: dict[str, tuple[str, ...]]) -> set[str]:
    """The classes a set of SCP statements implies under ``class_map`` (unknown ones ignored)."""
    return {c for code in codes for c in class_map.get(code, ())}


def task_classes(statements: pd.DataFrame, task: str) -> list[str]:
    """Every class ``task`` can have, sorted: the label space before any ``min_count`` pruning."""
    return sorted({c for classes in scp_class_map(statements, task).values() for c in classes})


def multi_hot(label_sets: Sequence[set[str]], classes: Sequence[str]) -> np.ndarray:
    """``[n_records, n_classes]`` float32 0/1 matrix; labels outside ``classes`` are ignored."""
    column = {c: j for j, c in enumerate(classes)}
    targets = np.zeros((len(label_sets), len(classes)), np.float32)
    for i, labels in enumerate(label_sets):
        targets[i, [column[c] for c in labels if c in column]] = 1.0
    return targets


def _detect_layout(root: Path) -> tuple[str, Path]:
    """``(layout, folder)``: ``subset`` when a ``signals.npy`` is in ``root`` (or its ``subset100``)
    and no PhysioNet ``records100/500`` folders are; otherwise ``standard``."""
    if (root / "records100").is_dir() or (root / "records500").is_dir():
        return "standard", root
    for folder in (root, root / _SUBSET_DIR):
        if (folder / "signals.npy").is_file():
            return "subset", folder
    return "standard", root


def _find_statements(folder: Path, given: str | PathLike[str] | None) -> Path:
    if given is not None:
        return Path(given)
    for candidate in (folder / "scp_statements.csv", folder.parent / "scp_statements.csv"):
        if candidate.is_file():
            return candidate
    raise DataError("scp_statements.csv not found here or in the parent folder; pass scp_statements=", folder)


class PTBXL:
    """PTB-XL as ``(EcgRecord, multi-hot float32 labels)`` pairs, read one record at a time.

    ``root`` is the PhysioNet folder or the subset folder (or its parent); ``layout`` is
    ``"standard"``, ``"subset"`` or ``"auto"``. ``sampling_rate`` is 100 or 500 Hz (subset: 100
    only; standard default 500). ``folds`` keeps those ``strat_fold`` values. ``frame`` holds one
    row per record (the database columns plus ``labels``), ``targets`` the label matrix.
    """

    def __init__(
        self,
        root: str | PathLike[str],
        *,
        task: str = "superdiagnostic",
        sampling_rate: int | None = None,
        folds: Iterable[int] | None = None,
        layout: str = "auto",
        min_count: int = 0,
        drop_empty: bool = True,
        scp_statements: str | PathLike[str] | None = None,
    ):
        root = Path(root)
        if task not in TASKS:
            raise DataError(f"unknown PTB-XL task {task!r}; expected one of {', '.join(TASKS)}", root)
        if layout == "auto":
            layout, folder = _detect_layout(root)
        elif layout == "subset":
            folder = root / _SUBSET_DIR if (root / _SUBSET_DIR / "signals.npy").is_file() else root
        elif layout == "standard":
            folder = root
        else:
            raise DataError(f"unknown PTB-XL layout {layout!r}; expected auto, standard or subset", root)
        self.root, self.layout, self.task = folder, layout, task
        self.sampling_rate = self._check_rate(sampling_rate)
        self.statements = load_scp_statements(_find_statements(folder, scp_statements))

        meta_path = folder / ("meta.csv" if layout == "subset" else "ptbxl_database.csv")
        if not meta_path.is_file():
            raise DataError(f"{meta_path.name} not found: not a PTB-XL {layout} folder", meta_path)
        frame = pd.read_csv(meta_path)
        if "scp_codes" not in frame or "strat_fold" not in frame:
            raise DataError("PTB-XL metadata needs scp_codes and strat_fold columns", meta_path)
        frame["row"] = np.arange(len(frame))  # position in signals.npy (subset layout)
        if layout == "subset":
            self.signals = np.load(folder / "signals.npy", mmap_mode="r")
            if self.signals.ndim != 3 or self.signals.shape[0] != len(frame) or self.signals.shape[1] != 12:
                raise DataError(
                    f"signals.npy has shape {self.signals.shape}, expected ({len(frame)}, 12, n_samples)",
                    folder / "signals.npy",
                )
        else:
            self.signals = None

        codes = [parse_scp_codes(text, meta_path) for text in frame["scp_codes"]]
        class_map = scp_class_map(self.statements, task)
        frame["labels"] = [sorted(task_labels(c, class_map)) for c in codes]
        counts = frame["labels"].explode().value_counts()
        self.labels: list[str] = sorted(c for c, n in counts.items() if n >= max(min_count, 1))
        kept = set(self.labels)
        frame["labels"] = [[c for c in labels if c in kept] for labels in frame["labels"]]
        if drop_empty:
            frame = frame[frame["labels"].map(len) > 0]
        if folds is not None:
            frame = frame[frame["strat_fold"].isin(list(folds))]
        self._set_frame(frame)

    def _check_rate(self, rate: int | None) -> int:
        allowed = (100,) if self.layout == "subset" else (100, 500)
        rate = allowed[-1] if rate is None else int(rate)
        if rate not in allowed:
            raise DataError(f"PTB-XL {self.layout} layout has sampling rates {allowed} Hz, not {rate}", self.root)
        return rate

    def _set_frame(self, frame: pd.DataFrame) -> None:
        self.frame = frame.reset_index(drop=True)
        self.targets = multi_hot([set(x) for x in self.frame["labels"]], self.labels)

    def split(self, name: str) -> PTBXL:
        """The standard ``strat_fold`` split: ``train`` 1-8, ``val`` 9, ``test`` 10 (same labels)."""
        if name not in SPLIT_FOLDS:
            raise DataError(f"unknown split {name!r}; expected train, val or test", self.root)
        frame = self.frame[self.frame["strat_fold"].isin(SPLIT_FOLDS[name])]
        if frame.empty:
            raise DataError(f"no records in folds {SPLIT_FOLDS[name]} for the {name!r} split", self.root)
        part = object.__new__(PTBXL)
        part.__dict__.update(self.__dict__)
        part._set_frame(frame)
        return part

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> tuple[EcgRecord, np.ndarray]:
        row = self.frame.iloc[i]
        ids = {"ecg_id": int(row["ecg_id"]), "patient_id": row.get("patient_id"), "strat_fold": int(row["strat_fold"])}
        if self.layout == "subset":
            record = EcgRecord(
                signal=np.asarray(self.signals[int(row["row"])], dtype=np.float32),
                fs=100.0,
                leads=LEADS_12,
                source=f"{self.root / 'signals.npy'}[{int(row['row'])}]",
                meta={"units": "z-score", "note": _SUBSET_NOTE, **ids},
            )
        else:
            column = "filename_lr" if self.sampling_rate == 100 else "filename_hr"
            record = read_wfdb(self.root / row[column])
            record = replace(record, meta={**record.meta, "units": "mV", **ids})
        return record, self.targets[i]

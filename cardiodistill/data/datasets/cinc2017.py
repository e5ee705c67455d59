"""PhysioNet/CinC Challenge 2017: single-lead AliveCor recordings for AF classification.

Each record is ``A<5 digits>.hea`` + ``.mat`` (300 Hz, 9-61 s, one channel recorded between the
two hands, i.e. lead I; the header calls it ``ECG``). ``REFERENCE.csv`` has no header row and
one ``record,label`` line per record: ``N`` normal sinus rhythm, ``A`` atrial fibrillation, ``O``
other rhythm, ``~`` too noisy to classify. Items are ``(EcgRecord in mV with leads ("I",),
class index)`` with the index into :data:`LABELS`.

Splits: records A00001-A06000 are the development set; ``train``/``val`` is a stratified (by
label), seeded split of exactly those, so it does not change when more records are present.
``test`` is every record numbered above A06000 (held out of this project's shared data).
"""

from __future__ import annotations

from dataclasses import replace
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ...errors import DataError
from ...io.wfdb import read_wfdb
from ...records import EcgRecord

__all__ = ["DEV_LAST", "LABELS", "CinC2017"]

LABELS = ("N", "A", "O", "~")
DEV_LAST = 6000  # A00001-A06000: development records; higher numbers are the test split


class CinC2017:
    """CinC 2017 recordings, read lazily. ``frame``: ``record``, ``label``, ``target``, ``number``."""

    def __init__(self, root: str | PathLike[str], *, val_fraction: float = 0.2, seed: int = 0):
        root = Path(root)
        reference = root / "REFERENCE.csv"
        if not reference.is_file():
            raise DataError("REFERENCE.csv not found: not a CinC 2017 folder", root)
        frame = pd.read_csv(reference, header=None, names=["record", "label"], dtype=str)
        unknown = sorted(set(frame["label"]) - set(LABELS))
        if unknown:
            raise DataError(f"unknown labels {unknown}; expected {', '.join(LABELS)}", reference)
        numbers = frame["record"].str.extract(r"^A(\d+)$")[0]
        if numbers.isna().any():
            raise DataError(
                f"record names must be A<digits>, got {frame['record'][numbers.isna()].iloc[0]!r}", reference
            )
        frame["number"] = numbers.astype(int)
        frame["target"] = frame["label"].map({label: i for i, label in enumerate(LABELS)}).astype(np.int64)
        self.root, self.val_fraction, self.seed = root, val_fraction, seed
        self.labels: list[str] = list(LABELS)
        self.frame = frame.reset_index(drop=True)

    def _dev_split(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        dev = self.frame[self.frame["number"] <= DEV_LAST].sort_values("number")
        if len(dev) < 2:
            raise DataError("fewer than 2 development records (A00001-A06000) to split", self.root)
        return train_test_split(dev, test_size=self.val_fraction, stratify=dev["label"], random_state=self.seed)

    def split(self, name: str) -> CinC2017:
        """``train`` / ``val``: seeded stratified split of A00001-A06000; ``test``: A06001 and above."""
        if name in ("train", "val"):
            train, val = self._dev_split()
            frame = (train if name == "train" else val).sort_values("number")
        elif name == "test":
            frame = self.frame[self.frame["number"] > DEV_LAST]
            if frame.empty:
                raise DataError("no test records (A06001 and above) in this folder", self.root)
        else:
            raise DataError(f"unknown split {name!r}; expected train, val or test", self.root)
        part = object.__new__(CinC2017)
        part.__dict__.update(self.__dict__)
        part.frame = frame.reset_index(drop=True)
        return part

    @property
    def targets(self) -> np.ndarray:
        return self.frame["target"].to_numpy()

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> tuple[EcgRecord, int]:
        row = self.frame.iloc[i]
        record = read_wfdb(self.root / row["record"])
        if record.signal.shape[0] != 1:
            raise DataError(f"expected one channel, found {record.signal.shape[0]}", record.source)
        meta = {**record.meta, "units": "mV", "label": row["label"], "original_leads": list(record.leads)}
        return replace(record, leads=("I",), meta=meta), int(row["target"])

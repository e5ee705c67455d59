"""MIT-BIH Arrhythmia Database: 48 half-hour two-lead Holter records with beat annotations.

A record is ``<n>.hea`` + ``<n>.dat`` (360 Hz, format 212, usually MLII and V1/V2/V4/V5) and
``<n>.atr``, cardiologists' annotations: one symbol per beat at its R peak, plus non-beat marks
(``+`` rhythm change, ``~`` noise, ``|`` artefact, ``"`` comment, ``x`` non-conducted P, ``!``
flutter wave, ``[``/``]`` flutter episode). MLII is read as lead II.

Beats are grouped into the five AAMI EC57 classes (the convention of beat-classification papers
since de Chazal et al. 2004):

=====  ===========================  =========================================================
class  meaning                      MIT-BIH symbols
=====  ===========================  =========================================================
N      normal / bundle branch       N normal, L LBBB, R RBBB, e atrial escape, j nodal escape
S      supraventricular ectopic     A atrial premature, a aberrated APC, J nodal premature,
                                    S supraventricular premature
V      ventricular ectopic          V PVC, E ventricular escape
F      fusion                       F fusion of ventricular and normal
Q      unknown                      / paced, f fusion of paced and normal, Q unclassifiable
=====  ===========================  =========================================================

Annotations with other symbols (the non-beat marks above) are not beats and are left out.
Splits follow de Chazal's inter-patient protocol: DS1 (``train``) and DS2 (``test``), 22 records
each, the four paced records (102, 104, 107, 217) in neither.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np
import wfdb

from ...errors import DataError
from ...io.wfdb import read_wfdb
from ...records import EcgRecord

__all__ = ["AAMI_CLASSES", "AAMI_MAP", "DS1", "DS2", "MITBIH", "Beats", "read_beats"]

AAMI_CLASSES = ("N", "S", "V", "F", "Q")
AAMI_MAP: dict[str, str] = {
    **dict.fromkeys("NLRej", "N"),
    **dict.fromkeys("AaJS", "S"),
    **dict.fromkeys("VE", "V"),
    "F": "F",
    **dict.fromkeys("/fQ", "Q"),
}
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
       "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")  # fmt: skip
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
       "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")  # fmt: skip


@dataclass(frozen=True)
class Beats:
    """One record's annotated beats: ``sample`` (int64 R-peak sample index), ``symbol`` (MIT-BIH
    symbol) and ``target`` (int64 index into :data:`AAMI_CLASSES`), all of one length."""

    sample: np.ndarray
    symbol: np.ndarray
    target: np.ndarray

    @property
    def aami(self) -> np.ndarray:
        return np.asarray(AAMI_CLASSES)[self.target]


def read_beats(path: str | PathLike[str], extension: str = "atr") -> Beats:
    """The AAMI-mapped beats of ``<path>.<extension>``; non-beat annotations are dropped."""
    stem = Path(path)
    annotation_file = stem.with_name(f"{stem.name}.{extension}")
    if not annotation_file.is_file():
        raise DataError("WFDB annotation file not found", annotation_file)
    try:
        ann = wfdb.rdann(str(stem), extension)
    except Exception as err:  # noqa: BLE001  (wfdb raises ValueError, IndexError, ... on corrupt files)
        raise DataError(f"cannot read WFDB annotations ({' '.join(str(err).split())})", annotation_file) from None
    symbol = np.asarray(ann.symbol, dtype=str)
    is_beat = np.isin(symbol, list(AAMI_MAP))
    index = {c: i for i, c in enumerate(AAMI_CLASSES)}
    target = np.array([index[AAMI_MAP[s]] for s in symbol[is_beat]], dtype=np.int64)
    return Beats(sample=np.asarray(ann.sample, np.int64)[is_beat], symbol=symbol[is_beat], target=target)


class MITBIH:
    """MIT-BIH records in a folder as ``(EcgRecord in mV, Beats)``, read one record at a time.

    Every record with a ``.hea`` and an ``.atr`` is used, or only ``records`` when given.
    """

    def __init__(self, root: str | PathLike[str], *, records: list[str] | None = None):
        root = Path(root)
        found = sorted(p.stem for p in root.glob("*.atr") if p.with_suffix(".hea").is_file())
        if records is not None:
            missing = sorted(set(records) - set(found))
            if missing:
                raise DataError(f"records {missing} have no .hea + .atr here", root)
            found = [r for r in found if r in set(records)]
        if not found:
            raise DataError("no annotated WFDB records (.hea + .atr) found", root)
        self.root, self.records = root, found
        self.labels: list[str] = list(AAMI_CLASSES)

    def split(self, name: str) -> MITBIH:
        """de Chazal's inter-patient split: ``train`` = DS1, ``test`` = DS2 (those present)."""
        chosen = {"train": DS1, "test": DS2}.get(name)
        if chosen is None:
            raise DataError(f"unknown MIT-BIH split {name!r}; expected train (DS1) or test (DS2)", self.root)
        present = [r for r in self.records if r in chosen]
        if not present:
            raise DataError(f"none of the {name!r} records ({', '.join(chosen)}) are here", self.root)
        return MITBIH(self.root, records=present)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[EcgRecord, Beats]:
        stem = self.root / self.records[i]
        record = read_wfdb(stem)
        return replace(record, meta={**record.meta, "units": "mV"}), read_beats(stem)

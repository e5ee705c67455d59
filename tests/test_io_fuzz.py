"""Fuzz the ECG readers with corrupted copies of real and specification-built files.

Each case mutates a valid file (random byte flips, truncation, inserted garbage, a deleted
span, or an edited header field) with a fixed seed, writes it next to its companion files and
reads it with :func:`cardiodistill.io.read_ecg`. The contract: a reader either returns a valid
:class:`EcgRecord` (float32 ``[n_leads, n_samples > 0]``, finite or NaN samples, ``fs > 0``,
unique leads) or raises :class:`DataError` (or a subclass). Any other exception, a raw library
traceback, fails the test. The default run does 300 cases per base file (~12 s); the ``slow``
run does ten times as many.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_io_readers import MUSE_LEADS, synthetic_ecg_uv, write_aecg, write_muse

from cardiodistill.errors import DataError
from cardiodistill.io import read_ecg
from cardiodistill.records import EcgRecord
from cardiodistill.signals.leads import LEADS_12

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WFDB_DIR = DATA / "wfdb_formats"
_NUMBER = re.compile(rb"-?\d+(\.\d+)?")
_REPLACEMENTS = (b"0", b"-1", b"1", b"99999999", b"1e308", b"nan", b"-32768", b"", b"x", b"3.5")


# ---------------------------------------------------------------------------------- mutations


def flip_bytes(data: bytes, rng: np.random.Generator, region: int | None = None) -> bytes:
    out = bytearray(data)
    span = min(len(out), region or len(out))
    for pos in rng.integers(0, span, size=int(rng.integers(1, 9))):
        out[pos] ^= int(rng.integers(1, 256))
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def insert_garbage(data: bytes, rng: np.random.Generator) -> bytes:
    pos = int(rng.integers(0, len(data) + 1))
    return data[:pos] + rng.bytes(int(rng.integers(1, 64))) + data[pos:]


def delete_span(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(0, len(data)))
    return data[:start] + data[start + int(rng.integers(1, 256)) :]


def edit_number(data: bytes, rng: np.random.Generator, region: int | None = None) -> bytes:
    """Replace one number in the first ``region`` bytes (a header field) by an odd value."""
    matches = list(_NUMBER.finditer(data[: region or len(data)]))
    if not matches:
        return flip_bytes(data, rng)
    m = matches[int(rng.integers(0, len(matches)))]
    new = _REPLACEMENTS[int(rng.integers(0, len(_REPLACEMENTS)))]
    if region is not None and len(new) <= len(m.group()):  # fixed-width headers: keep the layout
        new = new.ljust(len(m.group()))
    return data[: m.start()] + new + data[m.end() :]


def mutate(data: bytes, rng: np.random.Generator, header_bytes: int | None) -> bytes:
    kind = int(rng.integers(0, 6))
    if kind == 0:
        return flip_bytes(data, rng)
    if kind == 1:
        return flip_bytes(data, rng, region=header_bytes or len(data))
    if kind == 2:
        return truncate(data, rng)
    if kind == 3:
        return insert_garbage(data, rng)
    if kind == 4:
        return delete_span(data, rng)
    return edit_number(data, rng, region=header_bytes)


# ------------------------------------------------------------------------------ base files


def _wfdb_base(folder: Path) -> list[tuple[str, dict[str, bytes], str, int | None]]:
    """(name, files, file to mutate, header bytes) for small WFDB records in formats 16 and 212."""
    bases = []
    files = {f"test01_00s{s}": (WFDB_DIR / f"test01_00s{s}").read_bytes() for s in (".hea", ".dat")}
    bases += [("wfdb16-hea", files, "test01_00s.hea", None), ("wfdb16-dat", files, "test01_00s.dat", None)]
    # MIT-BIH 100 cut to 5000 frames: format 212 packs two 12-bit samples in 3 bytes
    head = (WFDB_DIR / "100.hea").read_bytes().replace(b"650000", b"5000")
    files = {"100.hea": head, "100.dat": (WFDB_DIR / "100.dat").read_bytes()[:15000]}
    bases += [("wfdb212-hea", files, "100.hea", None), ("wfdb212-dat", files, "100.dat", None)]
    return bases


def _edf_base() -> bytes:
    """The EDF test file cut to its first 10 one-second data records (header edited to say so)."""
    data = (WFDB_DIR / "test_generator_2.edf").read_bytes()
    n_signals = int(data[252:256])
    header_bytes = 256 * (n_signals + 1)
    samples = [int(data[256 + 216 * n_signals + 8 * i : 256 + 216 * n_signals + 8 * (i + 1)]) for i in range(n_signals)]
    head = data[:236] + b"10".ljust(8) + data[244:header_bytes]
    return head + data[header_bytes : header_bytes + 10 * 2 * sum(samples)]


def _fixture_bases(folder: Path) -> list[tuple[str, dict[str, bytes], str, int | None]]:
    uv = synthetic_ecg_uv(MUSE_LEADS, 250.0, 2.0)
    adc = {lead: np.rint(row / 4.88).astype(np.int16) for lead, row in zip(MUSE_LEADS, uv)}
    muse = write_muse(folder / "m.xml", adc, 250.0, 4.88).read_bytes()
    uv12 = synthetic_ecg_uv(LEADS_12, 250.0, 1.0)
    digits = {lead: np.rint(row / 2.5).astype(int) for lead, row in zip(LEADS_12, uv12)}
    aecg = write_aecg(folder / "a.xml", digits, 0.004, 0.0, 2.5).read_bytes()
    rows = "\n".join(",".join(f"{v:.4f}" for v in col) for col in (np.vstack([np.arange(250) / 250, uv12 / 1000])).T)
    csv = ("time_s," + ",".join(LEADS_12) + "\n" + rows + "\n").encode()
    return [
        ("muse", {"m.xml": muse}, "m.xml", None),
        ("aecg", {"a.xml": aecg}, "a.xml", None),
        ("csv", {"c.csv": csv}, "c.csv", None),
    ]


def _all_bases(folder: Path) -> list[tuple[str, dict[str, bytes], str, int | None]]:
    bases = _fixture_bases(folder)
    if DATA.is_dir():
        bases += _wfdb_base(folder)
        dicom = (DATA / "dicom" / "waveform_ecg.dcm").read_bytes()
        bases += [("dicom", {"w.dcm": dicom}, "w.dcm", 4096), ("edf", {"e.edf": _edf_base()}, "e.edf", 256 * 13)]
    return bases


# ---------------------------------------------------------------------------------- the check


def assert_valid(rec: EcgRecord) -> None:
    assert isinstance(rec, EcgRecord)
    assert rec.signal.dtype == np.float32 and rec.signal.ndim == 2 and rec.signal.shape[1] > 0
    assert not np.isinf(rec.signal).any()
    assert np.isfinite(rec.fs) and rec.fs > 0
    assert len(set(rec.leads)) == len(rec.leads) == rec.signal.shape[0]


def run_fuzz(folder: Path, cases_per_base: int, seed: int) -> dict[str, tuple[int, int]]:
    """Mutate every base file ``cases_per_base`` times; return {base: (records, data errors)}."""
    rng = np.random.default_rng(seed)
    tally: dict[str, tuple[int, int]] = {}
    for name, files, target, header_bytes in _all_bases(folder):
        ok = errors = 0
        case_dir = folder / name
        case_dir.mkdir()
        for i in range(cases_per_base):
            for fname, content in files.items():
                (case_dir / fname).write_bytes(mutate(content, rng, header_bytes) if fname == target else content)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # libraries may warn about odd values; only the outcome counts
                    rec = read_ecg(case_dir / target)
            except DataError as err:
                assert "\n" not in str(err)
                errors += 1
                continue
            except Exception as err:
                raise AssertionError(f"{name} case {i}: raw {type(err).__name__}: {err}") from err
            assert_valid(rec)
            ok += 1
        tally[name] = (ok, errors)
    return tally


def test_fuzzed_files_give_a_valid_record_or_a_data_error(tmp_path):
    tally = run_fuzz(tmp_path, cases_per_base=300, seed=20261121)
    assert all(ok + err == 300 for ok, err in tally.values())
    # Both outcomes happen for every format: the mutations reach the parsers, and the readers
    # still accept a file whose damage does not touch what they need (e.g. a flipped sample).
    assert all(ok > 0 and err > 0 for ok, err in tally.values()), tally


@pytest.mark.slow
def test_fuzzed_files_extended(tmp_path):
    tally = run_fuzz(tmp_path, cases_per_base=1500, seed=7)
    assert all(ok + err == 1500 for ok, err in tally.values())

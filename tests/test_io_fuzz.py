"""Fuzz every reader, and what ``inspect`` and the model preparation do with what it accepts.

Each format has base files made by the writers the reader tests use (and small real files from
``../shared/data`` when present). A seeded mutator corrupts one of them per case: bit flips
(anywhere or in the header), truncation, header numbers replaced by extremes (0, -1, 1e-300,
1e300, nan, inf, 2**32-1), binary header fields overwritten with extremes, duplicated or removed
lines, and a change of text encoding. Each case runs in a worker process whose address space is
capped (``RLIMIT_AS``) and whose answer must come within a time limit; the outcome is one of

* ``accepted``: a record or clip came back, and it is plausible (rate, shape, finite values:
  :mod:`cardiodistill.io.limits`); it then goes through the ``inspect`` summary and, for ECGs,
  :func:`~cardiodistill.signals.preprocess.preprocess`, which may only raise typed errors too;
* ``typed``: a :class:`~cardiodistill.errors.CardiodistillError` with a one-line message;
* ``untyped``: any other exception (a raw library traceback); ``absurd``: accepted but implausible;
* ``hang``: no answer in time; ``blow-up``: the worker ran out of memory (or died).

The contract is zero of the last four. The default run does 300 mutants per format; the ``slow``
run (``pytest -m slow tests/test_io_fuzz.py``) does 1000 and prints the table that
``docs/reliability.md`` shows. ECG formats are here, video formats in ``test_fuzz_video.py``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import re
import resource
import struct
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
import pytest
from test_io_readers import MUSE_LEADS, synthetic_ecg_uv, write_aecg, write_muse

from cardiodistill.errors import CardiodistillError
from cardiodistill.io import limits

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

EXTREMES = (b"0", b"-1", b"1e-300", b"1e300", b"nan", b"inf", b"4294967295", b"-0.0", b"1e999", b"99999999")
BINARY_EXTREMES = (0, 1, -1, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**32 - 1, float("nan"), float("inf"), 1e-300, 1e300)
_NUMBER = re.compile(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?")
CASE_TIMEOUT_S = 30.0  # per case, on two busy cores; a hang is a case that never answers
MEMORY_HEADROOM = 2 << 30  # bytes of address space a worker may add to what it starts with
OUTCOMES = ("accepted", "typed", "untyped", "absurd", "hang", "blow-up")


@dataclass
class Base:
    """One valid file set to mutate: ``files`` (name -> bytes) written together, ``target`` mutated."""

    fmt: str
    files: dict[str, bytes]
    target: str
    kind: str = "ecg"  # or "video"
    header: int | None = None  # bytes at the start that hold the header (None: the whole file)
    text: bool = False  # line and encoding mutations apply
    kwargs: dict = field(default_factory=dict)  # for read_ecg


# ---------------------------------------------------------------------------------- mutations


def _flip(data: bytes, rng: np.random.Generator, span: int) -> tuple[bytes, str]:
    out = bytearray(data)
    for pos in rng.integers(0, max(span, 1), size=int(rng.integers(1, 9))):
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out), "bit flips"


def _edit_number(data: bytes, rng: np.random.Generator, span: int, fixed: bool) -> tuple[bytes, str]:
    matches = list(_NUMBER.finditer(data[:span]))
    if not matches:
        return _flip(data, rng, span)
    m = matches[int(rng.integers(0, len(matches)))]
    new = EXTREMES[int(rng.integers(0, len(EXTREMES)))]
    if fixed:  # fixed-width header fields (EDF, NPY): keep the layout when the value fits
        new = new.ljust(len(m.group())) if len(new) <= len(m.group()) else new[: len(m.group())]
    return data[: m.start()] + new + data[m.end() :], f"number {m.group()[:12]!r} -> {new!r}"


def _edit_binary(data: bytes, rng: np.random.Generator, span: int) -> tuple[bytes, str]:
    fmt = ("<H", "<I", "<i", "<f", "<d", ">I", ">H")[int(rng.integers(0, 7))]
    size = struct.calcsize(fmt)
    if len(data) < size:
        return data, "too short"
    pos = int(rng.integers(0, max(min(span, len(data)) - size, 0) + 1)) // 2 * 2
    value = BINARY_EXTREMES[int(rng.integers(0, len(BINARY_EXTREMES)))]
    if fmt[-1] in "fd":
        with np.errstate(over="ignore"):  # 1e300 as float32 is inf, as intended
            packed = np.array(value, dtype=fmt).tobytes()
    else:  # two's complement of the value, all ones for nan / inf
        number = int(value) % 2 ** (8 * size) if np.isfinite(value) else 2 ** (8 * size) - 1
        packed = number.to_bytes(size, "big" if fmt[0] == ">" else "little")
    return data[:pos] + packed + data[pos + size :], f"binary {fmt} at {pos} -> {value!r}"


def _lines(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    i = int(rng.integers(0, len(lines)))
    if rng.random() < 0.5:
        return b"\n".join(lines[: i + 1] + [lines[i]] * int(rng.integers(1, 4)) + lines[i + 1 :]), f"line {i} duplicated"
    return b"\n".join(lines[:i] + lines[i + 1 :]), f"line {i} removed"


def _encoding(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    codec = ("utf-16", "utf-16-le", "utf-16-be", "utf-8-sig", "utf-32")[int(rng.integers(0, 5))]
    text = data.decode("latin-1")
    if rng.random() < 0.5:  # also declare it, as a converting tool would
        text = re.sub(r'encoding="[^"]*"', f'encoding="{codec.replace("-sig", "").upper()}"', text, count=1)
    return text.encode(codec), f"re-encoded as {codec}"


def mutate(base: Base, rng: np.random.Generator) -> tuple[bytes, str]:
    """One corrupted copy of ``base``'s target file and what was done to it."""
    data = base.files[base.target]
    span = min(base.header or len(data), len(data))
    kinds = ["flip", "flip-header", "truncate", "number", "binary"] + (["lines", "lines", "encoding"] if base.text else [])
    kind = kinds[int(rng.integers(0, len(kinds)))]
    if kind == "flip":
        return _flip(data, rng, len(data))
    if kind == "flip-header":
        return _flip(data, rng, span)
    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        return data[:cut], f"truncated to {cut} bytes"
    if kind == "number":
        return _edit_number(data, rng, span, fixed=base.header is not None and not base.text)
    if kind == "binary":
        return _edit_binary(data, rng, span)
    if kind == "lines":
        return _lines(data, rng)
    return _encoding(data, rng)


# ------------------------------------------------------------------------------------ checks


def check_record(rec) -> str | None:
    """Why an accepted EcgRecord is implausible, or None."""
    lo, hi = limits.ECG_FS_HZ
    sig = rec.signal
    if not (np.isfinite(rec.fs) and lo <= rec.fs <= hi):
        return f"fs {rec.fs!r}"
    if sig.dtype != np.float32 or sig.ndim != 2 or not 1 <= sig.shape[0] <= limits.MAX_CHANNELS or sig.shape[1] < 1:
        return f"signal {sig.dtype} {sig.shape}"
    if sig.size > limits.MAX_ECG_VALUES or np.isinf(sig).any():
        return "infinite samples or too many"
    ecg = [i for i, u in enumerate(rec.meta.get("units", ["mV"] * sig.shape[0])) if u == "mV"]
    if ecg and np.nanmax(np.abs(sig[ecg]), initial=0.0) > limits.MAX_ABS_MV:
        return "amplitude beyond any ECG"
    return None


def check_clip(clip) -> str | None:
    """Why an accepted VideoClip is implausible, or None."""
    lo, hi = limits.VIDEO_FPS
    t, h, w = clip.frames.shape
    if not (np.isfinite(clip.fps) and lo <= clip.fps <= hi):
        return f"fps {clip.fps!r}"
    if clip.frames.dtype != np.uint8 or not (1 <= t <= limits.MAX_FRAMES and 1 <= h <= limits.MAX_FRAME_SIDE
                                              and 1 <= w <= limits.MAX_FRAME_SIDE):
        return f"frames {clip.frames.dtype} {clip.frames.shape}"
    spacing = clip.meta.get("pixel_spacing_mm")
    if spacing is not None and not all(limits.PIXEL_SPACING_MM[0] <= v <= limits.PIXEL_SPACING_MM[1] for v in spacing):
        return f"pixel spacing {spacing!r}"
    return None


def run_case(base: Base, data: bytes, folder: Path) -> tuple[str, str]:
    """Read one mutant and what inspect / preprocess make of it: (outcome, detail)."""
    from cardiodistill.inspection import summarize_ecg, summarize_video
    from cardiodistill.io import read_ecg, read_video
    from cardiodistill.signals.preprocess import preprocess

    for name, content in base.files.items():
        (folder / name).write_bytes(data if name == base.target else content)
    path = folder / base.target
    stage = "read"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # libraries warn about odd values; only the outcome counts
            if base.kind == "ecg":
                rec = read_ecg(path, **base.kwargs)
                problem = check_record(rec)
                if problem:
                    return "absurd", problem
                stage = "inspect"
                summarize_ecg(rec)
                stage = "preprocess"
                out = preprocess(rec, missing="zero")
                if np.isinf(out.signal).any():
                    return "absurd", "preprocess gave infinite samples"
            else:
                clip = read_video(path)
                problem = check_clip(clip)
                if problem:
                    return "absurd", problem
                stage = "inspect"
                summarize_video(path)
    except CardiodistillError as err:
        if "\n" in str(err):
            return "untyped", f"{stage}: multi-line message {str(err)[:200]!r}"
        return ("typed" if stage == "read" else "accepted"), ""
    except MemoryError:
        return "blow-up", f"{stage}: MemoryError"
    except Exception as err:  # noqa: BLE001 - exactly what the fuzzing looks for
        where = traceback.extract_tb(err.__traceback__)[-1]
        return "untyped", f"{stage}: {type(err).__name__}: {str(err)[:160]} ({Path(where.filename).name}:{where.lineno})"
    return "accepted", ""


# ------------------------------------------------------------------------------- worker pool


def _address_space() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _worker(conn, bases: list[Base], headroom: int) -> None:
    """Run cases sent as (base index, mutant bytes) until None, in a capped address space."""
    limit = _address_space() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.disable(logging.CRITICAL)  # nibabel logs every header field it repairs
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        while True:
            job = conn.recv()
            if job is None:
                return
            index, data = job
            folder = Path(tmp) / "case"
            folder.mkdir(exist_ok=True)
            for old in folder.iterdir():
                old.unlink()
            conn.send(run_case(bases[index], data, folder))


@dataclass
class Tally:
    counts: dict[str, Counter] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, fmt: str, outcome: str, detail: str) -> None:
        self.counts.setdefault(fmt, Counter())[outcome] += 1
        if outcome not in ("accepted", "typed"):
            self.failures.append(f"{fmt}: {outcome}: {detail}")

    def table(self) -> str:
        rows = ["| format | mutants | accepted | typed errors | untyped | absurd | hangs | blow-ups |",
                "|---|---|---|---|---|---|---|---|"]
        for fmt, c in self.counts.items():
            rows.append(f"| {fmt} | {sum(c.values())} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
        return "\n".join(rows)


def fuzz(bases: list[Base], per_format: int, seed: int, workers: int = 2,
         timeout_s: float = CASE_TIMEOUT_S) -> Tally:
    """Mutate each format's bases ``per_format`` times in all (round robin) and run every case in
    ``workers`` capped worker processes; a worker that dies or overruns is replaced."""
    jobs = []
    by_format: dict[str, list[int]] = {}
    for i, base in enumerate(bases):
        by_format.setdefault(base.fmt, []).append(i)
    for fmt, indices in by_format.items():
        rng = np.random.default_rng([seed, sum(fmt.encode())])
        for n in range(per_format):
            index = indices[n % len(indices)]
            data, what = mutate(bases[index], rng)
            jobs.append((index, data, f"{fmt} case {n} ({Path(bases[index].target).name}: {what})"))
    ctx = mp.get_context("fork")
    tally = Tally()
    pending = list(reversed(jobs))
    running: dict = {}  # connection -> (process, job, started)

    def start() -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, bases, MEMORY_HEADROOM), daemon=True)
        proc.start()
        child.close()
        running[parent] = [proc, None, 0.0]

    def feed(conn) -> None:
        if pending:
            job = pending.pop()
            conn.send(job[:2])
            running[conn][1:] = [job, time.monotonic()]
        else:
            conn.send(None)
            running.pop(conn)[0].join(5)

    for _ in range(min(workers, len(jobs))):
        start()
    for conn in list(running):
        feed(conn)
    while running:
        ready = wait(list(running), timeout=1.0)
        for conn in ready:
            proc, job, _ = running[conn]
            try:
                outcome, detail = conn.recv()
            except (EOFError, OSError):  # the worker died: out of memory or a crash in C code
                proc.join(1)
                tally.add(bases[job[0]].fmt, "blow-up", f"{job[2]}: worker died (exit {proc.exitcode})")
                running.pop(conn)
                start()
                feed(list(running)[-1])
                continue
            tally.add(bases[job[0]].fmt, outcome, f"{job[2]}: {detail}" if detail else job[2])
            feed(conn)
        now = time.monotonic()
        for conn, (proc, job, started) in list(running.items()):
            if job is not None and now - started > timeout_s:
                proc.kill()
                proc.join(1)
                tally.add(bases[job[0]].fmt, "hang", f"{job[2]}: no answer in {timeout_s:g} s")
                running.pop(conn)
                start()
                feed(list(running)[-1])
    return tally


def assert_contract(tally: Tally, per_format: int) -> None:
    print("\n" + tally.table())
    assert not tally.failures, "\n".join(tally.failures[:20])
    for fmt, c in tally.counts.items():
        assert sum(c.values()) == per_format, fmt
        # both outcomes happen: the mutations reach the parsers, and readers still accept a file
        # whose damage does not touch what they need (a flipped sample)
        assert c["typed"] > 0 and c["accepted"] > 0, (fmt, dict(c))


# -------------------------------------------------------------------------------- ECG bases


def write_dicom_ecg(path: Path, uv: np.ndarray, fs: float, leads: tuple[str, ...]) -> Path:
    """A 12-Lead ECG Waveform Storage object (PS3.3 A.34): one RHYTHM multiplex group of int16
    samples in microvolts (sensitivity 1 uV per bit), channels labelled by their code meaning."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, TwelveLeadECGWaveformStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = TwelveLeadECGWaveformStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz-ecg"])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = TwelveLeadECGWaveformStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "ECG"
    ds.PatientID = "FUZZ-1"
    group = Dataset()
    group.MultiplexGroupLabel = "RHYTHM"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = len(leads)
    group.NumberOfWaveformSamples = uv.shape[1]
    group.SamplingFrequency = f"{fs:g}"
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    channels = []
    for lead in leads:
        ch = Dataset()
        source = Dataset()
        source.CodeMeaning = f"Lead {lead}"
        source.CodeValue = "5.6.3-9-1"
        source.CodingSchemeDesignator = "SCPECG"
        ch.ChannelSourceSequence = Sequence([source])
        unit = Dataset()
        unit.CodeValue = "uV"
        unit.CodingSchemeDesignator = "UCUM"
        unit.CodeMeaning = "microvolt"
        ch.ChannelSensitivity = "1"
        ch.ChannelSensitivityUnitsSequence = Sequence([unit])
        ch.ChannelSensitivityCorrectionFactor = "1"
        ch.ChannelBaseline = "0"
        ch.ChannelSampleSkew = "0"
        ch.WaveformBitsStored = 16
        channels.append(ch)
    group.ChannelDefinitionSequence = Sequence(channels)
    group.WaveformData = np.rint(uv.T).astype("<i2").tobytes()
    ds.WaveformSequence = Sequence([group])
    ds.save_as(path, enforce_file_format=True)
    return path


def write_edf(path: Path, signals: dict[str, np.ndarray], fs: int, units: str = "uV") -> Path:
    """An EDF file (one-second data records, int16 samples mapped linearly onto +-3276.7 units)."""
    ns = len(signals)
    n_records = next(iter(signals.values())).size // fs

    def field_(values, width):
        return b"".join(str(v).encode().ljust(width)[:width] for v in values)

    head = b"0       " + b"FUZZ-1".ljust(80) + b"Startdate X".ljust(80) + b"01.01.21" + b"00.00.00"
    head += str(256 * (ns + 1)).encode().ljust(8) + b"".ljust(44) + str(n_records).encode().ljust(8)
    head += b"1".ljust(8) + str(ns).encode().ljust(4)
    names = list(signals)
    head += field_(names, 16) + field_(["AgAgCl"] * ns, 80) + field_([units] * ns, 8)
    head += field_([-3276.8] * ns, 8) + field_([3276.7] * ns, 8) + field_([-32768] * ns, 8) + field_([32767] * ns, 8)
    head += field_(["HP:0.05Hz"] * ns, 80) + field_([fs] * ns, 8) + field_([""] * ns, 32)
    digital = np.stack([np.clip(np.rint(s * 10), -32768, 32767).astype("<i2") for s in signals.values()])
    body = digital[:, : n_records * fs].reshape(ns, n_records, fs).transpose(1, 0, 2).tobytes()
    path.write_bytes(head + body)
    return path


def _wfdb_files(folder: Path, record) -> dict[str, bytes]:
    from cardiodistill.io import write_wfdb

    header = write_wfdb(record, folder / "rec", comments=["Age: 63", "Sex: F", "Dx: 426783006"])
    return {"rec.hea": header.read_bytes(), "rec.dat": header.with_suffix(".dat").read_bytes()}


def ecg_bases(folder: Path) -> list[Base]:
    """Base files for every ECG format: writer-made, plus small real files when present."""
    from cardiodistill.io import write_csv_ecg
    from cardiodistill.records import EcgRecord
    from cardiodistill.signals.leads import LEADS_12

    fs = 250
    uv2 = synthetic_ecg_uv(("I", "II"), fs, 3.0)
    record = EcgRecord((uv2 / 1000).astype(np.float32), float(fs), ("I", "II"))
    wfdb = _wfdb_files(folder, record)
    bases = [
        Base("WFDB header", wfdb, "rec.hea", text=True),
        Base("WFDB signal", wfdb, "rec.dat"),
    ]
    adc = {lead: np.rint(row / 4.88).astype(np.int16) for lead, row in zip(MUSE_LEADS, synthetic_ecg_uv(MUSE_LEADS, fs, 2.0))}
    bases.append(Base("GE MUSE XML", {"m.xml": write_muse(folder / "m.xml", adc, fs, 4.88).read_bytes()}, "m.xml", text=True))
    uv12 = synthetic_ecg_uv(LEADS_12, fs, 2.0, seed=3)
    digits = {lead: np.rint(row / 2.5).astype(int) for lead, row in zip(LEADS_12, uv12)}
    aecg = write_aecg(folder / "a.xml", digits, 1 / fs, 0.0, 2.5).read_bytes()
    bases.append(Base("HL7 aECG", {"a.xml": aecg}, "a.xml", text=True))
    dcm = write_dicom_ecg(folder / "w.dcm", uv12, fs, LEADS_12).read_bytes()
    bases.append(Base("DICOM ECG", {"w.dcm": dcm}, "w.dcm", header=len(dcm) - uv12.size * 2))
    edf = write_edf(folder / "e.edf", {"ECG I": uv2[0], "ECG II": uv2[1], "Resp": uv2[0] / 5}, fs).read_bytes()
    bases.append(Base("EDF", {"e.edf": edf}, "e.edf", header=256 * 4))
    csv_path = write_csv_ecg(EcgRecord((uv12[:, :fs] / 1000).astype(np.float32), float(fs), LEADS_12), folder / "c.csv")
    bases.append(Base("CSV", {"c.csv": csv_path.read_bytes()}, "c.csv", text=True))
    np.save(folder / "n.npy", (uv2 / 1000).astype(np.float32))
    npy = (folder / "n.npy").read_bytes()
    bases.append(Base("NumPy .npy", {"n.npy": npy}, "n.npy", header=128, kwargs={"fs": fs, "leads": ["I", "II"]}))
    if DATA.is_dir():  # small real files: a format-212 MIT-BIH record cut to 3000 frames, a real DICOM ECG
        mit = DATA / "wfdb_formats"
        head = (mit / "100.hea").read_bytes().replace(b"650000", b"3000")
        real = {"100.hea": head, "100.dat": (mit / "100.dat").read_bytes()[:9000]}
        bases += [Base("WFDB header", real, "100.hea", text=True), Base("WFDB signal", real, "100.dat")]
        real_dcm = (DATA / "dicom" / "waveform_ecg.dcm").read_bytes()
        bases.append(Base("DICOM ECG", {"real.dcm": real_dcm}, "real.dcm", header=4096))
    return bases


# ------------------------------------------------------------------------------------ tests


def test_base_files_are_read(tmp_path):
    """Every unmutated base is accepted and plausible: the mutants start from valid files."""
    for base in ecg_bases(tmp_path / "bases"):
        folder = tmp_path / base.target.replace(".", "_")
        folder.mkdir(exist_ok=True)
        assert run_case(base, base.files[base.target], folder) == ("accepted", ""), base.fmt


def test_fuzzed_ecg_files_are_read_or_refused_typed(tmp_path):
    (tmp_path / "bases").mkdir()
    tally = fuzz(ecg_bases(tmp_path / "bases"), per_format=300, seed=20261121)
    assert_contract(tally, 300)


@pytest.mark.slow
def test_fuzzed_ecg_files_extended(tmp_path):
    (tmp_path / "bases").mkdir()
    tally = fuzz(ecg_bases(tmp_path / "bases"), per_format=1000, seed=7)
    assert_contract(tally, 1000)


def test_mutator_is_deterministic_and_varied():
    base = Base("x", {"f": b"name 2 250 500\nline 1.5 nan\n" * 4}, "f", text=True)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    a = [mutate(base, rng_a) for _ in range(60)]
    assert a == [mutate(base, rng_b) for _ in range(60)]
    assert sum(data != base.files["f"] for data, _ in a) > 50
    kinds = {what.split()[0] for _, what in a}
    assert {"bit", "truncated", "number", "binary", "line", "re-encoded"} <= kinds, kinds


def _misbehaving_reader(path, **kwargs):
    """Stands in for read_ecg to show the harness catches what it exists to catch."""
    action = Path(path).read_bytes()
    if action == b"raise":
        raise ValueError("a raw library error")
    if action == b"hang":
        time.sleep(60)
    if action == b"eat":
        return bytearray(8 << 30)  # beyond the worker's address space: MemoryError
    if action == b"die":
        os._exit(3)
    raise CardiodistillError("a typed refusal")


def test_harness_reports_untyped_errors_hangs_and_blow_ups(tmp_path, monkeypatch):
    import cardiodistill.io.detect

    monkeypatch.setattr(cardiodistill.io.detect, "read_ecg", _misbehaving_reader)  # the workers are forked
    bases = [Base(action, {"f": action.encode()}, "f") for action in ("raise", "hang", "eat", "die", "typed")]
    monkeypatch.setattr(sys.modules[__name__], "mutate", lambda base, rng: (base.files["f"], "unchanged"))
    tally = fuzz(bases, per_format=1, seed=0, timeout_s=3.0)
    outcomes = {fmt: next(iter(c)) for fmt, c in tally.counts.items()}
    assert outcomes == {"raise": "untyped", "hang": "hang", "eat": "blow-up", "die": "blow-up", "typed": "typed"}
    assert len(tally.failures) == 4 and "ValueError: a raw library error" in "\n".join(tally.failures)


def test_a_batch_of_1000_files_scores_every_good_one_and_names_every_bad_one(tmp_path):
    """``predict`` on 1,000 recordings, every format among them, 5 % damaged (garbage of the same size,
    or a file cut short mid-header): one row per file in file order, every good file scored, every bad
    one an error row naming it."""
    from cardiodistill.edge import EdgeModel
    from cardiodistill.edge.predict import predict_paths, scan_paths
    from cardiodistill.io import write_csv_ecg
    from cardiodistill.records import EcgRecord

    fs = 250
    bases = {}  # one file set of each format; the CSV and the .npy hold leads I and II at 250 Hz
    for base in ecg_bases(tmp_path / "bases"):
        bases.setdefault(base.fmt.split()[0], base)
    record = EcgRecord((synthetic_ecg_uv(("I", "II"), fs, 3.0) / 1000).astype(np.float32), float(fs), ("I", "II"))
    bases["CSV"] = Base("CSV", {"c.csv": write_csv_ecg(record, tmp_path / "c.csv").read_bytes()}, "c.csv")
    assert sorted(bases) == ["CSV", "DICOM", "EDF", "GE", "HL7", "NumPy", "WFDB"]
    kinds = sorted(bases.values(), key=lambda b: b.fmt)
    rng = np.random.default_rng(0)
    bad = set(rng.choice(1000, size=50, replace=False).tolist())
    root = tmp_path / "batch"
    for i in range(1000):
        base = kinds[i % len(kinds)]
        folder = root / f"{i:04d}"
        folder.mkdir(parents=True)
        for name, data in base.files.items():
            if i in bad and name == base.target:
                data = rng.bytes(len(data)) if i % 2 else data[: min(len(data) // 3, 40)]
            (folder / name).write_bytes(data)

    # A .csv whose content is no table is "not a recording" in a folder (folders hold metadata tables):
    # it is listed among the skipped files, which `predict` names on stderr; every other bad file gets
    # its error row.
    skipped = {int(p.parent.name) for p in scan_paths([root]).skipped}
    assert skipped <= bad and all(kinds[i % len(kinds)].fmt == "CSV" for i in skipped)
    model = EdgeModel.load(None)
    rows = list(predict_paths([root], model, tabular={"fs": fs, "leads": ["I", "II"]}))
    folders = [int(Path(r["file"]).parent.name) for r in rows]
    assert folders == sorted(set(range(1000)) - skipped)
    errors = {i for i, r in zip(folders, rows) if r["error"] is not None}
    assert errors == bad - skipped and len(errors) >= 40
    for i, row in zip(folders, rows):
        if i in bad:
            assert row["error"].startswith(row["file"]) and "\n" not in row["error"]
        else:
            assert sum(row["class_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)

"""``cardiodistill predict FILE|FOLDER ...``: the edge runtime on the command line (no PyTorch needed).

:func:`predict_cmd` is a Typer command function; ``cardiodistill.cli`` registers it as ``predict``.

Results are streamed: each recording's JSON line is printed, or appended to ``--out`` and flushed,
as soon as its batch is scored. ``--out`` is opened (and an old file of that name replaced) once the
model has loaded, then written line by line rather than atomically at the end: a run that crashes or
is killed after hours keeps every line written so far, which is worth more than a file that is either
complete or absent (a partial file is told from a complete one by its line count against the summary,
and every line is a complete JSON object). ``--out`` naming an existing folder writes
``FOLDER/predictions.jsonl``; missing parent folders are created.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import DataError
from ..inspection import plural
from .predict import predict_paths, record_path, scan_paths
from .runtime import MIN_SECONDS, EdgeModel

__all__ = ["OUT_FILE_NAME", "predict_cmd"]

#: The results file written when ``--out`` names a folder.
OUT_FILE_NAME = "predictions.jsonl"
#: Skipped files named on the console before "and N more".
_SKIPPED_SHOWN = 5

_console = Console(stderr=True)


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, allow_nan=False, ensure_ascii=False)


def _say(text: str) -> None:
    _console.print(escape(text), highlight=False, soft_wrap=True)


def _open_results(out: Path) -> tuple[Path, IO[str]]:
    """The results file for ``--out`` (``OUT/predictions.jsonl`` for a folder), opened for writing."""
    if out.is_dir():
        out = out / OUT_FILE_NAME
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return out, open(out, "w", encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except OSError as err:
        raise DataError(f"cannot write the results: {err.strerror or err}", out) from None


def _skipped_line(skipped: list[Path]) -> str:
    names = ", ".join(p.name for p in skipped[:_SKIPPED_SHOWN])
    more = f" and {len(skipped) - _SKIPPED_SHOWN} more" if len(skipped) > _SKIPPED_SHOWN else ""
    return f"skipped {plural(len(skipped), 'file')} that {'is' if len(skipped) == 1 else 'are'} not " \
           f"{'a recording' if len(skipped) == 1 else 'recordings'}: {names}{more}"


def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(
        metavar="FILE|FOLDER", show_default=False,
        help="ECG files (WFDB, DICOM waveform, MUSE XML, HL7 aECG, EDF, CSV, NPY) and folders, searched "
             "recursively; a WFDB record may be named without .hea.")],
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", metavar="MODEL.onnx",
        help="Exported model (.onnx with cardiodistill metadata); default: the bundled one.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="FILE",
        help="Write the JSON lines to this file, one flushed line per recording as it is scored, instead of "
             "stdout (an existing folder: FOLDER/predictions.jsonl).")] = None,
    threads: Annotated[int, typer.Option(min=0, metavar="N", help="CPU threads for onnxruntime (0: all).")] = 1,
    min_seconds: Annotated[float, typer.Option(
        "--min-seconds", min=0.0, metavar="SECONDS", help="Abstain on recordings shorter than this.")] = MIN_SECONDS,
    fs: Annotated[Optional[float], typer.Option(
        metavar="HZ",
        help="Sampling rate of CSV/NPY files that do not carry one (other formats state their own).")] = None,
    leads: Annotated[Optional[str], typer.Option(
        metavar="LEADS", help="Comma-separated lead names, for CSV/NPY files without a header.")] = None,
    units: Annotated[Optional[str], typer.Option(metavar="UNITS", help="Amplitude units (mV, uV), for CSV/NPY.")] = None,
) -> None:
    """Score ECG files with an exported model: one JSON line per recording.

    Each line holds the class or output probabilities, the prediction, per-lead quality and whether
    the model abstains (and why); see docs/deploy.md. A file that cannot be read or scored gets a
    line with its "error" and the batch goes on; files in a folder that are not recordings (indexes
    such as RECORDS or REFERENCE.csv, notes, images) are skipped and listed. Lines are written as
    they are scored, so an interrupted run keeps them. Summary on stderr. Exit status 2 when a
    path does not exist, the model cannot be loaded or no file could be read.
    """
    for path in paths:
        if not record_path(path).exists():  # a typo fails now, not after a long run
            raise DataError("file not found", path)
    edge = EdgeModel.load(model, threads=threads, min_seconds=min_seconds)
    tabular = {k: v for k, v in (("fs", fs), ("units", units)) if v is not None}
    if leads:
        tabular["leads"] = [name.strip() for name in leads.split(",")]
    scan = scan_paths(paths)
    if scan.skipped:
        _say(_skipped_line(scan.skipped))
    where = ", ".join(map(str, paths))
    if not scan.files:
        raise DataError("no recordings found", where)
    # The bar is for folders; it is left out when the JSON lines themselves go to the terminal.
    show_bar = any(p.is_dir() for p in paths) and (out is not None or not sys.stdout.isatty())
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=_console, transient=True, disable=not show_bar, redirect_stdout=False,
        redirect_stderr=False,
    )
    counts = {"ok": 0, "abstained": 0, "errors": 0}
    first_error = None
    sink: IO[str] = sys.stdout
    if out is not None:
        out, sink = _open_results(out)
    try:
        with bar:
            task = bar.add_task("predicting", total=len(scan.files))
            for row in predict_paths(scan.files, edge, progress=lambda done, total: bar.update(task, completed=done),
                                     tabular=tabular):
                if row["error"] is not None:
                    counts["errors"] += 1
                    first_error = first_error or row["error"]
                else:
                    counts["abstained" if row["abstain"] else "ok"] += 1
                sink.write(_json_line(row) + "\n")
                sink.flush()
    except OSError as err:
        raise DataError(f"cannot write the results: {err.strerror or err}", out or "stdout") from None
    finally:
        if sink is not sys.stdout:
            sink.close()
    n = sum(counts.values())
    if counts["errors"] == n:  # one line says it all
        raise DataError(first_error) if n == 1 else DataError(f"none of the {n} files could be read "
                                                              f"(first: {first_error})", where)
    _say(f"{plural(n, 'recording')}: {counts['ok']} ok, {counts['abstained']} abstained, "
         f"{plural(counts['errors'], 'error')}" + (f"; written to {out}" if out is not None else ""))

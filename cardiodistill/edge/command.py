"""``cardiodistill predict FILE|FOLDER ...``: the edge runtime on the command line (no PyTorch needed).

:func:`predict_cmd` is a Typer command function; ``cardiodistill.cli`` registers it as ``predict``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import DataError
from ..io.atomic import write_text_atomic
from .predict import predict_paths
from .runtime import MIN_SECONDS, EdgeModel

__all__ = ["predict_cmd"]

_console = Console(stderr=True)


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, allow_nan=False, ensure_ascii=False)


def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(
        help="ECG files (WFDB, DICOM waveform, MUSE XML, HL7 aECG, EDF, CSV, NPY) and folders, searched recursively.",
        show_default=False)],
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="Exported model (.onnx with cardiodistill metadata); default: the bundled one.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the JSON lines to this file (atomically, at the end) instead of stdout.")] = None,
    threads: Annotated[int, typer.Option(min=0, help="CPU threads for onnxruntime (0: all).")] = 1,
    min_seconds: Annotated[float, typer.Option(
        "--min-seconds", min=0.0, help="Abstain on recordings shorter than this (s).")] = MIN_SECONDS,
) -> None:
    """Read ECG files, check their quality and print one JSON line per recording: triage and class
    probabilities, LVEF, per-lead quality, and whether the model abstains (and why).

    A file that cannot be read gets a line with its "error"; the batch goes on. Summary on stderr.
    Exit status 2 when the model cannot be loaded or no file could be read.
    """
    edge = EdgeModel.load(model, threads=threads, min_seconds=min_seconds)
    # The bar is for folders; it is left out when the JSON lines themselves go to the terminal.
    show_bar = any(p.is_dir() for p in paths) and (out is not None or not sys.stdout.isatty())
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=_console, transient=True, disable=not show_bar, redirect_stdout=False,
        redirect_stderr=False,
    )
    lines: list[str] = []
    counts = {"ok": 0, "abstained": 0, "errors": 0}
    first_error = None
    with bar:
        task = bar.add_task("predicting", total=None)
        for row in predict_paths(paths, edge, progress=lambda done, total: bar.update(task, completed=done,
                                                                                      total=total)):
            if row["error"] is not None:
                counts["errors"] += 1
                first_error = first_error or row["error"]
            else:
                counts["abstained" if row["abstain"] else "ok"] += 1
            line = _json_line(row)
            if out is None:
                print(line, flush=True)
            else:
                lines.append(line)
    if out is not None:
        write_text_atomic(out, "".join(f"{line}\n" for line in lines))
    n = sum(counts.values())
    _console.print(f"{n} recordings: {counts['ok']} ok, {counts['abstained']} abstained, {counts['errors']} errors"
                   + (f" (written to {out})" if out is not None else ""), highlight=False, soft_wrap=True)
    where = ", ".join(map(str, paths))
    if n == 0:
        raise DataError("no files found", where)
    if counts["errors"] == n:
        raise DataError(f"none of the {n} files could be read (first: {first_error})", where)

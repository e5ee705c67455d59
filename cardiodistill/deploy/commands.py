"""``cardiodistill export`` and ``cardiodistill bench``: the deployment steps on the command line.

:func:`export_cmd` and the function :func:`bench_command` returns are Typer command functions;
``cardiodistill.cli`` registers them, and gives ``bench_command`` the source of the windows to time
(the simulator: deploy never imports it). The library (and with it PyTorch) is imported when a
command runs, not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import DataError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["WindowSource", "bench_command", "export_cmd"]

#: ``windows(n, leads, fs, seconds, rng) -> [n, len(leads), round(fs * seconds)]`` float32 windows, per-lead
#: z-scored, e.g. the simulator's ``simulated_windows`` (which ``cardiodistill.cli`` passes).
WindowSource = Callable[[int, Sequence[str], float, float, "np.random.Generator"], "np.ndarray"]

_console = Console(stderr=True)  # progress and notes
_stdout = Console()  # the tables


class Precision(str, Enum):
    int8 = "int8"
    fp16 = "fp16"
    fp32 = "fp32"


def _gate_table(record: dict[str, Any]) -> Table:
    """One row per precision, in the order tried: size, macro AUROC, its drop, the worst output, the verdict."""
    table = Table(title=f"accuracy gate on {record['n_validation']} validation recordings "
                        f"(margin {record['margin']:g}, per output {2 * record['margin']:g})")
    for column in ("precision", "size (kB)", "macro AUROC", "drop", "worst output (drop)", "gate"):
        table.add_column(column, justify="left" if column in ("precision", "worst output (drop)", "gate") else "right")
    for precision in ("fp32", "int8", "fp16"):
        row = record.get(precision)
        if row is None:
            continue
        if "unavailable" in row:
            table.add_row(precision, "", "", "", "", f"unavailable: {row['unavailable']}")
        elif precision == "fp32":
            table.add_row(precision, f"{row['bytes'] / 1e3:.1f}", f"{row['macro_auroc']:.4f}", "", "", "reference")
        elif row["macro_drop"] is None:  # no output could be judged
            table.add_row(precision, f"{row['bytes'] / 1e3:.1f}", f"{row['macro_auroc']:.4f}", "", "",
                          "[yellow]not judged[/]")
        else:
            table.add_row(precision, f"{row['bytes'] / 1e3:.1f}", f"{row['macro_auroc']:.4f}",
                          f"{row['macro_drop']:+.4f}", f"{row['worst_output']} ({row['worst_drop']:+.4f})",
                          "[green]passed[/]" if row["passed"] else "[red]failed[/]")
    for output, why in record.get("not_judged", {}).items():
        table.add_row("", "", "", "", f"{output}: {why}", "")
    return table


def export_cmd(
    students: Annotated[list[Path], typer.Argument(
        help="The trained student (student.pt), or several that read the same input: exported as one model, "
             "the mean of their predictions.", show_default=False, metavar="STUDENT...")],
    data: Annotated[Path, typer.Option(
        "--data", help="Validation set: an .npz with x [N, leads, samples] (z-scored windows in the model's lead "
                       "order), y [N, outputs] (0/1, NaN unknown) and, for a student that reads rhythm features, "
                       "rhythm [N, features].", show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="ONNX file to write (default: student.onnx beside the student).")] = None,
    precision: Annotated[Precision, typer.Option(help="The precision to try first.")] = Precision.int8,
    margin: Annotated[float, typer.Option(help="Largest macro AUROC loss accepted against fp32.")] = 0.02,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Refuse when the gate fails instead of falling back to fp16, then fp32.")] = False,
) -> None:
    """Export a student to one ONNX file with its model card inside, int8 by default behind an accuracy gate.

    The float32 graph is checked against PyTorch. A smaller precision is kept only when its macro
    AUROC on the validation set is at most MARGIN below float32 and no output loses more than twice
    that; otherwise the export falls back (int8 -> fp16 -> fp32), or with --strict refuses. Several students
    are first written as one ensemble model file beside the ONNX file (OUT-ensemble.pt).
    """
    from .student import ensemble_students, export_student_model, student_arrays_npz

    x, y, rhythm = student_arrays_npz(data, rhythm=True)
    out = students[0].parent / "student.onnx" if out is None else out
    student = students[0]
    if len(students) > 1:
        student = ensemble_students(students, out.with_name(f"{out.stem}-ensemble.pt"))
        _console.print(f"{len(students)} students as one ensemble: {student}", highlight=False, soft_wrap=True)
    try:
        with _console.status(f"exporting {student} ({precision.value}, gate on {len(x)} recordings)"):
            record = export_student_model(student, out, val_x=x, val_y=y, val_rhythm=rhythm, precision=precision.value,
                                          margin=margin, fallback=not strict)
    except DataError as err:
        if err.path is not None:
            raise
        raise DataError(err.problem, data) from err  # the validation arrays: name their file
    _stdout.print(_gate_table(record))
    _stdout.print(record["summary"], highlight=False, soft_wrap=True)
    _stdout.print(f"[green]wrote {record['precision']}[/] ({record['bytes'] / 1e3:.1f} kB): {record['path']}",
                  highlight=False, soft_wrap=True)


def bench_command(windows: WindowSource, source: str = "simulated") -> Callable[..., None]:
    """The ``cardiodistill bench`` command, timing a window drawn from ``windows`` and calibrating int8 on
    :data:`~cardiodistill.deploy.bench.N_CALIBRATION` more (``source`` names them in the results)."""

    def bench_cmd(
        model: Annotated[Path, typer.Argument(help="A student.pt, or an exported .onnx.", show_default=False)],
        threads: Annotated[Optional[list[int]], typer.Option(
            "--threads", "-t", min=1, help="Thread count to time (repeatable; default: 1 and 2).")] = None,
        n: Annotated[int, typer.Option("--n", min=1, help="Timed runs per backend and thread count.")] = 200,
        json_out: Annotated[Optional[Path], typer.Option(
            "--json", help="Also write the full results to this JSON file.")] = None,
    ) -> None:
        """Time one 10 s recording (batch 1) on PyTorch eager, ONNX fp32 and ONNX int8; file sizes and peak memory.

        Latency p50/p95 per backend and thread count; peak memory of a fresh process that loads and
        runs each backend, and its share above the runtime's own baseline.
        """
        import numpy as np

        from ..io.atomic import write_json_atomic
        from .bench import N_CALIBRATION, bench_rows, bench_student, model_input

        with _console.status(f"benchmarking {model}"):
            leads, fs, seconds = model_input(model)
            rng = np.random.default_rng(0)
            x = windows(1, leads, fs, seconds, rng)
            calibration = windows(N_CALIBRATION, leads, fs, seconds, rng)
            result = bench_student(model, x, calibration=calibration, source=source,
                                   threads=tuple(threads or (1, 2)), n=n)
        table = Table(title=f"{model}: one {result['seconds']:g} s recording, input {result['input_shape']}, "
                            f"{result['n']} runs")
        rows = bench_rows(result)
        for column in rows[0]:
            table.add_column(column, justify="left" if column == "backend" else "right")
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        _stdout.print(table)
        if json_out is not None:
            write_json_atomic(json_out, result)
            _stdout.print(f"[green]results written to[/] {json_out}", highlight=False, soft_wrap=True)

    return bench_cmd

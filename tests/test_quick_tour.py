"""The README's Quick tour, the fast commands, as a new user types them (a real subprocess each), the bad
inputs of a first session (one line on stderr, exit status 2), and the ``edge`` install: inspect and
predict with the training libraries unimportable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cardiodistill import __version__
from cardiodistill.io import write_wfdb
from cardiodistill.records import EcgRecord

README = Path(__file__).resolve().parents[1] / "README.md"
#: What the `train` extra adds and an `edge` install lacks; importing any of them fails in the child.
# what an `edge` install lacks: the training libraries and the `serve` extra's
NOT_IN_EDGE = ("torch", "lightning", "av", "nibabel", "matplotlib", "sklearn", "neurokit2", "onnx",
               "fastapi", "starlette", "uvicorn", "multipart", "python_multipart")
_BLOCKED_CLI = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Block())
from cardiodistill.cli import main
try:
    main(sys.argv[2:])
finally:
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    assert not loaded, loaded
"""


def cli(*args: object, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    if blocked:
        command = [sys.executable, "-c", _BLOCKED_CLI, ",".join(blocked), *map(str, args)]
    else:
        command = [sys.executable, "-m", "cardiodistill.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> Path:
    """A 2-lead (I, II) 12-s recording at 300 Hz, written as WFDB: what a handheld device exports."""
    t = np.arange(12 * 300) / 300.0
    beat = np.exp(-0.5 * (((t % 0.8) - 0.3) / 0.012) ** 2)  # 75 bpm R waves
    rng = np.random.default_rng(0)
    signal = np.stack([0.8 * beat, 1.2 * beat]) + rng.normal(0, 0.01, (2, t.size))
    folder = tmp_path_factory.mktemp("tour")
    return write_wfdb(EcgRecord(signal.astype(np.float32), 300.0, ("I", "II")), folder / "A00001")


def test_readme_quick_tour_commands_are_real():
    """Every `cardiodistill <command>` in the Quick tour names a command of the CLI."""
    tour = README.read_text().split("## Quick tour", 1)[1].split("\n## ", 1)[0]
    commands = set(re.findall(r"^cardiodistill ([a-z]+)", tour, flags=re.MULTILINE))
    assert {"synth", "inspect", "predict", "config"} <= commands
    listing = cli("--help").stdout
    for command in commands:
        assert re.search(rf"^  {command}\s", listing, flags=re.MULTILINE), command


def test_help_and_version():
    listing = cli("--help")
    assert listing.returncode == 0 and "<bool>" not in listing.stdout
    # the command list shows each command's whole summary, never a sentence cut with "..."
    commands = listing.stdout.split("Commands:", 1)[1]
    assert "..." not in commands and "predict" in commands
    assert cli("--version").stdout.strip() == __version__ == cli("version").stdout.strip()
    inspect_help = cli("inspect", "--help").stdout
    assert "{FILE}" in inspect_help and "{path}" not in inspect_help and "<bool>" not in inspect_help
    assert "--png FILE" in inspect_help and "--json " in inspect_help
    one_line_usage = cli("inspect", "x", "--json", "true")  # a flag takes no value
    assert one_line_usage.returncode == 2 and "unexpected extra argument" in one_line_usage.stderr


def test_inspect_and_predict_a_record_named_the_wfdb_way(record, tmp_path):
    name = record.with_suffix("")  # .../A00001, as WFDB tools take it
    png = tmp_path / "new" / "folder" / "ecg.png"
    shown = cli("inspect", name, "--png", png)
    assert shown.returncode == 0, shown.stderr
    assert "2 leads, 300 Hz, 12 s" in shown.stdout and png.read_bytes()[:4] == b"\x89PNG"
    assert shown.stderr.strip() == f"figure written to {png}"
    predicted = cli("predict", name)
    assert predicted.returncode == 0, predicted.stderr
    row = json.loads(predicted.stdout)
    assert row["file"] == str(record) and row["error"] is None and "triage_probability" not in row
    assert sum(row["class_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert predicted.stderr.strip() == "1 recording: 1 ok, 0 abstained, 0 errors"


def test_config_show_and_a_tiny_cohort(tmp_path):
    shown = cli("config", "show", "--preset", "quick", "--set", "synth.prevalence.af=0.2")
    assert shown.returncode == 0 and "af: 0.2" in shown.stdout
    made = cli("synth", "--patients", "2", "--out", tmp_path / "cohort")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "cohort" / "manifest.csv").is_file() and (tmp_path / "cohort" / "run.json").is_file()


def test_first_session_mistakes_are_one_line_errors(record, tmp_path):
    folder = record.parent
    one_line_error(cli("inspect", folder), str(folder), "is a folder")
    one_line_error(cli("inspect", tmp_path / "nope.hea"), "nope.hea", "not found")
    one_line_error(cli("predict", tmp_path / "nope.hea"), f"{tmp_path / 'nope.hea'}: file not found")
    notes = tmp_path / "notes.txt"
    notes.write_text("patient felt palpitations\n")
    proc = cli("predict", notes)
    one_line_error(proc, str(notes), "cannot tell the format")
    out_folder = tmp_path / "results"
    out_folder.mkdir()
    proc = cli("predict", record, "--out", out_folder)  # a folder as --out: FOLDER/predictions.jsonl
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert json.loads((out_folder / "predictions.jsonl").read_text())["error"] is None
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    one_line_error(cli("predict", record, "--out", blocker / "x.jsonl"), "cannot write the results")


def test_edge_install_inspects_and_predicts_without_the_training_libraries(record):
    """`inspect` and `predict` on an install without torch, lightning, av, nibabel, matplotlib, fastapi, ...:
    importing any of them fails in the child, and none is imported."""
    shown = cli("inspect", record, "--json", blocked=NOT_IN_EDGE)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["leads"] == ["I", "II"]
    predicted = cli("predict", record, blocked=NOT_IN_EDGE)
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["error"] is None
    trained = cli("demo", "--out", record.parent / "demo", blocked=NOT_IN_EDGE)
    one_line_error(trained, "pip install 'cardiodistill[train]'")


def test_edge_modules_do_not_import_torch():
    code = ("import sys, cardiodistill.edge, cardiodistill.edge.command, cardiodistill.inspection\n"
            "print(sorted(m for m in sys.modules if m.partition('.')[0] in sys.argv[1].split(',')))")
    proc = subprocess.run([sys.executable, "-c", code, ",".join(NOT_IN_EDGE)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr + proc.stdout


def _closure(root: str, extras: set[str]) -> dict:
    """The installed distributions that ``pip install "root[extras]"`` brings, from their metadata."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, tuple] = {}
    todo = [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if key in seen and wanted <= seen[key][1]:
            continue
        dist = metadata.distribution(name)
        seen[key] = (dist, wanted | (seen[key][1] if key in seen else frozenset()))
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                todo.append((req.name, frozenset(req.extras)))
    return {key: dist for key, (dist, _) in seen.items()}


def test_the_edge_install_is_lean():
    """What `pip install "cardiodistill[edge]"` brings, read from the installed packages' metadata: none of
    the training or serving stack, and the size README states (580 MB in a fresh venv, where compiled
    bytecode and bundled libraries add to the files the packages list: 414 MB of listed files here)."""
    edge = _closure("cardiodistill", {"edge"})
    training_or_serving = {"torch", "lightning", "av", "nibabel", "scikit-learn", "neurokit2", "onnx", "fastapi",
                           "starlette", "uvicorn", "python-multipart"}
    assert not training_or_serving & set(edge), sorted(edge)
    listed = {name: sum(f.size or 0 for f in dist.files or []) for name, dist in edge.items()}
    heaviest = sorted(listed, key=listed.get, reverse=True)[:4]
    assert set(heaviest) <= {"scipy", "onnxruntime", "numpy", "pandas", "matplotlib"}, heaviest
    assert sum(listed.values()) < 500e6, {k: round(v / 1e6) for k, v in listed.items()}
    assert {"wfdb", "onnxruntime", "pydicom", "defusedxml"} <= set(edge) and "cardiodistill" in edge

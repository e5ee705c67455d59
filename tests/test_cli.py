"""The CLI as a user meets it: a real subprocess, help on every command, one-line errors."""

import subprocess
import sys

import pytest


def run(*args, check=False):
    proc = subprocess.run([sys.executable, "-m", "cardiodistill.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _commands() -> list[list[str]]:
    """Every command and sub-command the app registers, as argument lists."""
    from typer.main import get_command

    from cardiodistill.cli import app

    def walk(group, prefix):
        for name, command in sorted(group.commands.items()):
            yield [*prefix, name]
            if hasattr(command, "commands"):
                yield from walk(command, [*prefix, name])

    return list(walk(get_command(app), []))


COMMANDS = _commands()


def test_help_lists_the_commands():
    out = run("--help", check=True).stdout
    top = {c[0] for c in COMMANDS}
    assert {"synth", "demo", "inspect", "predict", "serve", "export", "bench", "evaluate", "pretrain"} <= top
    for command in top:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    from typer.testing import CliRunner

    from cardiodistill.cli import app

    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_config_show_applies_overrides():
    out = run("config", "show", "--set", "synth.prevalence.af=0.25", check=True).stdout
    assert "af: 0.25" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["config", "show", "--set", "synth.nope=1"], "synth.nope: unknown key"),
        (["config", "show", "--preset", "nope"], "unknown preset"),
        (["synth", "--out", "{tmp}/x", "--patients", "0"], "synth.patients"),
    ],
)
def test_user_errors_are_one_line_exit_2(args, fragment, tmp_path):
    proc = run(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["nope"], ["synth", "--no-such-option"], ["inspect"]])
def test_usage_errors_exit_2_without_traceback(args):
    proc = run(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Usage" in proc.stderr


def test_non_run_folder_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = run("synth", "--out", str(tmp_path), "--patients", "2")
    assert proc.returncode == 2 and "not a cardiodistill run" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_under_a_launcher_rank_zero_alone_checks_and_writes_the_run_folder(tmp_path, monkeypatch):
    """torchrun / srun start every rank on the same --out: rank 0 prepares it (and refuses a foreign folder, which
    ends the job); the others leave it to rank 0, so none of them trips over rank 0's half-written config."""
    from cardiodistill.config import load_config
    from cardiodistill.errors import RunFolderError
    from cardiodistill.runs import launched_rank, prepare_run_folder

    (tmp_path / "precious.txt").write_text("keep me")
    monkeypatch.setenv("RANK", "1")
    assert launched_rank() == 1
    assert prepare_run_folder(tmp_path / "new", load_config("quick")).is_dir()
    prepare_run_folder(tmp_path, load_config("quick"))  # not rank 0: no check, no write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "precious.txt"]
    assert not any((tmp_path / "new").iterdir())
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RunFolderError, match="not a cardiodistill run"):
        prepare_run_folder(tmp_path, load_config("quick"))
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launched_rank() == 3

def test_a_training_command_on_an_edge_install_says_what_to_install(tmp_path):
    """With torch absent (as on `pip install cardiodistill[edge]`), `predict` loads and a training
    command fails in one line naming the extra, brackets and all."""
    code = ("import sys, importlib.abc\n"
            "class NoTorch(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'lightning'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from cardiodistill.cli import main\n"
            "main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", code, "demo", "--out", str(tmp_path / "demo")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'cardiodistill[train]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

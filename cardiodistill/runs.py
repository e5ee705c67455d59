"""Run folders: where every command writes its outputs.

A run folder holds ``config.yaml`` (the resolved config), the command's outputs and a
``run.json`` written last that says the run finished. Every file is written atomically (a
temporary file in the same folder, then ``os.replace``), so an interrupted run never leaves a
half-written file behind, and a run folder without ``run.json`` is a run that can be resumed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
from pathlib import Path

from . import __version__
from .config import Config, config_to_yaml
from .errors import RunFolderError
from .io.atomic import write_json_atomic, write_text_atomic

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"


def launched_rank() -> int:
    """This process's global rank where a launcher started several (``RANK`` from torchrun, ``SLURM_PROCID`` from
    srun); 0 otherwise."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def prepare_run_folder(out: str | Path, config: Config, *, overwrite: bool = False, kind: str = "run") -> Path:
    """Create (or reopen for resuming) a run folder and write its ``config.yaml``.

    * a folder that does not exist is created;
    * a finished run (``run.json`` present) is only replaced with ``overwrite=True``;
    * an unfinished run is resumed if its config is the same, and refused otherwise, so a
      resumed job never mixes outputs of two configs.

    Where a launcher started several processes (torchrun, srun), rank 0 alone checks and writes the folder; the
    others only make sure it exists. Checked by every rank, the folder raced: one rank saw the other's half-written
    ``config.yaml`` and refused the folder as "not a cardiodistill run". Rank 0's refusal ends the whole job.
    """
    out = Path(out)
    if launched_rank() != 0:
        out.mkdir(parents=True, exist_ok=True)
        return out
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: exists and is not a folder")
    config_text = config_to_yaml(config)
    if out.is_dir() and any(out.iterdir()):
        finished = (out / RUN_FILE).is_file()
        previous = out / CONFIG_FILE
        if overwrite:
            shutil.rmtree(out)
        elif finished:
            raise RunFolderError(f"{out}: holds a finished {kind}; pass --overwrite to replace it or choose another --out")
        elif not previous.is_file():
            raise RunFolderError(f"{out}: folder is not empty and is not a cardiodistill run; choose another --out")
        elif previous.read_text() != config_text:
            raise RunFolderError(f"{out}: holds an unfinished {kind} with a different config; pass --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG_FILE, config_text)
    return out


def finish_run(out: str | Path, kind: str, **summary) -> Path:
    """Mark a run folder finished by writing ``run.json`` (last, atomically)."""
    info = {
        "kind": kind,
        "cardiodistill": __version__,
        "python": platform.python_version(),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **summary,
    }
    path = Path(out) / RUN_FILE
    write_json_atomic(path, info)
    return path


def read_run(out: str | Path) -> dict | None:
    path = Path(out) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None

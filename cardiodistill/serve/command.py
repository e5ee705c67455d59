"""``cardiodistill serve``: the point-of-care service on the command line.

:func:`serve_cmd` is a Typer command function; ``cardiodistill.cli`` registers it as ``serve``. It
imports FastAPI and uvicorn only when it runs, so the CLI still starts on an install without them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..edge.runtime import MIN_SECONDS, EdgeModel
from ..errors import CardiodistillError

__all__ = ["LOCAL_HOSTS", "serve_cmd"]

#: Hosts that only this machine can reach.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_console = Console(stderr=True)


def serve_cmd(
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", metavar="MODEL.onnx",
        help="Exported model (.onnx with cardiodistill metadata); default: the bundled one.")] = None,
    host: Annotated[str, typer.Option(
        metavar="ADDRESS", help="Address to listen on; 0.0.0.0 opens the service to the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, metavar="N", help="TCP port (0: any free one).")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", min=0.001, metavar="MB", help="Largest request body accepted.")] = 20.0,
    max_seconds: Annotated[float, typer.Option(
        "--max-seconds", min=1.0, metavar="SECONDS", help="Longest recording read.")] = 600.0,
    min_seconds: Annotated[float, typer.Option(
        "--min-seconds", min=0.0, metavar="SECONDS", help="Abstain on recordings shorter than this.")] = MIN_SECONDS,
    threads: Annotated[int, typer.Option(min=0, metavar="N", help="CPU threads per model run (0: all).")] = 1,
    allow_identifiers: Annotated[bool, typer.Option(
        "--allow-identifiers",
        help="Let a client ask for the patient identifiers in a file's header (?identifiers=true).")] = False,
    temp_dir: Annotated[Path | None, typer.Option(
        "--temp-dir", metavar="FOLDER", help="Where each request's temporary folder is made.")] = None,
) -> None:
    """Serve the model to a browser and over HTTP: a page to drop an ECG file on, and a JSON API.

    Open http://HOST:PORT/ for the page (tracing, result in plain words, lead quality, why the model
    abstains, which seconds drove the result) or see http://HOST:PORT/docs for the API. Uploads are
    kept only in a temporary folder removed after each request; patient identifiers in file headers
    are never logged or returned unless --allow-identifiers is given and the client asks. There is no
    authentication and no TLS: keep the default 127.0.0.1, or put the service behind a proxy that
    provides them. See docs/serve.md.
    """
    try:
        import uvicorn
        from uvicorn.config import LOGGING_CONFIG

        from .app import ServeSettings, create_app
    except ModuleNotFoundError as err:
        raise CardiodistillError(f"serving needs {err.name}: pip install 'cardiodistill[serve]'") from None
    if temp_dir is not None and not temp_dir.is_dir():
        raise CardiodistillError(f"--temp-dir {temp_dir}: no such folder")
    settings = ServeSettings(max_upload_mb=max_upload_mb, max_seconds=max_seconds,
                             allow_identifiers=allow_identifiers, temp_dir=temp_dir)
    app = create_app(EdgeModel.load(model, threads=threads, min_seconds=min_seconds), settings)
    if host not in LOCAL_HOSTS:
        _console.print(escape(f"warning: listening on {host}: anyone who can reach it can use the service "
                              "(no authentication, no TLS)"), style="yellow", highlight=False)
    log_config = copy.deepcopy(LOGGING_CONFIG)  # the service's own lines ("scored <pseudonym>: ...") too
    log_config["loggers"]["cardiodistill.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(app, host=host, port=port, log_config=log_config, server_header=False)

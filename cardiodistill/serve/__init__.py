"""``cardiodistill serve``: the student at the point of care, as an HTTP API and a web page (no PyTorch).

* :mod:`.app`: :func:`create_app` - the FastAPI application around one
  :class:`~cardiodistill.edge.EdgeModel`: upload a recording (any format ``cardiodistill predict``
  reads, a WFDB record as several files or a zip) or send its samples as JSON; get the predict result
  row, the model's contract, the tracing and the attribution; bounded, private, one-line errors.
* :mod:`.uploads`: an upload written into the request's temporary folder, and which file is the record.
* :mod:`.attribution`: occlusion attribution with the ONNX model (which seconds drove the result).
* :mod:`.display`: every lead, filtered and decimated for drawing.
* :mod:`.command`: the ``cardiodistill serve`` command (imported by the CLI, not here).
* ``static/``: the page (HTML, vanilla JS, SVG; works offline and on a phone).

Needs the ``serve`` extra (``pip install 'cardiodistill[serve]'``: the ``edge`` install plus FastAPI,
uvicorn and python-multipart). See docs/serve.md.

The names below are imported on first use, so that the CLI, which imports :mod:`.command`, starts
on an ``edge`` install without FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, for type checkers and IDEs (exported through __getattr__)
    from .app import HEADER_IDENTIFIERS, PredictionOut, SamplesIn, ServeSettings, create_app, model_summary  # noqa: F401
    from .attribution import Attribution, explained_output, occlusion  # noqa: F401

_WHERE = {
    "HEADER_IDENTIFIERS": "app", "PredictionOut": "app", "SamplesIn": "app", "ServeSettings": "app",
    "create_app": "app", "model_summary": "app",
    "Attribution": "attribution", "explained_output": "attribution", "occlusion": "attribution",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)

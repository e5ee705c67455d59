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
"""

from .app import HEADER_IDENTIFIERS, PredictionOut, SamplesIn, ServeSettings, create_app, model_summary
from .attribution import Attribution, explained_output, occlusion

__all__ = [
    "HEADER_IDENTIFIERS", "Attribution", "PredictionOut", "SamplesIn", "ServeSettings", "create_app",
    "explained_output", "model_summary", "occlusion",
]

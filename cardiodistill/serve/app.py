"""The point-of-care service: an HTTP API and a web page around one :class:`~cardiodistill.edge.EdgeModel`.

:func:`create_app` builds a FastAPI application (no PyTorch anywhere: the ``edge`` install plus
``fastapi``, ``uvicorn`` and ``python-multipart``, the ``serve`` extra):

* ``GET /`` - the page (``static/``: plain HTML, vanilla JS and SVG, no asset from the internet);
* ``GET /api/health``, ``GET /api/model`` - liveness, and the model's id, version and contract;
* ``POST /api/predict`` - a recording uploaded as multipart field ``files``: one file of any format
  :func:`cardiodistill.io.read_ecg` reads, a WFDB record's ``.hea`` with its ``.dat``/``.mat``, or a
  zip archive of those (:mod:`.uploads`);
* ``POST /api/predict/samples`` - a JSON body: ``samples`` (one row per lead, or one row), ``fs``,
  ``leads``, ``units``.

Both predict endpoints return ``result`` - exactly the row ``cardiodistill predict`` prints
(:func:`cardiodistill.edge.predict.result_row`: probabilities, prediction, per-lead quality,
abstention and its reason, the model's id and version), with ``file`` the client's file name -, the
model's contract (``model``) and the server's time (``timing_ms``); on request (query flags)
``tracing`` (:mod:`.display`), ``attribution`` (occlusion, :mod:`.attribution`) and ``identifiers``.

Safety (``docs/serve.md``):

* a request body over ``max_upload_mb`` is refused with 413 before it is parsed (a ``Content-Length``
  over it at once, a chunked body as soon as it passes it), and so is a recording longer than
  ``max_seconds``;
* bad input gets a 4xx whose body is ``{"detail": "<one line>"}``: 400 a malformed request, 403
  identifiers the server does not give, 413 too large, 422 a file that cannot be read or scored (any
  failure while reading or scoring it, as ``cardiodistill predict`` reports it) or an invalid JSON
  body. Only a bug in this package is a 500, and its body is one line too, never a traceback;
* uploaded bytes are written only into a ``tempfile.TemporaryDirectory`` (under ``temp_dir``) that
  is removed when the request ends, whatever the outcome (multipart parsing itself may spool a large
  part to an anonymous, already-unlinked temporary file);
* patient identifiers from a file's header (DICOM, MUSE and aECG patient id, age and sex, EDF
  patient field, acquisition dates) are neither logged nor returned, unless the client asks
  (``?identifiers=true``) and the server was started with ``allow_identifiers``; the log names a
  recording by :func:`cardiodistill.privacy.pseudonym` of its file name.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..edge.predict import failure_message, result_row
from ..edge.runtime import EdgeModel
from ..errors import DataError
from ..io.detect import read_ecg
from ..io.limits import check_ecg_amplitude, check_ecg_fs, check_ecg_shape
from ..privacy import pseudonym
from ..records import EcgRecord
from ..signals.units import to_millivolts
from .attribution import explained_output, occlusion
from .display import display_tracing
from .uploads import UploadError, record_file, save_upload

__all__ = ["HEADER_IDENTIFIERS", "PredictionOut", "SamplesIn", "ServeSettings", "create_app", "model_summary"]

log = logging.getLogger("cardiodistill.serve")
T = TypeVar("T")

#: ``EcgRecord.meta`` keys the readers fill from a file's header that identify a patient or a visit.
HEADER_IDENTIFIERS = (
    "patient_id", "patient", "patient_age", "age_units", "patient_sex", "birth_time", "recording",
    "acquisition_datetime", "acquisition_date", "acquisition_time", "study_date", "start_date", "start_time",
)
_STATIC = "static"


@dataclass(frozen=True)
class ServeSettings:
    """What the service accepts (``cardiodistill serve`` options)."""

    max_upload_mb: float = 20.0  #: largest request body, MB (10**6 bytes)
    max_seconds: float = 600.0  #: longest recording read, s
    max_files: int = 16  #: most files in one upload (zip members included)
    allow_identifiers: bool = False  #: may a client ask for the header's patient identifiers
    temp_dir: Path | None = None  #: where request folders are made (None: the system's temporary folder)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_upload_mb) and self.max_upload_mb > 0):
            raise ValueError(f"max_upload_mb must be a positive number, got {self.max_upload_mb!r}")
        if not (math.isfinite(self.max_seconds) and self.max_seconds > 0):
            raise ValueError(f"max_seconds must be a positive number, got {self.max_seconds!r}")
        if self.max_files < 1:
            raise ValueError(f"max_files must be at least 1, got {self.max_files!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


# ------------------------------------------------------------------------------------ schemas


class SamplesIn(BaseModel):
    """A recording sent as numbers."""

    model_config = ConfigDict(extra="forbid")
    samples: list[list[float | None]] | list[float | None] = Field(
        description="One row of samples per lead (or one row for a single lead); null = missing sample.")
    fs: float = Field(description="Sampling rate, Hz.")
    leads: list[str] = Field(min_length=1, description="Lead names, one per row (I, II, V1... or ECG).")
    units: str = Field("mV", description="Amplitude unit: mV, uV, V or nV.")
    name: str = Field("samples", max_length=128, description="What the result's 'file' field calls it.")


class LeadQualityOut(BaseModel):
    usable: bool
    issues: list[str]
    amplitude_mv: float | None
    hf_noise_ratio: float | None
    baseline_wander_mv: float | None
    clipped_fraction: float | None


class ResultOut(BaseModel):
    """The row ``cardiodistill predict`` prints (docs/deploy.md); which of the optional keys are present
    depends on the model (multiclass: class_probabilities and scores; multilabel: probabilities)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    model_id: str
    model_version: str
    precision: str
    leads_used: list[str]
    derived_leads: dict[str, str]
    fs_in: float | None
    duration_s: float | None
    windows: int
    triage_probability: float | None = None
    class_probabilities: dict[str, float | None] | None = None
    scores: dict[str, float | None] | None = None
    probabilities: dict[str, float | None] | None = None
    prediction: str | list[str] | None
    lvef: float | None = None
    quality: dict[str, LeadQualityOut]
    abstain: bool
    abstain_reason: str | None
    error: None


class ModelOut(BaseModel):
    """The model's contract (its EdgeSpec) in short."""

    model_id: str
    version: str
    precision: str
    task: str
    leads: list[str]
    fs: float
    seconds: float
    band_hz: list[float]
    normalisation: str
    outputs: list[str]
    triage: str | None
    abstain_outputs: list[str]
    thresholds: dict[str, float]
    lvef: bool
    min_seconds: float
    gate: str | None = Field(description="What the export's accuracy gate decided.")
    server_version: str


class TracingOut(BaseModel):
    fs: float
    leads: list[str]
    duration_s: float
    mv: list[list[float]]
    filter: str


class AttributionOut(BaseModel):
    output: str
    leads: list[str]
    segment_s: float
    bin_s: float
    times_s: list[float]
    drop: list[list[float]]
    method: str


class PredictionOut(BaseModel):
    result: ResultOut
    model: ModelOut
    timing_ms: float
    tracing: TracingOut | None = None
    attribution: AttributionOut | None = None
    identifiers: dict[str, str] | None = None


TracingFlag = Annotated[bool, Query(description="Also return every lead for drawing (at most 250 Hz).")]
ExplainFlag = Annotated[bool, Query(description="Also return the occlusion attribution of the result.")]
IdentifiersFlag = Annotated[bool, Query(
    description="Also return the header's patient identifiers (only where the server allows it).")]


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")


# -------------------------------------------------------------------------------- body limit


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, before the application parses it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"request body is larger than the {self.max_bytes:,} byte limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"detail": self._too_large()}, 413, headers={"Connection": "close"})(scope, receive,
                                                                                                      send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # raised inside the body parsing; FastAPI passes HTTPException on
                raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited, send)


# ------------------------------------------------------------------------------------ helpers


def model_summary(model: EdgeModel) -> dict[str, Any]:
    """:class:`ModelOut` of ``model`` (no provenance: it holds paths of the machine that trained it)."""
    s = model.spec
    return {
        "model_id": s.model_id, "version": s.version, "precision": s.precision, "task": s.task,
        "leads": list(s.leads), "fs": s.fs, "seconds": s.seconds, "band_hz": list(s.band_hz),
        "normalisation": s.normalisation, "outputs": list(s.outputs), "triage": s.triage,
        "abstain_outputs": list(s.abstain_outputs), "thresholds": dict(s.thresholds),
        "lvef": s.lvef_mean is not None and s.lvef_std is not None, "min_seconds": model.min_seconds,
        "gate": s.gate.get("decision"), "server_version": __version__,
    }


class _Refused(Exception):
    """A request refused with ``status`` and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _scored(step: Callable[[], T], name: str, private: Path | None) -> T:
    """``step()``, with ANY failure turned into a 422 naming the client's file (as ``cardiodistill
    predict`` reports a file it cannot score); ``private``, the request folder, is cut from the message."""
    try:
        return step()
    except Exception as err:  # noqa: BLE001 - a reader's, numpy's or onnxruntime's own exception on a bad file
        message = failure_message(name, err)
        if private is not None:
            message = message.replace(f"{private}{os.sep}", "")
        raise _Refused(422, message) from None


def _record_from_samples(body: SamplesIn) -> EcgRecord:
    name = body.name
    try:
        signal = np.asarray(body.samples, dtype=np.float64)
    except ValueError:
        raise DataError("samples must be rows of the same length, one per lead", name) from None
    signal = np.atleast_2d(signal)
    if signal.shape[0] != len(body.leads):
        raise DataError(f"{signal.shape[0]} rows of samples but {len(body.leads)} lead names", name)
    fs = check_ecg_fs(body.fs, name)
    check_ecg_shape(*signal.shape, fs, name)
    signal = to_millivolts(signal, body.units, source=name)
    check_ecg_amplitude(signal, name)
    return EcgRecord(signal, fs, tuple(body.leads), source=name)


def _static_text(name: str) -> str:
    return (resources.files("cardiodistill.serve") / _STATIC / name).read_text(encoding="utf-8")


# -------------------------------------------------------------------------------- application


def create_app(model: EdgeModel | None = None, settings: ServeSettings | None = None) -> FastAPI:
    """The service around ``model`` (default: the bundled one, on one thread) with ``settings`` (module doc)."""
    model = model if model is not None else EdgeModel.load()
    settings = settings or ServeSettings()
    summary = model_summary(model)
    index_html = _static_text("index.html")
    spec = model.spec  # a first prediction at start-up, so that the first patient does not wait for lazy imports
    model.predict(EcgRecord(np.zeros((len(spec.leads), spec.samples), np.float32), spec.fs, spec.leads))
    app = FastAPI(
        title="cardiodistill point-of-care service",
        version=__version__,
        description="Score a handheld or 12-lead ECG with an exported cardiodistill student. Research use only: "
                    "not a medical device.",
        responses={code: {"model": ErrorOut} for code in (400, 403, 413, 422)},
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(packages=[("cardiodistill.serve", _STATIC)]), name="static")
    app.state.model, app.state.settings = model, settings

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(err.detail)}, err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors() or [{"loc": (), "msg": "invalid request"}]
        first = errors[0]
        if first.get("type") == "json_invalid":
            problem = first.get("ctx", {}).get("error", "decode error")
            return JSONResponse({"detail": f"body is not valid JSON ({problem})"}, 422)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}{more}"}, 422)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, err: _Refused) -> JSONResponse:
        log.info("%s %s -> %d", request.method, request.url.path, err.status)
        return JSONResponse({"detail": err.message}, err.status)

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        log.error("%s %s -> 500 (%s)", request.method, request.url.path, type(err).__name__)
        return JSONResponse({"detail": "internal error of the service; the request was not scored"}, 500)

    def score(record_of: Callable[[], EcgRecord], name: str, private: Path | None, *, tracing: bool,
              explain: bool, identifiers: bool) -> dict[str, Any]:
        """Read, check, prepare, run and explain one recording; the response body."""
        if identifiers and not settings.allow_identifiers:
            raise _Refused(403, "this server does not return patient identifiers (start it with --allow-identifiers)")
        started = time.perf_counter()
        record = _scored(record_of, name, private)
        if record.duration_s > settings.max_seconds:
            raise _Refused(413, f"{name}: recording is {record.duration_s:.4g} s; this server reads at most "
                                f"{settings.max_seconds:g} s")
        windows, info = _scored(lambda: model.prepare(record), name, private)
        outputs = _scored(lambda: model.run(windows, info.rhythm), name, private)
        prediction = _scored(lambda: model.interpret(outputs, info), name, private)
        body: dict[str, Any] = {"result": result_row(model, name, info, prediction), "model": summary}
        if tracing:
            body["tracing"] = _scored(lambda: display_tracing(record), name, private)
        if explain:
            output = explained_output(model, prediction)
            body["attribution"] = occlusion(model, windows, outputs, output, info.duration_s,
                                          rhythm=info.rhythm).to_dict()
        if identifiers:
            body["identifiers"] = {k: str(record.meta[k]) for k in HEADER_IDENTIFIERS if record.meta.get(k)}
        body["timing_ms"] = round(1000 * (time.perf_counter() - started), 2)
        row = body["result"]
        log.info("scored %s: %s, %d windows, %.0f ms", pseudonym(name),
                 "abstained" if row["abstain"] else f"prediction {row['prediction']}", row["windows"],
                 body["timing_ms"])
        return body

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(index_html)

    @app.get("/api/health", summary="Liveness")
    def health() -> dict[str, str]:
        return {"status": "ok", "model_id": model.spec.model_id, "model_version": model.spec.version}

    @app.get("/api/model", response_model=ModelOut, summary="The model and its contract")
    def model_info() -> dict[str, Any]:
        return summary

    @app.post("/api/predict", response_model=PredictionOut, summary="Score an uploaded recording")
    def predict_upload(
        files: Annotated[list[UploadFile], File(description=(
            "The recording: one file (WFDB, DICOM waveform, MUSE XML, HL7 aECG, EDF, CSV, NPY), a WFDB record's "
            ".hea with its .dat/.mat, or one zip archive of them."))],
        tracing: TracingFlag = False,
        explain: ExplainFlag = False,
        identifiers: IdentifiersFlag = False,
    ) -> JSONResponse:
        with tempfile.TemporaryDirectory(prefix="cardiodistill-serve-", dir=settings.temp_dir) as work:
            try:
                folder, names = save_upload(((f.filename, f.file) for f in files), Path(work),
                                            max_bytes=settings.max_upload_bytes, max_files=settings.max_files)
                path = record_file(folder, names)
            except UploadError as err:
                raise _Refused(err.status, str(err)) from None
            body = score(lambda: read_ecg(path), path.name, folder, tracing=tracing, explain=explain,
                         identifiers=identifiers)
        return JSONResponse(body)

    @app.post("/api/predict/samples", response_model=PredictionOut, summary="Score a recording sent as numbers")
    def predict_samples(
        recording: SamplesIn,
        tracing: TracingFlag = False,
        explain: ExplainFlag = False,
        identifiers: IdentifiersFlag = False,
    ) -> JSONResponse:
        body = score(lambda: _record_from_samples(recording), recording.name, None, tracing=tracing,
                     explain=explain, identifiers=identifiers)
        return JSONResponse(body)

    return app

"""``cardiodistill serve``: the HTTP API on real files (results equal to ``cardiodistill predict``'s),
malformed and oversized uploads (a one-line 4xx, and the server still answers), temporary files,
patient identifiers, the occlusion attribution, the page's assets, the command, and no PyTorch."""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, python-multipart) is not installed")
pytest.importorskip("multipart", reason="the serve extra (python-multipart) is not installed")
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import cardiodistill.serve.app as serve_app
from cardiodistill.edge import EdgeModel, predict_file
from cardiodistill.edge.predict import result_row
from cardiodistill.io import write_csv_ecg, write_wfdb
from cardiodistill.records import EcgRecord
from cardiodistill.serve import PredictionOut, ServeSettings, create_app, occlusion
from cardiodistill.signals import LEADS_12

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CINC = SHARED / "cinc2017"
DICOM_ECG = SHARED / "dicom" / "waveform_ecg.dcm"
PLANTED = ("DOE^JANE", "MRN-314159", "PT-0042", "Doe", "Jane")  # identifiers written into headers below
MAX_SECONDS = 120.0
MAX_UPLOAD_MB = 3.0


@pytest.fixture(scope="module")
def model() -> EdgeModel:
    return EdgeModel.load()


@pytest.fixture(scope="module")
def temp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-temp")


@pytest.fixture(scope="module")
def client(model, temp_root) -> TestClient:
    settings = ServeSettings(max_upload_mb=MAX_UPLOAD_MB, max_seconds=MAX_SECONDS, temp_dir=temp_root)
    return TestClient(create_app(model, settings))


@pytest.fixture(autouse=True)
def no_leftovers(request):
    """After every test, the service's temporary folder is empty again."""
    yield
    if "temp_root" in request.fixturenames:
        root = request.getfixturevalue("temp_root")
        assert not list(root.iterdir()), sorted(root.rglob("*"))


def record_of(signal: np.ndarray, fs: float, leads) -> EcgRecord:
    return EcgRecord(np.asarray(signal, np.float32), fs, tuple(leads))


def upload(client: TestClient, *paths: Path, query: str = "", names=None):
    names = names or [p.name for p in paths]
    return client.post(f"/api/predict{query}", files=[("files", (n, p.read_bytes())) for n, p in zip(names, paths)])


def assert_one_line_4xx(response, status: int | None = None, *fragments: str) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail
    assert "cardiodistill-serve-" not in detail  # the private folder is never shown
    for fragment in fragments:
        assert fragment in detail, detail
    return detail


def without_file(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "file"}


# ---------------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def files(tmp_path_factory, simulated_ecg) -> dict[str, list[Path]]:
    """Recordings in several formats, written by the package's writers and the readers' test writers,
    plus real ones from ../shared/data when present: name -> the files of one recording."""
    from test_io_readers import MUSE_LEADS, synthetic_ecg_uv, write_aecg, write_muse

    root = tmp_path_factory.mktemp("serve-files")
    signal = simulated_ecg(12.0, 500.0, seed=4)
    header = write_wfdb(record_of(signal, 500.0, LEADS_12), root / "sim12")
    out = {
        "wfdb 12-lead .hea + .dat": [header, header.with_suffix(".dat")],
        "csv lead I and II": [write_csv_ecg(record_of(signal[:2], 500.0, ("I", "II")), root / "two.csv")],
    }
    uv = synthetic_ecg_uv(MUSE_LEADS, 500.0, 10.0)
    out["muse xml"] = [write_muse(root / "m.xml", {lead: np.rint(row / 4.88).astype(np.int16)
                                                   for lead, row in zip(MUSE_LEADS, uv)}, 500.0, 4.88)]
    uv12 = synthetic_ecg_uv(LEADS_12, 500.0, 10.0, seed=2)
    out["hl7 aecg"] = [write_aecg(root / "a.xml", {lead: np.rint(row / 2.5).astype(int)
                                                   for lead, row in zip(LEADS_12, uv12)}, 0.002, 0.0, 2.5)]
    for name, stem in (("cinc2017 A00004 (AF)", CINC / "A00004"), ("cinc2017 A00001", CINC / "A00001")):
        if stem.with_suffix(".hea").is_file():
            out[name] = [stem.with_suffix(".hea"), stem.with_suffix(".mat")]
    if DICOM_ECG.is_file():
        out["dicom waveform"] = [DICOM_ECG]
    return out


def test_upload_result_is_predicts_row(client, model, files):
    """For each format: the response's result is exactly the row `cardiodistill predict` gives for the
    file (its "file" the uploaded name), it validates against the published schema, and the model part
    is the file's EdgeSpec."""
    for name, paths in files.items():
        response = upload(client, *paths)
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        PredictionOut.model_validate(body)
        expected = predict_file(model, paths[0])
        assert body["result"]["file"] == paths[0].name
        assert without_file(body["result"]) == without_file(expected), name
        assert body["model"]["model_id"] == model.spec.model_id and body["model"]["leads"] == list(model.spec.leads)
        assert "tracing" not in body and "attribution" not in body and "identifiers" not in body


def test_wfdb_record_as_a_zip_and_in_any_order(client, model, files):
    paths = files["wfdb 12-lead .hea + .dat"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in paths:
            zf.write(path, f"export/{path.name}")
        zf.writestr("__MACOSX/._sim12.hea", b"resource fork")
    expected = without_file(predict_file(model, paths[0]))
    response = client.post("/api/predict", files=[("files", ("sim12.zip", buffer.getvalue()))])
    assert response.status_code == 200, response.text
    assert without_file(response.json()["result"]) == expected
    reordered = upload(client, *reversed(paths))
    assert reordered.status_code == 200 and without_file(reordered.json()["result"]) == expected


def test_samples_as_json_match_edge_model_predict(client, model, simulated_ecg):
    signal = simulated_ecg(20.0, 250.0, seed=6)[:3]
    record = record_of(signal, 250.0, ("I", "II", "III"))
    prediction, info = model.predict(record)
    expected = result_row(model, "bedside-1", info, prediction)
    body = {"samples": (signal * 1000).tolist(), "fs": 250, "leads": ["I", "II", "III"], "units": "uV",
            "name": "bedside-1"}
    response = client.post("/api/predict/samples", json=body)
    assert response.status_code == 200, response.text
    got = response.json()["result"]
    assert got.keys() == expected.keys() and got["prediction"] == expected["prediction"]
    for key in ("class_probabilities", "scores"):  # uV -> mV in float64 then float32: equal to rounding
        assert got[key] == pytest.approx(expected[key], abs=2e-4)
    one_row = client.post("/api/predict/samples", json={"samples": signal[0].tolist(), "fs": 250, "leads": ["ECG"]})
    assert one_row.status_code == 200 and one_row.json()["result"]["leads_used"] == ["I"]


def test_tracing_and_attribution(client, model, files):
    paths = files["wfdb 12-lead .hea + .dat"]
    body = upload(client, *paths, query="?tracing=true&explain=true").json()
    tracing, attribution = body["tracing"], body["attribution"]
    assert tracing["leads"] == list(LEADS_12) and tracing["fs"] == 250.0 and tracing["duration_s"] == 12.0
    assert np.asarray(tracing["mv"]).shape == (12, 3000)
    assert np.ptp(np.asarray(tracing["mv"]), axis=1).min() > 0.2  # mV-sized beats on every lead
    result = body["result"]
    probs = result["class_probabilities"]
    assert attribution["output"] == max(probs, key=probs.get) and attribution["leads"] == ["I"]
    times = np.asarray(attribution["times_s"])
    assert times[0] == 0 and times[-1] < 12.0 and np.allclose(np.diff(times), attribution["bin_s"])
    assert np.asarray(attribution["drop"]).shape == (1, len(times))


def test_occlusion_is_the_drop_of_the_models_own_probability(model, simulated_ecg):
    """Recomputed by hand for one segment: the value is the fall of the output's probability when the
    segment is zeroed; a recording too long for the budget gets wider segments instead of more runs."""
    record = record_of(simulated_ecg(20.0, 500.0, seed=1)[:1], 500.0, ("I",))
    windows, info = model.prepare(record)
    outputs = model.run(windows, info.rhythm)  # the bundled model reads the recording's rhythm features too
    column = 1
    a = occlusion(model, windows, outputs, model.spec.outputs[column], info.duration_s, segment_s=1.0, stride_s=1.0,
                  rhythm=info.rhythm)
    assert a.segment_s == a.bin_s == 1.0 and len(a.times_s) == 20
    hidden = windows.copy()
    hidden[1, 0, 300:400] = 0.0  # window 1, its fourth second: recording seconds 13-14
    by_hand = outputs[1, column] - model.run(hidden[1:2], info.rhythm)[0, column]
    assert a.drop[0, 13] == pytest.approx(by_hand, abs=1e-5)
    budget = occlusion(model, windows, outputs, "af", info.duration_s, max_inputs=20, rhythm=info.rhythm)
    assert budget.segment_s > 0.5 and budget.bin_s > 0.25 and budget.times_s[-1] < 20.0


# ------------------------------------------------------------------------------ bad input


def _wfdb_header(root: Path, name: str, line: str, signal_line: str, data: bytes = b"\0" * 6000) -> Path:
    (root / f"{name}.dat").write_bytes(data)
    header = root / f"{name}.hea"
    header.write_text(f"{line}\n{signal_line}\n")
    return header


def test_malformed_uploads_get_one_line_4xx_and_the_server_still_answers(client, files, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    good = files["wfdb 12-lead .hea + .dat"]
    truncated = tmp_path / "sim12.dat"
    truncated.write_bytes(good[1].read_bytes()[:1000])
    fs_huge = _wfdb_header(tmp_path, "fs", "fs 1 100000000 3000", "fs.dat 16 200 16 0 0 0 0 I")
    n_huge = _wfdb_header(tmp_path, "nsamp", "nsamp 1 500 99999999999999", "nsamp.dat 16 200 16 0 0 0 0 I")
    sig_huge = _wfdb_header(tmp_path, "nsig", "nsig 99999 500 3000", "nsig.dat 16 200 16 0 0 0 0 I")
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4000))
    xml = tmp_path / "cut.xml"
    xml.write_bytes(files["muse xml"][0].read_bytes()[:5000])
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK\x03\x04" + os.urandom(3000))
    cases = [
        ("truncated WFDB signal", [good[0], truncated], 422, "sim12"),
        ("WFDB header with a sampling rate of 1e8 Hz", [fs_huge, fs_huge.with_suffix(".dat")], 422, "1e+08 Hz"),
        ("WFDB header with 1e14 samples", [n_huge, n_huge.with_suffix(".dat")], 422, "nsamp.hea"),
        ("WFDB header with 99999 signals", [sig_huge, sig_huge.with_suffix(".dat")], 422, "nsig.hea"),
        ("header without its signal file", [good[0]], 422, "sim12.dat: WFDB signal file not found"),
        ("an image", [png], 422, "cannot tell the format"),
        ("truncated MUSE XML", [xml], 422, "cut.xml"),
        ("empty file", [empty], 422, "empty.csv"),
        ("damaged zip", [bad_zip], 400, "not a readable zip"),
        ("two records", [good[0], fs_huge, good[1]], 400, "2 WFDB headers"),
        ("several files, no header", [png, empty], 400, "no WFDB header"),
    ]
    for what, paths, status, fragment in cases:
        assert_one_line_4xx(upload(client, *paths), status, fragment)
        assert client.get("/api/health").json()["status"] == "ok", what
    assert_one_line_4xx(upload(client, png, names=[".."]), 400, "not a file name")
    assert_one_line_4xx(client.post("/api/predict"), 422, "files")
    assert_one_line_4xx(client.post("/api/predict/samples", content=b"{not json", headers={
        "content-type": "application/json"}), 422, "body is not valid JSON")
    assert_one_line_4xx(client.post("/api/predict/samples", json={"samples": [[1, 2], [3]], "fs": 500,
                                                                   "leads": ["I", "II"]}), 422, "same length")
    assert_one_line_4xx(client.post("/api/predict/samples", json={"samples": [0.1] * 100, "fs": 1e9,
                                                                   "leads": ["I"]}), 422, "plausible ECG rate")
    assert_one_line_4xx(client.post("/api/predict/samples", json={"samples": [0.1] * 100, "fs": 500,
                                                                   "leads": ["I", "II"]}), 422, "2 lead names")
    assert "Traceback" not in caplog.text
    assert client.get("/api/health").status_code == 200


def test_size_and_length_limits(client, simulated_ecg, tmp_path):
    limit = int(MAX_UPLOAD_MB * 1_000_000)
    big = os.urandom(limit + 1000)
    assert_one_line_4xx(client.post("/api/predict", files=[("files", ("big.dat", big))]), 413, "byte limit")

    def chunks():  # no Content-Length: the limit is enforced as the body streams in
        for _ in range(8):
            yield b"0" * (limit // 4)

    assert_one_line_4xx(client.post("/api/predict/samples", content=chunks(), headers={
        "content-type": "application/json"}), 413, "byte limit")
    bomb = io.BytesIO()  # 1 kB that unpacks to 8 MB, beyond the limit
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"0\n" * 4_000_000)
    assert len(bomb.getvalue()) < 100_000
    assert_one_line_4xx(client.post("/api/predict", files=[("files", ("bomb.zip", bomb.getvalue()))]), 413,
                        "bomb.zip unpacked is larger than")
    many = [("files", (f"f{i}.csv", b"1\n")) for i in range(40)]
    assert_one_line_4xx(client.post("/api/predict", files=many), 400, "upload holds more than 16 files")
    long = write_wfdb(record_of(np.tile(simulated_ecg(10.0, 100.0, seed=2)[:1], 13), 100.0, ("I",)), tmp_path / "long")
    assert_one_line_4xx(upload(client, long, long.with_suffix(".dat")), 413, "long.hea: recording is 130 s")
    assert client.get("/api/health").status_code == 200


def test_request_files_live_only_in_the_request_folder(client, files, temp_root, monkeypatch):
    seen = []
    real_read = serve_app.read_ecg

    def spy(path):
        seen.append((Path(path), sorted(p.name for p in Path(path).parent.iterdir())))
        return real_read(path)

    monkeypatch.setattr(serve_app, "read_ecg", spy)
    assert upload(client, *files["wfdb 12-lead .hea + .dat"]).status_code == 200
    (path, present), = seen
    assert path.is_relative_to(temp_root) and present == ["sim12.dat", "sim12.hea"] and not path.exists()


# --------------------------------------------------------------------------------- privacy


@pytest.fixture(scope="module")
def identified(tmp_path_factory) -> list[Path]:
    """A MUSE export and (with ../shared/data) a DICOM waveform with a planted patient name and id."""
    from test_io_readers import MUSE_LEADS, synthetic_ecg_uv, write_muse

    root = tmp_path_factory.mktemp("identified")
    uv = synthetic_ecg_uv(MUSE_LEADS, 500.0, 10.0, seed=5)
    muse = write_muse(root / "muse.xml", {lead: np.rint(row / 4.88).astype(np.int16)
                                          for lead, row in zip(MUSE_LEADS, uv)}, 500.0, 4.88)
    text = muse.read_text(encoding="latin-1").replace(
        "<PatientDemographics>", "<PatientDemographics><PatientLastName>Doe</PatientLastName>"
                                 "<PatientFirstName>Jane</PatientFirstName>")
    muse.write_text(text, encoding="latin-1")
    out = [muse]
    if DICOM_ECG.is_file():
        import pydicom

        ds = pydicom.dcmread(DICOM_ECG)
        ds.PatientName, ds.PatientID = "DOE^JANE", "MRN-314159"
        ds.save_as(root / "named.dcm")
        out.append(root / "named.dcm")
    return out


def test_patient_identifiers_never_leave_unless_asked_and_allowed(client, model, identified, temp_root, caplog):
    caplog.set_level(logging.DEBUG)
    for path in identified:
        for query in ("", "?tracing=true&explain=true"):
            response = upload(client, path, query=query)
            assert response.status_code == 200, response.text
            assert not [p for p in PLANTED if p in response.text], path
        assert_one_line_4xx(upload(client, path, query="?identifiers=true"), 403, "--allow-identifiers")
    assert not [p for p in PLANTED if p in caplog.text] and "scored" in caplog.text

    allowing = TestClient(create_app(model, ServeSettings(allow_identifiers=True, temp_dir=temp_root)))
    body = upload(allowing, identified[0], query="?identifiers=true").json()
    assert body["identifiers"]["patient_id"] == "PT-0042" and "Doe" not in json.dumps(body)
    assert "identifiers" not in upload(allowing, identified[0]).json()  # allowed, but not asked
    assert not [p for p in PLANTED if p in caplog.text]


# ------------------------------------------------------------------------- page, API, command


def test_page_assets_are_local_and_the_schema_is_published(client):
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        text = client.get(asset).text
        assert len(text) > 500
        urls = {u for u in __import__("re").findall(r"https?://[^\s\"'`)]+", page.text + text)}
        assert urls <= {"http://www.w3.org/2000/svg"}, urls  # nothing fetched from the internet
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/predict/samples", "/api/model", "/api/health"} <= set(schema["paths"])
    assert "PredictionOut" in schema["components"]["schemas"]
    assert client.get("/api/model").json()["outputs"] == ["normal", "af", "other", "noisy"]


def test_serve_command_options(monkeypatch, tmp_path):
    import uvicorn

    from cardiodistill.cli import app

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: started.update(app=application, **kw))
    result = CliRunner().invoke(app, ["serve", "--port", "8123", "--max-upload-mb", "5", "--max-seconds", "90",
                                      "--temp-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert started["host"] == "127.0.0.1" and started["port"] == 8123
    settings = started["app"].state.settings
    assert settings.max_upload_bytes == 5_000_000 and settings.max_seconds == 90 and not settings.allow_identifiers
    assert "cardiodistill.serve" in started["log_config"]["loggers"]
    result = CliRunner().invoke(app, ["serve", "--temp-dir", str(tmp_path / "missing")])
    assert result.exit_code != 0


_SERVE_SAMPLES = """
import cardiodistill.cli
from fastapi.testclient import TestClient
from cardiodistill.serve import create_app

client = TestClient(create_app())
body = {"samples": [0.0] * 3000, "fs": 300, "leads": ["ECG"]}
response = client.post("/api/predict/samples?tracing=true&explain=true", json=body)
assert response.status_code == 200, response.text
print(response.json()["result"]["abstain_reason"])
"""


def test_serve_runs_without_torch(run_without_torch):
    proc = run_without_torch(_SERVE_SAMPLES)
    assert proc.returncode == 0, proc.stderr
    assert "unusable: flat" in proc.stdout

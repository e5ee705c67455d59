"""The `cardiodistill serve` page in a real browser: headless Chromium (the Debian package), driven over
the DevTools protocol by the small client below, uploads a real CinC 2017 recording on a phone-sized
screen, reads the result and checks the tracing was drawn. With CARDIODISTILL_UPDATE_FIGURES=1 the
screenshot replaces docs/figures/serve.png (otherwise it stays in the test's temporary folder).

Skipped when no Chromium is installed (``apt-get install chromium``; or set CARDIODISTILL_CHROMIUM to
a Chromium or Chrome binary) or when ../shared/data is absent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn, python-multipart) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (uvicorn) is not installed")

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT.parent / "shared" / "data" / "cinc2017" / "A00004"  # atrial fibrillation, 30 s
FIGURE = ROOT / "docs" / "figures" / "serve.png"
PHONE = {"width": 412, "height": 915}
MAX_FIGURE_BYTES = 300_000
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")


def find_browser() -> str | None:
    named = os.environ.get("CARDIODISTILL_CHROMIUM")
    if named:
        return named if Path(named).is_file() else shutil.which(named)
    return next(filter(None, map(shutil.which, BROWSERS)), None)


class DevTools:
    """A minimal DevTools-protocol client: one WebSocket (RFC 6455, text frames) to one page target."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        url = urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(4096)
        head, self.pending = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"no WebSocket upgrade: {head[:200]!r}")
        self.next_id = 0

    def _exact(self, n: int) -> bytes:
        while len(self.pending) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            self.pending += chunk
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        size = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + struct.pack(">H", n) if n < 1 << 16
                                                   else bytes([0x80 | 127]) + struct.pack(">Q", n))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + size + mask + masked)

    def _message(self) -> dict:
        data = b""
        while True:
            first, second = self._exact(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            opcode = first & 0x0F
            if opcode == 0x9:  # ping
                self._frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            data += payload
            if first & 0x80:  # final fragment
                return json.loads(data)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._frame(0x1, json.dumps({"id": self.next_id, "method": method, "params": params}).encode())
        while True:
            message = self._message()
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed false for {timeout:g} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "cardiodistill.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--temp-dir", str(tmp_path)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health")
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def browser(tmp_path):
    binary = find_browser()
    if binary is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set CARDIODISTILL_CHROMIUM)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.is_file() and active.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not active.is_file():
            pytest.fail(f"{binary} did not open its DevTools port within 60 s")
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        yield DevTools(page["webSocketDebuggerUrl"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(not RECORD.with_suffix(".hea").is_file(), reason="../shared/data/cinc2017 is not available")
def test_page_reads_a_real_recording_on_a_phone(server, browser, tmp_path):
    url, log = server
    browser.call("Emulation.setDeviceMetricsOverride", **PHONE, deviceScaleFactor=1, mobile=True)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=url + "/")
    browser.wait_for("document.readyState === 'complete' && document.getElementById('model')?.textContent"
                     ".startsWith('Model ')")
    root = browser.call("DOM.getDocument")["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    files = [str(RECORD.with_suffix(".hea")), str(RECORD.with_suffix(".mat"))]
    browser.call("DOM.setFileInputFiles", files=files, nodeId=node)
    state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
    status = browser.evaluate("document.getElementById('status').textContent")
    assert state == "done", status

    verdict = browser.evaluate("document.getElementById('verdict').innerText")
    assert verdict.startswith("Atrial fibrillation") and "probability" in verdict and "%" in verdict
    assert "A00004.hea: 30 s at 300 Hz, 3 windows" in browser.evaluate("document.getElementById('details').innerText")
    assert "yes" in browser.evaluate("document.querySelector('#quality tbody').innerText")
    traces = browser.evaluate("Array.from(document.querySelectorAll('#tracing path.trace'), p => "
                              "[p.dataset.lead, p.getTotalLength(), p.getAttribute('d').split('L').length])")
    assert [lead for lead, _, _ in traces] == ["I"] * 6  # 30 s in 5-s strips on a phone
    assert all(points >= 1200 and length > 100 for _, length, points in traces)  # 250 Hz x 5 s, not a flat line
    assert browser.evaluate("document.querySelectorAll('#tracing .attribution rect').length") > 5
    assert "25 mm/s, 10 mm/mV" in browser.evaluate("document.getElementById('scale').textContent")
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # fits the phone

    height = browser.evaluate("Math.ceil(document.documentElement.scrollHeight)")
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": PHONE["width"], "height": height, "scale": 1})
    png = base64.b64decode(shot["data"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < MAX_FIGURE_BYTES, len(png)
    figure = FIGURE if os.environ.get("CARDIODISTILL_UPDATE_FIGURES") == "1" else tmp_path / FIGURE.name
    figure.write_bytes(png)

    log.seek(0)
    server_log = log.read()
    assert "POST /api/predict" in server_log and "scored " in server_log and "A00004" not in server_log
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("cardiodistill-serve-")]

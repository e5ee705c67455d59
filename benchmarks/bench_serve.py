"""Load and safety of `cardiodistill serve`: throughput, latency, memory, and malformed uploads.

Starts the real command (``python -m cardiodistill.cli serve``: uvicorn, one process, the bundled
model on one onnxruntime thread) on 127.0.0.1 and a free port, then, from this process:

1. **load**: ``--clients`` 1 and 4 concurrent clients (threads, each with its own keep-alive
   connection) upload a real CinC 2017 recording (``A00001.hea`` + ``.mat``, 30 s, 300 Hz) to
   ``/api/predict`` for ``--seconds`` each, ``--repeats`` times; requests/s and p50/p95 latency per
   repeat, the median over repeats reported. The page's request (``?tracing=true&explain=true``:
   every lead for drawing plus the occlusion attribution) is timed the same way with one client.
2. **memory**: the server's resident set size (``/proc/PID/status`` VmRSS) after start-up and every
   ``N / 10`` of ``--requests`` N plain requests (4 clients).
3. **safety**: a batch of malformed uploads - truncated WFDB signal, wrong formats, WFDB headers
   with absurd values, truncated XML, a damaged zip, a zip bomb, a 100 MB file, a chunked body past
   the limit, bad JSON - each must get a 4xx with a one-line message; then ``/api/health`` and a
   good upload (the same result as before) must still answer, and the temporary folder be empty.

Client and server share the machine's cores, so the figures are a lower bound on a dedicated box.

    python benchmarks/bench_serve.py                         # N = 2000
    python benchmarks/bench_serve.py --requests 10000

Results go to ``benchmarks/results/serve.json`` and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

from cardiodistill.io.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
CINC = ROOT.parent / "shared" / "data" / "cinc2017"
RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
MAX_UPLOAD_MB = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def recording() -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (p.name, p.read_bytes())) for p in (CINC / "A00001.hea", CINC / "A00001.mat")]


def load(url: str, clients: int, seconds: float, query: str = "", requests: int | None = None) -> dict:
    """``clients`` threads posting the recording for ``seconds`` (or ``requests`` in all); latencies."""
    files = recording()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    left = [requests]
    stop = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while True:
                with lock:
                    if left[0] is not None:
                        if left[0] <= 0:
                            return
                        left[0] -= 1
                if left[0] is None and time.perf_counter() >= stop:
                    return
                start = time.perf_counter()
                response = client.post(f"/api/predict{query}", files=files)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "failures": len(failures), "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "first_failure": failures[0] if failures else None}


def malformed(folder: Path) -> dict[str, list[tuple[str, tuple[str, bytes]]] | dict]:
    """Name -> multipart files (or a dict of raw request arguments) of each malformed request."""
    hea, mat = (CINC / "A00001.hea").read_bytes(), (CINC / "A00001.mat").read_bytes()
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"0\n" * 25_000_000)  # 50 MB unpacked, 50 kB packed

    def chunks():
        for _ in range(30):
            yield b"1" * 1_000_000

    def hea_with(line: str) -> bytes:
        return f"{line}\nA00001.mat 16+24 1000/mV 16 0 -127 0 0 ECG\n".encode()

    return {
        "truncated WFDB signal (.mat cut to 1 kB)": [("files", ("A00001.hea", hea)),
                                                     ("files", ("A00001.mat", mat[:1000]))],
        "WFDB header without its signal file": [("files", ("A00001.hea", hea))],
        "WFDB header: 1e8 Hz": [("files", ("A00001.hea", hea_with("A00001 1 100000000 9000"))),
                                ("files", ("A00001.mat", mat))],
        "WFDB header: 1e14 samples": [("files", ("A00001.hea", hea_with("A00001 1 300 99999999999999"))),
                                      ("files", ("A00001.mat", mat))],
        "WFDB header: 99999 signals": [("files", ("A00001.hea", hea_with("A00001 99999 300 9000"))),
                                       ("files", ("A00001.mat", mat))],
        "PNG image": [("files", ("photo.png", b"\x89PNG\r\n\x1a\n" + os.urandom(20_000)))],
        "PDF": [("files", ("report.pdf", b"%PDF-1.4\n" + os.urandom(20_000)))],
        "random bytes": [("files", ("blob.bin", os.urandom(50_000)))],
        "empty file": [("files", ("empty.csv", b""))],
        "truncated MUSE-like XML": [("files", ("cut.xml", b"<?xml version='1.0'?><RestingECG><Waveform><Lead"))],
        "XML with a DOCTYPE (entity expansion)": [("files", ("lol.xml", (
            b"<?xml version='1.0'?><!DOCTYPE r [<!ENTITY a 'aaaa'>]><RestingECG>&a;</RestingECG>")))],
        "damaged zip": [("files", ("broken.zip", b"PK\x03\x04" + os.urandom(5000)))],
        "zip bomb (50 MB unpacked)": [("files", ("bomb.zip", bomb.getvalue()))],
        "100 MB file": [("files", ("huge.dat", b"\0" * 100_000_000))],
        "two records at once": [("files", ("A00001.hea", hea)), ("files", ("B.hea", hea)),
                                ("files", ("A00001.mat", mat))],
        "no file": {"data": {"x": "1"}},
        "chunked body past the limit": {"content": chunks(), "json": False},
        "bad JSON": {"content": b"{not json", "json": True},
        "JSON: 1e9 Hz": {"json_body": {"samples": [0.1] * 1000, "fs": 1e9, "leads": ["I"]}},
    }


def safety(url: str, temp: Path, pid: int) -> dict:
    rows = []
    with httpx.Client(base_url=url, timeout=120) as client:
        good = client.post("/api/predict", files=recording()).json()["result"]
        for name, request in malformed(temp).items():
            start = time.perf_counter()
            try:
                if isinstance(request, list):
                    response = client.post("/api/predict", files=request)
                elif "json_body" in request:
                    response = client.post("/api/predict/samples", json=request["json_body"])
                elif "content" in request:
                    response = client.post("/api/predict/samples", content=request["content"],
                                           headers={"content-type": "application/json"})
                else:
                    response = client.post("/api/predict", data=request["data"])
                status, detail = response.status_code, response.json().get("detail", "")
            except httpx.HTTPError as err:
                status, detail = None, f"client error: {type(err).__name__}: {err}"
            healthy = client.get("/api/health").status_code == 200
            rows.append({"case": name, "status": status, "detail": detail, "one_line": "\n" not in str(detail),
                         "ms": round(1000 * (time.perf_counter() - start), 1), "healthy_after": healthy})
        again = client.post("/api/predict", files=recording()).json()["result"]
    leftovers = sorted(str(p) for p in temp.iterdir())
    ok = all(r["status"] is not None and 400 <= r["status"] < 500 and r["one_line"] and r["healthy_after"]
             for r in rows)
    return {"cases": rows, "all_4xx_one_line_and_healthy": ok, "same_result_after": again == good,
            "temp_leftovers": leftovers, "rss_mb_after": round(rss_mb(pid), 1)}


def markdown(results: dict) -> str:
    lines = ["| request | clients | requests/s | p50 ms | p95 ms | requests (per repeat) |", "|---|---|---|---|---|---|"]
    for row in results["load"]:
        lines.append(f"| {row['request']} | {row['clients']} | {row['requests_per_s']} | {row['p50_ms']} | "
                     f"{row['p95_ms']} | {row['requests']} |")
    mem = results["memory"]
    every = ", ".join(map(str, mem["rss_mb"]))
    lines += ["", (f"RSS after start-up {mem['rss_mb'][0]} MB; after {mem['n_requests']:,} requests "
                   f"{mem['rss_mb'][-1]} MB (every {mem['n_requests'] // 10:,}: {every})"),
              "", "| malformed request | status | ms | message |", "|---|---|---|---|"]
    for row in results["safety"]["cases"]:
        lines.append(f"| {row['case']} | {row['status']} | {row['ms']} | {str(row['detail'])[:90]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each load run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="N for the memory run")
    args = parser.parse_args()
    if not (CINC / "A00001.hea").is_file():
        raise SystemExit(f"{CINC} is not here: the benchmark uploads a real CinC 2017 recording")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as temp:
        log = open(Path(temp) / "server.log", "w")  # noqa: SIM115 - closed below
        requests_dir = Path(temp) / "requests"
        requests_dir.mkdir()
        server = subprocess.Popen(
            [sys.executable, "-m", "cardiodistill.cli", "serve", "--port", str(port), "--temp-dir", str(requests_dir),
             "--max-upload-mb", str(MAX_UPLOAD_MB)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/api/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            start_rss = rss_mb(server.pid)
            load(url, 1, 2.0)  # warm-up: readers imported, caches filled
            rows = []
            for query, name, clients_list in (("", "predict (result only)", (1, 4)),
                                              ("?tracing=true&explain=true", "page (tracing + attribution)", (1,))):
                for clients in clients_list:
                    runs = [load(url, clients, args.seconds, query) for _ in range(args.repeats)]
                    assert all(r["failures"] == 0 for r in runs), runs
                    rows.append({"request": name, "clients": clients, "repeats": runs,
                                 **{k: statistics.median(r[k] for r in runs)
                                    for k in ("requests_per_s", "p50_ms", "p95_ms", "requests")}})
                    print(rows[-1]["request"], clients,
                          [(r["requests_per_s"], r["p50_ms"], r["p95_ms"]) for r in runs], flush=True)
            memory = {"n_requests": args.requests, "rss_mb": [round(start_rss, 1)]}
            step = max(1, args.requests // 10)
            for _ in range(10):
                run = load(url, 4, float("inf"), requests=step)
                assert run["failures"] == 0, run
                memory["rss_mb"].append(round(rss_mb(server.pid), 1))
            print("rss", memory, flush=True)
            results = {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other work, Python "
                           f"{platform.python_version()}",
                "record": "cinc2017/A00001 (30 s, 300 Hz, WFDB .hea + .mat, 24 kB)",
                "load": rows, "memory": memory, "safety": safety(url, requests_dir, server.pid),
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    write_json_atomic(RESULTS, results)
    print(markdown(results))


if __name__ == "__main__":
    main()

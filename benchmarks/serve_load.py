"""Load test of ``synthdetect serve`` on loopback: a mix of valid, oversized and corrupt uploads.

Starts a real server process on 127.0.0.1, runs N concurrent clients for a
bounded time, and prints JSON: requests/s, p50/p95/p99 latency (all and per
upload kind), responses by status and error kind, the server's peak memory
(VmHWM from /proc), and whether /healthz stayed healthy during and after.

    python benchmarks/serve_load.py --clients 8 --seconds 20 --model default
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of ``pid``, in KiB; Linux only."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def png(size: int, rng: np.random.Generator) -> bytes:
    # Smooth-ish random images so PNGs stay small like real 32-64 px thumbnails.
    base = rng.integers(0, 256, (size // 4 + 1, size // 4 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_uploads(images: list[Path], max_body: int, seed: int) -> dict[str, list[bytes]]:
    rng = np.random.default_rng(seed)
    valid = [p.read_bytes() for p in images] or [png(int(rng.choice([32, 48, 64])), rng) for _ in range(32)]
    corrupt = []
    for data in valid[:16]:
        damaged = bytearray(data)
        cut = len(damaged) // 2
        corrupt.append(bytes(damaged[:cut]))  # truncated
        damaged[cut:cut + 32] = b"\x13" * 32  # damaged pixel data
        corrupt.append(bytes(damaged))
    corrupt.append(b"%PDF-1.7 not an image")
    oversized = [os.urandom(max_body + 1024)]
    return {"valid": valid, "corrupt": corrupt, "oversized": oversized}


class Client(threading.Thread):
    def __init__(self, port: int, uploads: dict[str, list[bytes]], mix: dict[str, float], stop: float, seed: int):
        super().__init__(daemon=True)
        self.port, self.uploads, self.stop_at = port, uploads, stop
        self.kinds, self.weights = list(mix), list(mix.values())
        self.random = random.Random(seed)
        self.results: list[tuple[str, int, str, float]] = []  # (upload kind, status, error kind, ms)
        self.connection: http.client.HTTPConnection | None = None

    def request(self, body: bytes) -> tuple[int, str]:
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        self.connection.request("POST", "/v1/detect", body=body, headers={"content-type": "image/png"})
        response = self.connection.getresponse()
        payload = response.read()
        if response.getheader("connection", "").lower() == "close":
            self.connection.close()
            self.connection = None
        if response.status == 200:
            return 200, ""
        try:
            return response.status, json.loads(payload)["error"]["kind"]
        except (ValueError, KeyError, TypeError):
            return response.status, "non_json_error"

    def run(self) -> None:
        while time.monotonic() < self.stop_at:
            kind = self.random.choices(self.kinds, self.weights)[0]
            body = self.random.choice(self.uploads[kind])
            t0 = time.perf_counter()
            try:
                status, error = self.request(body)
            except (OSError, http.client.HTTPException) as exc:
                status, error = 0, f"connection: {type(exc).__name__}"
                if self.connection is not None:
                    self.connection.close()
                self.connection = None
            self.results.append((kind, status, error, (time.perf_counter() - t0) * 1000))


class Monitor(threading.Thread):
    """Polls /healthz and the server's memory while the load runs."""

    def __init__(self, port: int, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.port, self.pid, self.interval = port, pid, interval
        self.running = True
        self.checks = 0
        self.failures: list[str] = []
        self.worst_ms = 0.0
        self.peak_rss_kib = 0
        self.peak_pending = 0

    def run(self) -> None:
        while self.running:
            t0 = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                body = json.loads(response.read())
                connection.close()
                if response.status != 200 or body.get("status") != "ok":
                    self.failures.append(f"status {response.status}")
                self.peak_pending = max(self.peak_pending, body.get("pending", 0))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(type(exc).__name__)
            self.worst_ms = max(self.worst_ms, (time.perf_counter() - t0) * 1000)
            self.checks += 1
            self.peak_rss_kib = max(self.peak_rss_kib, proc_memory_kib(self.pid).get("VmRSS", 0))
            time.sleep(self.interval)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None}
    a = np.asarray(values)
    return {"n": len(values), "p50": round(float(np.percentile(a, 50)), 1),
            "p95": round(float(np.percentile(a, 95)), 1), "p99": round(float(np.percentile(a, 99)), 1)}


def wait_healthy(port: int, process: subprocess.Popen, log_path: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            last = (log_path.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"server exited early ({process.returncode}): {last} (log: {log_path})")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not become healthy")


UPLOAD_KINDS = ("valid", "oversized", "corrupt")


def parse_mix(text: str) -> dict[str, float]:
    """``valid=0.7,oversized=0.15,corrupt=0.15`` as weights; anything else stops the run in one line (an unknown
    kind used to kill every client thread, and the report then showed 0 requests as a result)."""
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if kind.strip() not in UPLOAD_KINDS or not value >= 0:
            sys.exit(f"--mix: {part!r} is not KIND=WEIGHT with KIND one of {', '.join(UPLOAD_KINDS)} and WEIGHT >= 0")
        mix[kind.strip()] = value
    if not sum(mix.values()) > 0:
        sys.exit(f"--mix: the weights of {text!r} add up to 0")
    return mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model name or package path for the server")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--max-body-mb", type=float, default=2.0, help="server body limit; oversized uploads exceed it")
    parser.add_argument("--mix", default="valid=0.7,oversized=0.15,corrupt=0.15")
    parser.add_argument("--images", nargs="*", type=Path, default=[], help="real images to use as valid uploads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    mix = parse_mix(args.mix)
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        sys.exit(f"--images: no such file: {', '.join(missing)}")
    if args.clients < 1 or args.seconds <= 0:
        sys.exit("--clients must be at least 1 and --seconds above 0")
    max_body = int(args.max_body_mb * 1024 * 1024)
    uploads = make_uploads(args.images, max_body, args.seed)
    port = free_port()
    command = [sys.executable, "-m", "synthdetect.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--model", args.model, "--workers", str(args.workers), "--max-queue", str(args.max_queue),
               "--max-body-mb", str(args.max_body_mb)]
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"serve_load_{port}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=log)
        try:
            wait_healthy(port, server, log_path)
            idle = proc_memory_kib(server.pid)
            monitor = Monitor(port, server.pid)
            monitor.start()
            stop = time.monotonic() + args.seconds
            clients = [Client(port, uploads, mix, stop, args.seed + i) for i in range(args.clients)]
            t0 = time.monotonic()
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            elapsed = time.monotonic() - t0
            monitor.running = False
            monitor.join()
            # Healthy after: /healthz answers and a valid upload is judged.
            after = Client(port, {"valid": uploads["valid"]}, {"valid": 1.0}, time.monotonic() + 0.01, 99)
            after_status = after.request(uploads["valid"][0])[0]
            after_health = monitor.failures == [] and after_status == 200
            memory = proc_memory_kib(server.pid)
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    results = [r for c in clients for r in c.results]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, _, _, ms in results:
        by_kind[kind].append(ms)
    report = {
        "model": args.model, "clients": args.clients, "seconds": round(elapsed, 2), "workers": args.workers,
        "max_queue": args.max_queue, "max_body_bytes": max_body, "mix": mix, "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "requests": len(results), "requests_per_s": round(len(results) / elapsed, 1),
        "latency_ms": percentiles([r[3] for r in results]),
        "latency_ms_by_upload": {k: percentiles(v) for k, v in sorted(by_kind.items())},
        "responses": {f"{kind} -> {status} {error}".strip(): n
                      for (kind, status, error), n in sorted(Counter((r[0], r[1], r[2]) for r in results).items())},
        "errors_by_kind": dict(Counter(r[2] for r in results if r[2])),
        "server_memory_mib": {"idle_rss": round(idle["VmRSS"] / 1024, 1),
                              "peak_rss_sampled": round(monitor.peak_rss_kib / 1024, 1),
                              "peak_hwm": round(memory["VmHWM"] / 1024, 1),
                              "rss_after": round(memory["VmRSS"] / 1024, 1)},
        "health": {"checks_during": monitor.checks, "failures_during": len(monitor.failures),
                   "worst_healthz_ms": round(monitor.worst_ms, 1), "peak_pending": monitor.peak_pending,
                   "valid_upload_after": after_status, "healthy_after": after_health, "process_alive": alive},
        "server_log_lines": len(lines),
    }
    print(json.dumps(report, indent=2))
    if not (after_health and alive):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

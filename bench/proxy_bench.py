"""Custom-server proxy overhead: Kingpost in front of a server versus the server alone.

Starts ``kingpost serve`` on a custom server (bench/proxy_bench_server.py, a
FastAPI app), then measures, in the same run and against the same child process:

- requests/s of ``POST /predict`` with wrk, through Kingpost and directly;
- streamed events/s of ``GET /stream`` (server-sent events) with a small asyncio
  client counting events as they arrive, through Kingpost and directly.

Direct and proxied runs alternate for ``--rounds`` rounds and the medians are
printed, with the ratio of each round. Targets: through Kingpost >= 0.7x direct
for requests/s, >= 0.9x for events/s. Every load run lasts ``--seconds`` (at
most 20) and targets 127.0.0.1 only.

    PYTHONPATH=. python bench/proxy_bench.py [--seconds 8] [--rounds 3] [--no-access-log]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from kingpost.testing import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
CHILD = HERE / "proxy_bench_server.py"
MAX_SECONDS = 20.0
WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '{"inputs": [1, 2, 3], "name": "bench"}'
wrk.headers["Content-Type"] = "application/json"
"""


@dataclass
class Setup:
    kingpost: ServerProcess
    child_port: int

    @property
    def direct(self) -> str:
        return f"http://127.0.0.1:{self.child_port}"

    @property
    def proxied(self) -> str:
        return self.kingpost.base_url


def start(model_root: Path, kingpost_args: list[str]) -> Setup:
    port = free_port()
    command = shlex.join([sys.executable, str(CHILD), "--port", str(port)])
    config = {
        "model_name": "proxy-bench",
        "docker_server": {
            "start_command": command,
            "server_port": port,
            "predict_endpoint": "/predict",
            "readiness_endpoint": "/health",
            "liveness_endpoint": "/health",
        },
    }
    (model_root / "config.yaml").write_text(yaml.safe_dump(config))
    kingpost = ServerProcess(model_root, *kingpost_args, startup_timeout=120)
    kingpost.start()
    return Setup(kingpost, port)


# -- requests/s with wrk ---------------------------------------------------------


def wrk_requests_per_second(url: str, seconds: float, connections: int, script: Path) -> float:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if match is None or errors is not None:
        raise RuntimeError(f"wrk run failed:\n{output}")
    return float(match[1])


# -- streamed events/s with asyncio ----------------------------------------------


async def stream_events(host: str, port: int, path: str, deadline: float) -> int:
    """Open streams one after another until ``deadline``; count the events received."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").encode()
    events = 0
    while time.monotonic() < deadline:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        tail = b""
        while True:
            data = await reader.read(65536)
            if not data:
                break
            window = tail + data
            events += window.count(b"data: ") - tail.count(b"data: ")
            tail = window[-5:]
        writer.close()
    return events


async def events_per_second(base_url: str, seconds: float, connections: int) -> float:
    url = httpx.URL(base_url)
    assert url.host == "127.0.0.1"
    path = "/stream?n=200&size=32"
    started = time.monotonic()
    deadline = started + seconds
    counts = await asyncio.gather(
        *(stream_events(url.host, url.port or 80, path, deadline) for _ in range(connections))
    )
    return sum(counts) / (time.monotonic() - started)


# -- the run ---------------------------------------------------------------------


def measure_rounds(
    setup: Setup, options: argparse.Namespace, seconds: float, script: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Alternate direct and proxied runs, so that load from elsewhere hits both alike."""
    rps: dict[str, list[float]] = {"direct": [], "kingpost": []}
    eps: dict[str, list[float]] = {"direct": [], "kingpost": []}
    targets = (("direct", setup.direct), ("kingpost", setup.proxied))
    for _, base in targets:  # warm both paths up
        wrk_requests_per_second(base + "/predict", 2, options.connections, script)
        asyncio.run(events_per_second(base, 2, options.streams))
    for _ in range(options.rounds):
        for name, base in targets:
            rps[name].append(
                wrk_requests_per_second(base + "/predict", seconds, options.connections, script)
            )
        for name, base in targets:
            eps[name].append(asyncio.run(events_per_second(base, seconds, options.streams)))
    return rps, eps


def report(
    options: argparse.Namespace,
    seconds: float,
    rps: dict[str, list[float]],
    eps: dict[str, list[float]],
) -> None:
    access_log = "off" if options.no_access_log else "on"
    print(
        f"custom-server proxy: {options.rounds} rounds of {seconds:g} s runs, "
        f"{options.connections} wrk connections, {options.streams} event streams, "
        f"Kingpost access log {access_log}"
    )
    print(f"{'median':24}{'direct':>12}{'kingpost':>12}{'ratio':>8}{'target':>8}")
    for label, values, target in (
        ("POST /predict req/s", rps, 0.7),
        ("SSE events/s", eps, 0.9),
    ):
        direct = statistics.median(values["direct"])
        proxied = statistics.median(values["kingpost"])
        ratios = [k / d for k, d in zip(values["kingpost"], values["direct"], strict=True)]
        ratio = statistics.median(ratios)
        verdict = "ok" if ratio >= target else "BELOW"
        print(
            f"{label:24}{direct:12.0f}{proxied:12.0f}{ratio:8.2f}{target:7.1f}x {verdict}"
            f"   (round ratios {', '.join(f'{r:.2f}' for r in ratios)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3, help="direct/proxied pairs per metric")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--streams", type=int, default=16, help="concurrent event streams")
    parser.add_argument("--no-access-log", action="store_true", help="turn Kingpost's off")
    options = parser.parse_args()
    seconds = min(options.seconds, MAX_SECONDS)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="kingpost-proxy-bench-") as scratch:
        root = Path(scratch)
        script = root / "post.lua"
        script.write_text(WRK_SCRIPT)
        model_root = root / "model"
        model_root.mkdir()
        kingpost_args = ["--no-access-log"] if options.no_access_log else []
        setup = start(model_root, kingpost_args)
        try:
            for base in (setup.direct, setup.proxied):  # both answer before anything is timed
                httpx.post(base + "/predict", json={"warm": True}).raise_for_status()
            rps, eps = measure_rounds(setup, options, seconds, script)
        finally:
            setup.kingpost.stop()
    report(options, seconds, rps, eps)
    return 0


if __name__ == "__main__":
    sys.exit(main())

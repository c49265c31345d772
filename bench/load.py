"""Driving a server with wrk and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class LoadStats:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    server_cpu_us: float = float("nan")  # server CPU time per request, filled in by the caller


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package if it is missing and we may."""
    path = shutil.which("wrk")
    if path is not None:
        return path
    print("wrk is missing: installing it with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed: install it (apt-get install wrk) and run again")
    return path


def post_script(body: bytes) -> Path:
    """A wrk Lua script that POSTs ``body`` as JSON."""
    text = (
        'wrk.method = "POST"\n'
        f"wrk.body = {lua_string(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile(
        "w", suffix=".lua", prefix="kingpost-bench-", delete=False
    ) as handle:
        handle.write(text)
    return Path(handle.name)


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{byte:03d}" for byte in data) + '"'


def run_wrk(
    url: str, script: Path, connections: int, duration: float, threads: int = 1
) -> LoadStats:
    """One wrk run of ``duration`` seconds (wrk itself stops it; we also bound the wait)."""
    seconds = max(1, round(duration))
    command = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    return parse_wrk(done.stdout)


def parse_wrk(report: str) -> LoadStats:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", report)
    total = re.search(r"(\d+) requests in", report)
    if rate is None or total is None:
        raise RuntimeError(f"unreadable wrk report:\n{report}")
    errors = 0
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    if bad is not None:
        errors += int(bad.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report
    )
    if socket_errors is not None:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadStats(
        requests_per_s=float(rate.group(1)),
        p50_ms=_percentile(report, "50%"),
        p99_ms=_percentile(report, "99%"),
        errors=errors,
        requests=int(total.group(1)),
    )


def _percentile(report: str, label: str) -> float:
    found = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", report, re.MULTILINE)
    if found is None:
        return float("nan")
    return float(found.group(1)) * _UNITS[found.group(2)]

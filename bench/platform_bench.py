"""The platform path: requests through ``kingpost up`` versus straight to its one replica.

Starts a platform (``kingpost up`` on a temporary home), deploys the bench echo
and streaming models to production with one replica each (a concurrency
target high enough that nothing parks), reads the replica's address from the
admin API, and then measures, alternating direct and platform runs in the same
process tree:

- requests/s of ``POST /predict`` with wrk (32 connections);
- p50 latency with one wrk connection, and the difference (added p50);
- streamed chunks/s of ``/v1/chat/completions`` server-sent events (16 streams
  of 200 events);
- cold start: the first request to an environment scaled to zero (park, start,
  answer), and promotion switch time (promote -> the environment serves the
  new deployment, its replica started and ready first).

Targets: requests/s >= 0.7x, chunks/s >= 0.8x, added p50 <= 0.3 ms.

    PYTHONPATH=. python bench/platform_bench.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.load import post_script, run_wrk
from bench.streams import run_streams
from kingpost.platform.client import AdminClient
from kingpost.testing import free_port

HERE = Path(__file__).resolve().parent
ECHO = HERE / "models" / "echo_async"
STREAM = HERE / "models" / "stream_async"
MAX_SECONDS = 20.0
CHUNKS = 200
ONE_REPLICA = {"min_replica": 1, "max_replica": 1, "concurrency_target": 1000}


class Platform:
    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home / "up.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kingpost",
                "up",
                "--home",
                str(home),
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.admin = AdminClient(self.url)
        self.admin.wait_until_up(30)

    def deploy(self, directory: Path, model: str, settings: dict[str, object]) -> str:
        self.admin.create_model(model)
        self.admin.autoscaling(model, "production", settings)
        record = self.admin.deploy(directory, model, environment="production")
        self.admin.wait_deployed(record["id"], "production", timeout=120)
        return str(record["id"])

    def replica(self, model: str) -> tuple[int, int]:
        """(port, pid of the ``kingpost serve`` process) of the model's one replica."""
        replica = self.admin.environment(model, "production")["replicas"]["list"][0]
        shell = int(replica["pid"])  # the guard shell; the server is its child
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        return int(replica["address"].rsplit(":", 1)[1]), int(children[0]) if children else shell

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.admin.close()
        self.log.close()


def measure(platform: Platform, seconds: float, rounds: int) -> dict[str, dict[str, list[float]]]:
    echo_port, echo_pid = platform.replica("bench-echo")
    stream_port, _ = platform.replica("bench-stream")
    script = post_script(b'{"inputs": [1, 2, 3], "name": "bench"}')
    urls = {
        "direct": f"http://127.0.0.1:{echo_port}/predict",
        "platform": f"{platform.url}/models/bench-echo/production/predict",
    }
    streams = {
        "direct": (stream_port, "/v1/chat/completions"),
        "platform": (platform.port, "/models/bench-stream/production/sync/v1/chat/completions"),
    }
    body = {"chunks": CHUNKS, "messages": [{"role": "user", "content": "go"}]}
    results: dict[str, dict[str, list[float]]] = {
        metric: {"direct": [], "platform": []}
        for metric in ("rps", "p50", "chunks", "cpu_platform", "cpu_replica")
    }
    for url in urls.values():  # warm both paths up
        run_wrk(url, script, 32, 1)
    for _ in range(rounds):
        for name, url in urls.items():
            before = cpu_seconds(platform.process.pid), cpu_seconds(echo_pid)
            stats = run_wrk(url, script, 32, seconds)
            after = cpu_seconds(platform.process.pid), cpu_seconds(echo_pid)
            if stats.errors:
                raise RuntimeError(f"{stats.errors} errors from {url}")
            results["rps"][name].append(stats.requests_per_s)
            per_request = 1e6 / max(1, stats.requests)
            results["cpu_platform"][name].append((after[0] - before[0]) * per_request)
            results["cpu_replica"][name].append((after[1] - before[1]) * per_request)
        for name, url in urls.items():
            results["p50"][name].append(run_wrk(url, script, 1, seconds).p50_ms)
        for name, (port, path) in streams.items():
            stream = run_streams(port, path, body, CHUNKS, 16, seconds)
            if stream.errors:
                raise RuntimeError(f"{stream.errors} stream errors on {path}")
            results["chunks"][name].append(stream.chunks_per_s)
    return results


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_start(platform: Platform, tries: int) -> list[float]:
    """Seconds for the first request to an environment that scaled to zero."""
    settings = {"min_replica": 0, "autoscaling_window": 0.2, "scale_down_delay": 0.5}
    deployment = platform.deploy(ECHO, "bench-cold", settings)
    url = f"{platform.url}/models/bench-cold/production/predict"
    times = []
    for _ in range(tries):
        deadline = time.monotonic() + 60
        while platform.admin.deployment(deployment)["replicas"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the cold-start deployment did not scale to zero")
            time.sleep(0.1)
        started = time.perf_counter()
        response = httpx.post(url, json={"x": 1}, timeout=120)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return times


def promotion_switch(platform: Platform, root: Path, tries: int) -> list[float]:
    """Seconds from the promote call until the environment serves the new deployment."""
    times = []
    for i in range(tries):
        directory = root / f"echo-{i}"
        shutil.copytree(ECHO, directory)
        (directory / "generation.txt").write_text(str(i))
        record = platform.admin.deploy(directory, "bench-echo")
        platform.admin.wait_deployed(record["id"], None, timeout=120)
        started = time.perf_counter()
        platform.admin.promote(record["id"], "production")
        platform.admin.wait_deployed(record["id"], "production", timeout=120)
        times.append(time.perf_counter() - started)
    return times


def report(results: dict[str, dict[str, list[float]]], seconds: float, rounds: int) -> None:
    print(f"platform path: {rounds} rounds of {seconds:g} s, alternating direct and platform")
    print(f"{'median':34}{'direct':>12}{'platform':>12}{'ratio':>8}  target")
    for metric, label, target in (
        ("rps", "POST /predict req/s (32 conns)", 0.7),
        ("chunks", "SSE chunks/s (16 x 200)", 0.8),
    ):
        direct = statistics.median(results[metric]["direct"])
        through = statistics.median(results[metric]["platform"])
        ratios = [
            p / d
            for p, d in zip(results[metric]["platform"], results[metric]["direct"], strict=True)
        ]
        ratio = statistics.median(ratios)
        verdict = "ok" if ratio >= target else "BELOW"
        print(
            f"{label:34}{direct:12.0f}{through:12.0f}{ratio:7.2f}x  >= {target}x {verdict}"
            f"   (rounds {', '.join(f'{r:.2f}' for r in ratios)})"
        )
    direct = statistics.median(results["p50"]["direct"])
    through = statistics.median(results["p50"]["platform"])
    added = through - direct
    verdict = "ok" if added <= 0.3 else "ABOVE"
    print(
        f"{'p50 latency ms (1 conn)':34}{direct:12.3f}{through:12.3f}{added:+7.3f}   "
        f"<= +0.3 ms {verdict}"
    )
    for metric, label in (
        ("cpu_platform", "platform process CPU us/req"),
        ("cpu_replica", "replica process CPU us/req"),
    ):
        direct = statistics.median(results[metric]["direct"])
        through = statistics.median(results[metric]["platform"])
        print(f"{label:34}{direct:12.1f}{through:12.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold-starts", type=int, default=3)
    options = parser.parse_args()
    seconds = min(options.seconds, MAX_SECONDS)
    with tempfile.TemporaryDirectory(prefix="kingpost-platform-bench-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        platform = Platform(home)
        try:
            platform.deploy(ECHO, "bench-echo", ONE_REPLICA)
            platform.deploy(STREAM, "bench-stream", ONE_REPLICA)
            results = measure(platform, seconds, options.rounds)
            report(results, seconds, options.rounds)
            colds = cold_start(platform, options.cold_starts)
            print(
                "cold start from zero (park, start, answer): median "
                f"{statistics.median(colds):.2f} s   ({', '.join(f'{c:.2f}' for c in colds)})"
            )
            switches = promotion_switch(platform, root, 2)
            print(
                "promotion (candidate starts, gets ready, traffic switches): median "
                f"{statistics.median(switches):.2f} s   ({', '.join(f'{s:.2f}' for s in switches)})"
            )
        finally:
            platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

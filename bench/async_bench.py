"""Async inference against direct sync predict of the same trivial model, in one run.

    python -m bench.async_bench [--seconds 3] [--concurrency 16]

Prints the rates and their ratios to the direct baseline measured in the same run:
- direct: sync ``POST /predict`` with ``concurrency`` wrk connections;
- enqueue: ``POST /async_predict`` answered 201 (each durable in SQLite), over HTTP,
  and through the route handler alone (what the queue takes, HTTP aside);
- completion: the async requests wrk submitted, over the time from the first
  submission to the last one finished (polled with ``GET /async_queue_status``).
Targets: completion >= 0.8x direct, enqueue >= 2,000 requests/s.

For the 0 ms model the server's CPU is what bounds completion (one process, one
event loop), so the two halves of an async request are also measured apart, in a
second server whose model is held unloaded (``ASYNC_TEST_LOAD_GATE``): submission
alone (the worker claims nothing while the model is not ready; every 201 must be
QUEUED), then the drain alone (the gate opened on the pre-filled queue). Their CPU
per request gives the completion ceiling: direct CPU per request over submit +
drain CPU per request, printed next to the completion measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.load import post_script, run_wrk
from kingpost.testing import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "tests" / "async_queue" / "models" / "worker"


async def wait_drained(base: str, timeout: float = 300.0) -> None:
    """Until nothing is queued or running.

    Each ``GET /async_queue_status`` counts the waiting rows, which costs the server
    milliseconds when tens of thousands wait: polled every 50 ms that would be a tenth of
    the drain's CPU. So the wait between polls is half the time the rest should take at
    the rate seen so far (20 ms to 1 s): few polls while the queue is long, frequent ones
    near its end.
    """
    deadline = time.monotonic() + timeout
    last: tuple[float, int] | None = None
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:
            status = (await client.get(base + "/async_queue_status")).json()
            left = status["num_queued_requests"] + status["num_in_progress_requests"]
            if left == 0:
                return
            now = time.monotonic()
            pause = 0.05
            if last is not None and last[1] > left:
                rate = (last[1] - left) / (now - last[0])
                pause = min(1.0, max(0.02, 0.5 * left / rate))
            last = (now, left)
            await asyncio.sleep(pause)
    raise RuntimeError("the queue did not drain")


async def store_enqueue_rate(database: Path, requests: int, concurrency: int) -> float:
    """Durable submissions per second through the route handler alone (no HTTP)."""
    from kingpost.async_queue.routes import AsyncRoutes, QueueTarget
    from kingpost.async_queue.store import AsyncStore

    store = AsyncStore(f"sqlite:///{database}")
    routes = AsyncRoutes(store, QueueTarget("bench/local", "bench", "local"))
    body = b'{"model_input": {"n": 1}}'
    per_client = requests // concurrency

    async def client() -> None:
        for _ in range(per_client):
            await routes.submit(body)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    store.close()
    return per_client * concurrency / elapsed


def model_dir(folder: Path, database: Path) -> Path:
    target = folder / "model"
    shutil.copytree(MODEL, target)
    config = yaml.safe_load((MODEL / "config.yaml").read_text())
    config["async_queue"] = {"database_url": f"sqlite:///{database}", "poll_interval_seconds": 0.05}
    (target / "config.yaml").write_text(yaml.safe_dump(config))
    return target


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(base: str, pid: int, seconds: float, connections: int) -> dict[str, float]:
    """wrk drives both: it costs the server's machine far less than a Python client."""
    predict = post_script(b'{"n": 1}')
    submit = post_script(b'{"model_input": {"n": 1}}')
    run_wrk(base + "/predict", predict, connections, 1)  # warm up
    cpu = cpu_seconds(pid)
    direct = run_wrk(base + "/predict", predict, connections, seconds)
    direct_cpu = (cpu_seconds(pid) - cpu) / direct.requests

    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    enqueue = run_wrk(base + "/async_predict", submit, connections, seconds)
    asyncio.run(wait_drained(base))
    elapsed = time.perf_counter() - started
    async_cpu = (cpu_seconds(pid) - cpu) / enqueue.requests
    if direct.errors or enqueue.errors:
        raise RuntimeError(f"errors: direct {direct.errors}, async {enqueue.errors}")
    return {
        "direct": direct.requests_per_s,
        "enqueue": enqueue.requests_per_s,
        "completion": enqueue.requests / elapsed,
        "direct_cpu_us": direct_cpu * 1e6,
        "async_cpu_us": async_cpu * 1e6,
    }


async def queue_counts(base: str) -> tuple[int, int]:
    async with httpx.AsyncClient(timeout=10) as client:
        status = (await client.get(base + "/async_queue_status")).json()
    return status["num_queued_requests"], status["num_in_progress_requests"]


def measure_apart(
    model: Path, env: dict[str, str], gate: Path, seconds: float, connections: int
) -> dict[str, float]:
    """Submission alone, then the drain alone, each with the server's CPU per request."""
    submit = post_script(b'{"model_input": {"n": 1}}')
    env = {**env, "ASYNC_TEST_LOAD_GATE": str(gate)}
    with ServerProcess(model, "--no-access-log", env=env, wait_ready=False) as server:
        assert server.process is not None
        base, pid = server.base_url, server.process.pid
        cpu = cpu_seconds(pid)
        enqueue = run_wrk(base + "/async_predict", submit, connections, seconds)
        submit_cpu = (cpu_seconds(pid) - cpu) / enqueue.requests
        queued, running = asyncio.run(queue_counts(base))
        # wrk counts the answers it read; a few more may have been accepted as it stopped.
        if (
            enqueue.errors
            or running
            or not enqueue.requests <= queued <= enqueue.requests + connections
        ):
            raise RuntimeError(
                f"with the model held: {enqueue.requests} accepted, {enqueue.errors} errors,"
                f" {queued} queued, {running} running"
            )
        cpu = cpu_seconds(pid)
        started = time.perf_counter()
        gate.touch()
        asyncio.run(wait_drained(base))
        elapsed = time.perf_counter() - started
        drain_cpu = (cpu_seconds(pid) - cpu) / queued
    return {
        "submit": enqueue.requests_per_s,
        "drain": queued / elapsed,
        "submit_cpu_us": submit_cpu * 1e6,
        "drain_cpu_us": drain_cpu * 1e6,
    }


def report(title: str, rates: dict[str, float]) -> None:
    direct = rates["direct"]
    print(title)
    print(f"  direct sync predict             {direct:8.0f} requests/s")
    print(
        f"  async enqueue over HTTP         {rates['enqueue']:8.0f} requests/s"
        f" = {rates['enqueue'] / direct:.2f}x direct (target >= 2000 requests/s)"
    )
    print(
        f"  async completion                {rates['completion']:8.0f} requests/s"
        f" = {rates['completion'] / direct:.2f}x direct (target >= 0.80x)"
    )
    print(
        f"  server CPU per request: direct {rates['direct_cpu_us']:.0f} us,"
        f" async (submit + run) {rates['async_cpu_us']:.0f} us"
    )
    if "submit_cpu_us" not in rates:
        return
    apart = rates["submit_cpu_us"] + rates["drain_cpu_us"]
    ceiling = rates["direct_cpu_us"] / apart
    print("  measured apart (the model held unloaded while submitting, then released):")
    print(
        f"    submission alone              {rates['submit']:8.0f} requests/s,"
        f" {rates['submit_cpu_us']:.0f} us server CPU per request"
    )
    print(
        f"    drain alone (queue pre-filled){rates['drain']:8.0f} requests/s,"
        f" {rates['drain_cpu_us']:.0f} us server CPU per request"
    )
    print(
        f"    completion ceiling: direct {rates['direct_cpu_us']:.0f} us / (submit + drain)"
        f" {apart:.0f} us = {ceiling:.2f}x direct; measured {rates['completion'] / direct:.2f}x"
        f" (0.80x needs submit + drain <= {rates['direct_cpu_us'] / 0.8:.0f} us)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="each wrk run")
    parser.add_argument("--requests", type=int, default=3000, help="for the handler alone")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kingpost-async-bench-") as tmp:
        folder = Path(tmp)
        store_rate = asyncio.run(
            store_enqueue_rate(folder / "handler.db", args.requests, args.concurrency)
        )
        print(f"async enqueue, handler + SQLite   {store_rate:8.0f} requests/s (target >= 2000)")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for delay in (0.0, 0.0005, 0.002):
            run = folder / f"delay-{delay}"
            run.mkdir()
            model = model_dir(run, run / "queue.db")
            env = {"ASYNC_TEST_DELAY": str(delay)}
            with ServerProcess(model, "--no-access-log", env=env) as server:
                assert server.process is not None
                rates = measure(server.base_url, server.process.pid, args.seconds, args.concurrency)
            if delay == 0:  # bound by the server's CPU: what each half costs
                held = folder / "held"
                held.mkdir()
                model = model_dir(held, held / "queue.db")
                gate = held / "gate"
                rates |= measure_apart(model, env, gate, args.seconds, args.concurrency)
            report(f"predict taking {delay * 1000:g} ms, predict_concurrency 2", rates)
    return 0


if __name__ == "__main__":
    sys.exit(main())

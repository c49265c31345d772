"""What ``--ray`` costs: the same model through Ray Serve versus plain ``kingpost serve``.

One run starts each target in turn on bench/models/echo_stream (one at a time,
so they do not share the two cores) and measures, against the plain server
measured in the same run:

- echo: requests/s of ``POST /predict`` over keep-alive connections;
- streaming: tokens/s of ``POST /predict {"chunks": N}`` streams;
- cost: seconds to ready, memory of the whole process tree (PSS, so shared pages
  count once) and its process count, and the tree's CPU while idle.

Targets: ``plain`` (kingpost serve); ``ray`` (--ray as shipped: Kingpost's
front process and a deployment handle, Serve in its throughput-optimised mode
minus direct ingress, which would open replica ports outside loopback);
``ray-serve-defaults`` (the same with Serve's default settings); ``serve-proxy``
and ``serve-proxy-defaults`` (--ray-http serve: Ray Serve's own HTTP proxy on
the port instead of Kingpost's front). Each load lasts ``--seconds`` (at most 20) and
targets 127.0.0.1 only.

    PYTHONPATH=. python bench/ray_bench.py [--seconds 6] [--replicas 1] [--targets plain,ray]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from kingpost.testing import ServerProcess

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "echo_stream"
MAX_SECONDS = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


_SERVE_DEFAULTS = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}


@dataclass(frozen=True)
class Target:
    name: str
    args: tuple[str, ...]
    env: dict[str, str]


TARGETS = {
    "plain": Target("plain", (), {}),
    # Kingpost's front and handles, in Serve's throughput-optimised mode (the default).
    "ray": Target("ray", ("--ray",), {}),
    # The same with Serve's default settings.
    "ray-serve-defaults": Target("ray-serve-defaults", ("--ray",), _SERVE_DEFAULTS),
    # Ray Serve's own HTTP proxy on the port, throughput-optimised, then with defaults.
    "serve-proxy": Target("serve-proxy", ("--ray", "--ray-http", "serve"), {}),
    "serve-proxy-defaults": Target(
        "serve-proxy-defaults", ("--ray", "--ray-http", "serve"), _SERVE_DEFAULTS
    ),
}


@dataclass
class Result:
    name: str
    ready_s: float
    processes: int
    memory_mib: float
    idle_cpu: float  # fraction of one core
    echo_rps: float
    tokens_per_s: float


# -- the process tree -------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    tree = {root}
    while True:
        below = {pid for pid, parent in parents.items() if parent in tree} - tree
        if not below:
            return sorted(tree)
        tree |= below


def tree_memory_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def tree_cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


# -- load -------------------------------------------------------------------------


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes
) -> bytes:
    writer.write(
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )
    header = await reader.readuntil(b"\r\n\r\n")
    if not header.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the server answered {header[:60]!r}")
    for line in header.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":", 1)[1]))
    raise RuntimeError("expected a content-length reply")


async def echo_rps(port: int, connections: int, seconds: float) -> float:
    body = orjson.dumps({"text": "hello", "n": 1})
    stop_at = time.monotonic() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < stop_at:
                await _post(reader, writer, port, body)
                done += 1
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(connections)))
    return done / (time.monotonic() - started)


async def tokens_per_s(port: int, streams: int, chunks: int, seconds: float) -> float:
    body = orjson.dumps({"chunks": chunks})
    request = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )
    stop_at = time.monotonic() + seconds
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        while time.monotonic() < stop_at:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            data = await reader.read()  # Connection: close: the server ends the stream
            writer.close()
            seen = data.count(b"tok")
            if seen != chunks:
                raise RuntimeError(f"a stream brought {seen} of {chunks} tokens")
            tokens += seen

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(streams)))
    return tokens / (time.monotonic() - started)


# -- the run ----------------------------------------------------------------------


def measure(target: Target, options: argparse.Namespace) -> Result:
    args = list(target.args)
    if "--ray" in args:
        args += ["--replicas", str(options.replicas)]
    server = ServerProcess(MODEL, *args, "--no-access-log", env=target.env, startup_timeout=240)
    began = time.monotonic()
    server.start()
    ready = time.monotonic() - began
    assert server.process is not None
    try:
        time.sleep(3)  # let start-up work settle before the idle sample
        pids = tree_pids(server.process.pid)
        cpu_before = tree_cpu_seconds(pids)
        time.sleep(options.idle_seconds)
        idle = (tree_cpu_seconds(pids) - cpu_before) / options.idle_seconds
        memory = tree_memory_mib(pids)
        asyncio.run(echo_rps(server.port, options.connections, 1.0))  # warm-up
        rps = asyncio.run(echo_rps(server.port, options.connections, options.seconds))
        tps = asyncio.run(
            tokens_per_s(server.port, options.streams, options.chunks, options.seconds)
        )
        return Result(target.name, ready, len(pids), memory, idle, rps, tps)
    finally:
        server.stop(grace=60)


def report(results: list[Result], options: argparse.Namespace) -> None:
    base = next((r for r in results if r.name == "plain"), None)
    print(
        f"\nray bench: {options.seconds:g} s loads, {options.connections} echo connections, "
        f"{options.streams} streams of {options.chunks} tokens, --replicas {options.replicas}"
    )
    print(
        f"{'target':18}{'echo req/s':>11}{'ratio':>7}{'tokens/s':>10}{'ratio':>7}"
        f"{'ready s':>9}{'procs':>7}{'PSS MiB':>9}{'idle CPU':>10}"
    )
    for r in results:
        echo_ratio = r.echo_rps / base.echo_rps if base else float("nan")
        token_ratio = r.tokens_per_s / base.tokens_per_s if base else float("nan")
        print(
            f"{r.name:18}{r.echo_rps:11.0f}{echo_ratio:7.2f}{r.tokens_per_s:10.0f}"
            f"{token_ratio:7.2f}{r.ready_s:9.1f}{r.processes:7d}{r.memory_mib:9.0f}"
            f"{r.idle_cpu * 100:9.1f}%"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--targets", default=",".join(TARGETS))
    options = parser.parse_args()
    options.seconds = min(options.seconds, MAX_SECONDS)
    names = [n.strip() for n in options.targets.split(",") if n.strip()]
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    results = []
    for name in names:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(TARGETS[name], options))
    report(results, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

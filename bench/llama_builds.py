"""What the portable llama.cpp build costs: the same server on two builds, same run.

    python bench/llama_builds.py --build native=/path/to/target [--tokens 64] [--rounds 3]

``--build NAME=DIR`` names a directory that holds another llama-cpp-python build
(``pip install --no-deps --target DIR llama-cpp-python`` with other ``CMAKE_ARGS``).
Each build serves ``examples/gemma-chat`` with ``kingpost serve``; the installed one
(portable, from ``scripts/llama-build-env.sh``) is the baseline. Rounds alternate between
the servers so load from other processes hits them alike, and the script prints, per
build, single-stream decode tokens/s and the aggregate tokens/s of N concurrent streams
as medians and as ratios to the baseline of the same run.

A build that cannot run on this CPU (a native build on a VM that traps AMX) fails its
start-up probe; it is reported and left out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
from pathlib import Path

from bench.llm_bench import EXAMPLE, concurrent_streams, single_stream
from kingpost.engines.llama_cpp_threads import available_cores
from kingpost.testing import ServerProcess

BASELINE = "portable (installed)"


def start_build(name: str, target: Path | None) -> ServerProcess | None:
    env = {}
    if target is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])
    server = ServerProcess(EXAMPLE, env=env, startup_timeout=300)
    try:
        return server.start()
    except RuntimeError as error:
        last = [line for line in str(error).splitlines() if "probe" in line][-1:]
        print(f"{name}: does not run here: {' '.join(last) or error}", file=sys.stderr)
        server.stop()
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # A SIGTERM (from `timeout`, say) unwinds through the finally below, which stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    builds: dict[str, Path | None] = {BASELINE: None}
    for item in args.build:
        name, _, directory = item.partition("=")
        builds[name] = Path(directory).resolve()
    servers = {name: start_build(name, target) for name, target in builds.items()}
    running = {name: server for name, server in servers.items() if server is not None}
    if BASELINE not in running:
        raise SystemExit("the installed build does not run here")
    results: dict[str, list[float]] = {}
    try:
        for server in running.values():  # warm-up
            asyncio.run(single_stream(server.url("/v1/completions"), 8))
        for round_number in range(args.rounds):
            order = list(running.items())
            order = order[round_number % len(order) :] + order[: round_number % len(order)]
            for name, server in order:
                url = server.url("/v1/completions")
                rate = asyncio.run(single_stream(url, args.tokens))
                aggregate, _ = asyncio.run(concurrent_streams(url, args.streams, args.tokens))
                results.setdefault(f"{name} single", []).append(rate)
                results.setdefault(f"{name} aggregate", []).append(aggregate)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for server in running.values():
            server.stop()

    median = {key: statistics.median(values) for key, values in results.items()}
    threads = available_cores()
    print(f"gemma-3-270m Q4_K_M, {threads} threads, {args.tokens} tokens, median of {args.rounds}")
    print(f"  {'build':28s} {'1 stream tok/s':>15s} {'ratio':>7s} {'agg tok/s':>10s} {'ratio':>7s}")
    for name in running:
        single, aggregate = median[f"{name} single"], median[f"{name} aggregate"]
        single_ratio = single / median[f"{BASELINE} single"]
        aggregate_ratio = aggregate / median[f"{BASELINE} aggregate"]
        print(
            f"  {name:28s} {single:15.1f} {single_ratio:6.2f}x "
            f"{aggregate:10.1f} {aggregate_ratio:6.2f}x   ({args.streams} streams)"
        )
    for key, values in results.items():
        print(f"  rounds, {key}: " + " ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()

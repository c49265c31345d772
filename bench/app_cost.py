"""The server app's own CPU per request, in process, against a git revision.

    python -m bench.app_cost --against 25c7e8f
    python -m bench.app_cost --against 25c7e8f --rounds 7 --requests 5000

No sockets: each measurement is a fresh process that builds the app of a bench
model, runs its lifespan, and calls it as uvicorn would (a ``/predict`` scope, a
body in one message) ``--requests`` times, timing CPU (``process_time``, all
threads). That leaves out uvicorn, the kernel and the load generator, which on a
shared machine swamp a few microseconds of difference in ``bench.run``. Rounds
alternate between this tree and the revision (checked out with ``git archive``
into a temporary directory) and the table prints medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.servers import MODELS, ROOT, check_out

# (bench model, request body, label)
CASES = [
    ("echo_async", b'{"text": "hello"}', "async echo"),
    ("echo_sync", b'{"text": "hello"}', "sync echo"),
    ("stream_async", b'{"chunks": 50}', "async generator, 50 chunks"),
    ("stream_sync", b'{"chunks": 50}', "sync generator, 50 chunks"),
]

# Runs in the measured process, with the tree under test first on sys.path.
MEASURE = r"""
import asyncio, sys, time
from pathlib import Path

model_dir, body, count = Path(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
try:
    from kingpost.serve import ServeOptions, build_app
except ImportError:  # before the composition root had its own module
    from kingpost.server.runner import ServeOptions, build_app
app = build_app(ServeOptions(model_dir, access_log=False))
headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers,
         "query_string": b"", "http_version": "1.1"}

def receiver():
    # The body once, then nothing until the request ends (as from a client that stays).
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()

    return receive

async def send(message):
    return None

async def main():
    app.startup()
    waiting = getattr(app, "wait_started", None)
    await (waiting() if waiting else app.lifecycle.wait_loaded())
    for _ in range(min(count, 2000)):  # warm up
        await app(dict(scope), receiver(), send)
    started = time.process_time()
    for _ in range(count):
        await app(dict(scope), receiver(), send)
    print((time.process_time() - started) / count * 1e6)
    await app.shutdown()

import uvloop
uvloop.run(main())
"""


def measure(tree: Path, model: str, body: bytes, count: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(MODELS / model), body.decode(), str(count)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring {model} in {tree} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.app_cost", description=__doc__)
    parser.add_argument("--against", required=True, metavar="REV", help="git revision")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians)")
    parser.add_argument("--requests", type=int, default=4000, help="requests per measurement")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 100 <= args.requests <= 100_000:
        parser.error("--rounds must be 1..20 and --requests 100..100000")
    old_tree = check_out(args.against)
    runs: dict[tuple[str, str], list[float]] = {}
    try:
        for round_no in range(args.rounds):
            trees = [("this tree", ROOT), (args.against, old_tree)]
            if round_no % 2:
                trees.reverse()
            for model, body, label in CASES:
                for name, tree in trees:
                    value = measure(tree, model, body, args.requests)
                    runs.setdefault((label, name), []).append(value)
                    print(f"round {round_no + 1} {label} {name}: {value:.2f} us", file=sys.stderr)
    finally:
        shutil.rmtree(old_tree, ignore_errors=True)
    print(f"\napp CPU per request, in process; medians of {args.rounds} alternating rounds")
    print(f"  {'request':28} {'this tree':>10} {args.against:>10} {'ratio':>7}  per round")
    for _, _, label in CASES:
        new, old = runs[(label, "this tree")], runs[(label, args.against)]
        rounds = " ".join(f"{n / o:.3f}" for n, o in zip(new, old, strict=True))
        ratio = statistics.median(new) / statistics.median(old)
        print(
            f"  {label:28} {statistics.median(new):10.2f} {statistics.median(old):10.2f} "
            f"{ratio:6.3f}x  {rounds}"
        )
    print("  ratio: this tree's CPU over the revision's (below 1 is cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

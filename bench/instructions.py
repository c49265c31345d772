"""Instructions per request, counted by valgrind: a cost that machine load does not move.

    python -m bench.instructions --against 1c8c86a^1            # echo_async, 1,000 requests
    python -m bench.instructions --against HEAD~3 --model echo_sync --requests 500

Timings on a shared machine swing by 20 % between runs; the number of instructions a
server executes per request does not. Each tree's ``kingpost serve`` runs under
valgrind's callgrind with counting off; after a warm-up, counting is switched on for
``--requests`` sequential requests on one keep-alive connection, then off, and the
count is divided by the requests. The two trees run at the same time (valgrind is
slow: about a minute each), and the ratio says how much more (above 1) or less this
tree executes per request. It counts instructions only: it says nothing of waits,
cache misses or system calls, so it complements ``bench.run`` rather than replacing it.

Work done on a timer is counted too, and under valgrind a request takes some 50x
longer, so such work weighs 50x more per request than in real use: the async
queue's worker (which polls its store) is therefore turned off in the copy of the
model served (``--keep-async-queue`` leaves it on). Needs ``valgrind``
(``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.servers import HOST, MODELS, ROOT, check_out
from kingpost.ports import free_port

WARM_UP = 300
READY_TIMEOUT_S = 300.0  # imports under valgrind take a while
BODY = {"text": "hello"}


def count(source: Path, model_dir: Path, requests: int) -> float:
    """Instructions per request of ``kingpost serve`` from ``source``."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    out_dir = Path(tempfile.mkdtemp(prefix="kingpost-callgrind-"))
    port = free_port()
    argv = [valgrind, "--tool=callgrind", "--instr-atstart=no"]
    argv += [f"--callgrind-out-file={out_dir}/out.%p", sys.executable, "-m", "kingpost"]
    argv += ["serve", str(model_dir), "--host", HOST, "--port", str(port)]
    argv += ["--no-access-log", "--log-level", "warning"]
    env = dict(os.environ, PYTHONPATH=str(source))
    server = subprocess.Popen(argv, cwd=source, env=env, stderr=subprocess.DEVNULL)
    url = f"http://{HOST}:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            _wait_ready(client, server)
            for _ in range(WARM_UP):
                client.post("/predict", json=BODY).raise_for_status()
            _control(server.pid, "-i", "on")
            for _ in range(requests):
                client.post("/predict", json=BODY).raise_for_status()
            _control(server.pid, "-i", "off")
            _control(server.pid, "-d")
    finally:
        server.terminate()
        server.wait(timeout=120)
    total = sum(_totals(path) for path in out_dir.iterdir())
    shutil.rmtree(out_dir, ignore_errors=True)
    return total / requests


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} before it was ready")
        try:
            if client.get("/v1/models/model").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {READY_TIMEOUT_S:g} s")


def _control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    return 0


def served_copy(model: str, keep_async_queue: bool) -> Path:
    """A copy of ``bench/models/MODEL``, its async queue off unless kept."""
    target = Path(tempfile.mkdtemp(prefix="kingpost-instructions-")) / model
    shutil.copytree(MODELS / model, target)
    if not keep_async_queue:
        with (target / "config.yaml").open("a") as config:
            config.write("\nasync_queue:\n  enabled: false\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="a git revision to compare with")
    parser.add_argument("--model", default="echo_async", help="a model under bench/models")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--keep-async-queue", action="store_true")
    args = parser.parse_args()
    other = check_out(args.against)
    model_dir = served_copy(args.model, args.keep_async_queue)
    try:
        with ThreadPoolExecutor(2) as pool:
            here = pool.submit(count, ROOT, model_dir, args.requests)
            there = pool.submit(count, other, model_dir, args.requests)
            mine, theirs = here.result(), there.result()
    finally:
        shutil.rmtree(other, ignore_errors=True)
        shutil.rmtree(model_dir.parent, ignore_errors=True)
    print(f"{args.model}, {args.requests} sequential requests, instructions per request")
    print(f"  this tree      {mine:12,.0f}")
    print(f"  {args.against:<14} {theirs:12,.0f}")
    print(f"  ratio          {mine / theirs:12.3f}x  (above 1: this tree executes more)")


if __name__ == "__main__":
    main()

"""What tracing costs: Kingpost with tracing off, off again (the noise), and on.

    python -m bench.observe_bench                    # 3 rounds, 5 s per load run
    python -m bench.observe_bench --rounds 5 --duration 8

Each server is ``kingpost serve bench/models/echo_async``; only its environment
differs. "on" exports every span over OTLP/HTTP to a receiver this script runs
on 127.0.0.1 (it answers 200 and discards the body), or a sample of 1 request
in 100 (``OTEL_TRACES_SAMPLER=traceidratio``); "truss file" writes
Truss's one ``predict-endpoint`` span per request to an NDJSON file. The load is
wrk, 32 connections, ``POST /predict``; the figure that matters is the server's
CPU time per request, with its ratio to "off" measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from bench.load import LoadStats, ensure_wrk, post_script, run_wrk
from bench.servers import MODELS, Server, ServerSpec, kingpost

MAX_LOAD_SECONDS = 20.0


@dataclass
class Target:
    label: str
    spec: ServerSpec
    runs: list[LoadStats] = field(default_factory=list)


class DiscardingReceiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def truss_model(workdir: Path) -> Path:
    """The echo model with ``runtime.enable_tracing_data: true``."""
    model = workdir / "echo_traced"
    shutil.copytree(MODELS / "echo_async", model)
    config = model / "config.yaml"
    text = config.read_text()
    if "runtime:" in text:
        text = text.replace("runtime:", "runtime:\n  enable_tracing_data: true", 1)
    else:
        text += "\nruntime:\n  enable_tracing_data: true\n"
    config.write_text(text)
    return model


def targets(receiver: str, workdir: Path) -> list[Target]:
    off = kingpost("echo_async", 1, "--no-access-log")
    on = replace(off, env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver})
    sampled = replace(
        off,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        },
    )
    truss = kingpost("echo_async", 1, "--no-access-log")
    truss.argv[truss.argv.index(str(MODELS / "echo_async"))] = str(truss_model(workdir))
    truss.env = {"OTEL_TRACING_NDJSON_FILE": str(workdir / "spans.ndjson")}
    return [
        Target("tracing off (baseline)", off),
        Target("tracing off, a second server (noise)", replace(off)),
        Target("OTLP tracing on, every request", on),
        Target("OTLP tracing on, 1 request in 100 sampled", sampled),
        Target("Truss predict-endpoint file", truss),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.observe_bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_LOAD_SECONDS or not 1 <= args.rounds <= 20:
        parser.error(f"--duration in (0, {MAX_LOAD_SECONDS:g}], --rounds in 1..20")
    ensure_wrk()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), DiscardingReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    script = post_script(orjson.dumps({"text": "hello"}))
    with tempfile.TemporaryDirectory(prefix="kingpost-observe-bench-") as workdir:
        chosen = targets(endpoint, Path(workdir))
        servers = [Server(target.spec).start() for target in chosen]
        try:
            for server in servers:  # warm up
                run_wrk(server.url("/predict"), script, args.connections, 1)
            for round_no in range(args.rounds):
                order = list(zip(chosen, servers, strict=True))
                by = round_no % len(order)
                for target, server in order[by:] + order[:by]:
                    before = server.cpu_seconds()
                    stats = run_wrk(server.url("/predict"), script, args.connections, args.duration)
                    used = server.cpu_seconds() - before
                    stats = replace(stats, server_cpu_us=used / max(stats.requests, 1) * 1e6)
                    target.runs.append(stats)
                    print(
                        f"round {round_no + 1} {target.label}: {stats.requests_per_s:,.0f} req/s"
                        f" cpu {stats.server_cpu_us:.1f} us/req errors {stats.errors}",
                        flush=True,
                    )
        finally:
            for server in servers:
                server.stop()
            receiver.shutdown()
            script.unlink()
    report(chosen)
    return 0


def report(chosen: list[Target]) -> None:
    base_cpu = statistics.median(r.server_cpu_us for r in chosen[0].runs)
    base_rps = statistics.median(r.requests_per_s for r in chosen[0].runs)
    print("\n| echo, 32 connections | req/s | ratio | CPU us/req | CPU ratio |")
    print("|---|---:|---:|---:|---:|")
    for target in chosen:
        rps = statistics.median(r.requests_per_s for r in target.runs)
        cpu = statistics.median(r.server_cpu_us for r in target.runs)
        print(
            f"| {target.label} | {rps:,.0f} | {rps / base_rps:.2f}x | {cpu:.1f} |"
            f" {cpu / base_cpu:.2f}x |"
        )


if __name__ == "__main__":
    raise SystemExit(main())

"""Kingpost against a bare Starlette app, measured in the same run.

    python -m bench.run                 # 3 rounds, 5 s per load run, 1 worker
    python -m bench.run --workers 2 --rounds 5 --duration 10
    python -m bench.run --against 25c7e8f --only echo --only stream   # this tree vs a commit

Starts every server itself on 127.0.0.1, interleaves the measurements of each
round (rotating their order), and prints medians over rounds with ratios to
the baseline of the same run. No load run lasts over 20 s. With ``--against REV``
the Kingpost rows are also served from ``REV`` (checked out into a temporary
directory) side by side, and a last table compares their server CPU per request
(the raw-ASGI limit and access-log rows are left out then).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from bench.load import LoadStats, ensure_wrk, post_script, run_wrk
from bench.servers import Server, ServerSpec, check_out, granian, kingpost, uvicorn
from bench.streams import StreamStats, run_streams

MAX_LOAD_SECONDS = 20.0
ECHO_BODY = {"text": "hello"}


@dataclass
class EchoTarget:
    label: str
    spec: ServerSpec
    runs: list[LoadStats] = field(default_factory=list)


@dataclass
class StreamTarget:
    label: str
    spec: ServerSpec
    path: str
    body: dict[str, Any]
    runs: list[StreamStats] = field(default_factory=list)


@dataclass
class StartupTarget:
    label: str
    spec: ServerSpec
    ready_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per server")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams")
    parser.add_argument("--chunks", type=int, default=200, help="chunks per stream")
    parser.add_argument(
        "--only",
        choices=("echo", "stream", "startup"),
        action="append",
        help="run only these parts (repeatable)",
    )
    parser.add_argument("--json", dest="json_path", help="also write the raw runs here")
    parser.add_argument(
        "--against", metavar="REV", help="also serve the Kingpost rows from this git revision"
    )
    args = parser.parse_args(argv)
    if not 0 < args.duration <= MAX_LOAD_SECONDS:
        parser.error(f"--duration must be in (0, {MAX_LOAD_SECONDS:g}]")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1..20")
    return args


def echo_targets(workers: int, against: Against | None = None) -> list[EchoTarget]:
    targets = [
        EchoTarget("starlette (baseline)", uvicorn("bench.apps.starlette_echo:app", workers)),
        EchoTarget("raw ASGI, uvicorn (limit)", uvicorn("bench.apps.raw_echo:app", workers)),
        EchoTarget("raw ASGI, granian (limit)", granian("bench.apps.raw_echo:app", workers)),
        EchoTarget("kingpost async predict", kingpost("echo_async", workers, "--no-access-log")),
        EchoTarget("kingpost sync predict", kingpost("echo_sync", workers, "--no-access-log")),
        EchoTarget(
            "kingpost async, access log on",
            # info level: the access log lines are really formatted and written
            kingpost("echo_async", workers, "--log-level", "info"),
        ),
    ]
    if against is not None:
        # Comparing revisions: the limit rows and the access-log row only add noise.
        targets = [t for t in targets if "limit" not in t.label and "log on" not in t.label]
        for model, label in (("echo_async", "async predict"), ("echo_sync", "sync predict")):
            spec = kingpost(model, workers, "--no-access-log", source=against.tree)
            targets.append(EchoTarget(f"kingpost {label} @{against.revision}", spec))
    return targets


def stream_targets(workers: int, chunks: int, against: Against | None = None) -> list[StreamTarget]:
    starlette = uvicorn("bench.apps.starlette_echo:app", workers)
    body = {"chunks": chunks}
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "chunks": chunks}
    targets = [
        StreamTarget("starlette stream (baseline)", starlette, "/stream", body),
        StreamTarget(
            "kingpost async generator",
            kingpost("stream_async", workers, "--no-access-log"),
            "/predict",
            body,
        ),
        StreamTarget(
            "kingpost sync generator",
            kingpost("stream_sync", workers, "--no-access-log"),
            "/predict",
            body,
        ),
        StreamTarget("starlette SSE (baseline)", starlette, "/v1/chat/completions", chat),
        StreamTarget(
            "kingpost chat_completions SSE",
            kingpost("stream_async", workers, "--no-access-log"),
            "/v1/chat/completions",
            chat,
        ),
    ]
    if against is not None:
        tree, rev = against.tree, against.revision
        for model, kind in (("stream_async", "async"), ("stream_sync", "sync")):
            spec = kingpost(model, workers, "--no-access-log", source=tree)
            name = f"kingpost {kind} generator @{rev}"
            targets.append(StreamTarget(name, spec, "/predict", body))
        spec = kingpost("stream_async", workers, "--no-access-log", source=tree)
        sse = f"kingpost chat_completions SSE @{rev}"
        targets.append(StreamTarget(sse, spec, "/v1/chat/completions", chat))
    return targets


@dataclass(frozen=True)
class Against:
    """A revision to compare with, and the temporary directory holding its tree."""

    revision: str
    tree: Path


def startup_targets(workers: int) -> list[StartupTarget]:
    return [
        StartupTarget("starlette (baseline)", uvicorn("bench.apps.starlette_echo:app", workers)),
        StartupTarget("kingpost echo", kingpost("echo_async", workers, "--no-access-log")),
    ]


def rotated(items: list[Any], by: int) -> list[Any]:
    by %= len(items)
    return items[by:] + items[:by]


def start_all(specs: list[ServerSpec]) -> dict[str, Server]:
    """One server per distinct spec, shared by the targets that use it."""
    servers: dict[str, Server] = {}
    for spec in specs:
        key = spec_key(spec)
        if key not in servers:
            servers[key] = Server(spec).start()
    return servers


def spec_key(spec: ServerSpec) -> str:
    return " ".join([*spec.argv, str(spec.cwd), *sorted(f"{k}={v}" for k, v in spec.env.items())])


def server_for(servers: dict[str, Server], spec: ServerSpec) -> Server:
    return servers[spec_key(spec)]


def bench_echo(
    args: argparse.Namespace, log: Callable[[str], None], against: Against | None = None
) -> list[EchoTarget]:
    ensure_wrk()
    targets = echo_targets(args.workers, against)
    script = post_script(orjson.dumps(ECHO_BODY))
    servers = start_all([t.spec for t in targets])
    try:
        for target in targets:  # warm up: first requests pay for imports and caches
            run_wrk(
                server_for(servers, target.spec).url("/predict"),
                script,
                args.connections,
                1,
                args.threads,
            )
        for round_no in range(args.rounds):
            for target in rotated(targets, round_no):
                server = server_for(servers, target.spec)
                cpu_before = server.cpu_seconds()
                stats = run_wrk(
                    server.url("/predict"), script, args.connections, args.duration, args.threads
                )
                cpu_used = server.cpu_seconds() - cpu_before
                stats = replace(stats, server_cpu_us=cpu_used / max(stats.requests, 1) * 1e6)
                target.runs.append(stats)
                log(
                    f"round {round_no + 1} echo {target.label}: {stats.requests_per_s:,.0f} req/s"
                    f" p50 {stats.p50_ms:.2f} ms p99 {stats.p99_ms:.2f} ms"
                    f" cpu {stats.server_cpu_us:.1f} us/req errors {stats.errors}"
                )
    finally:
        for server in servers.values():
            server.stop()
        script.unlink()
    return targets


def bench_streams(
    args: argparse.Namespace, log: Callable[[str], None], against: Against | None = None
) -> list[StreamTarget]:
    targets = stream_targets(args.workers, args.chunks, against)
    servers = start_all([t.spec for t in targets])
    try:
        for target in targets:
            port = server_for(servers, target.spec).port
            run_streams(port, target.path, target.body, args.chunks, args.streams, 1.0)
        for round_no in range(args.rounds):
            for target in rotated(targets, round_no):
                server = server_for(servers, target.spec)
                cpu_before = server.cpu_seconds()
                stats = run_streams(
                    server.port, target.path, target.body, args.chunks, args.streams, args.duration
                )
                cpu_used = server.cpu_seconds() - cpu_before
                stats = replace(stats, server_cpu_us=cpu_used / max(stats.streams, 1) * 1e6)
                target.runs.append(stats)
                log(
                    f"round {round_no + 1} stream {target.label}: "
                    f"{stats.chunks_per_s:,.0f} chunks/s"
                    f" ttfb p50 {stats.ttfb_p50_ms:.2f} ms"
                    f" cpu {stats.server_cpu_us:.0f} us/stream errors {stats.errors}"
                )
    finally:
        for server in servers.values():
            server.stop()
    return targets


def bench_startup(args: argparse.Namespace, log: Callable[[str], None]) -> list[StartupTarget]:
    targets = startup_targets(args.workers)
    for round_no in range(args.rounds):
        for target in rotated(targets, round_no):
            server = Server(target.spec)
            try:
                server.start()
                time.sleep(0.5)  # let start-up work settle before reading memory
                target.ready_s.append(server.ready_after)
                target.rss_mb.append(server.rss_mb())
            finally:
                server.stop()
            log(
                f"round {round_no + 1} startup {target.label}: ready in "
                f"{target.ready_s[-1]:.2f} s, idle RSS {target.rss_mb[-1]:.0f} MB"
            )
    return targets


# -- the table ---------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(
    args: argparse.Namespace,
    echo: list[EchoTarget],
    streams: list[StreamTarget],
    startup: list[StartupTarget],
) -> None:
    import os

    print()
    print(
        f"Kingpost benchmark: {os.cpu_count()} cores, {args.workers} worker(s) per server, "
        f"{args.rounds} rounds x {args.duration:g} s, medians; ratio = to the baseline above it"
    )
    if echo:
        print()
        print(f"echo {json.dumps(ECHO_BODY)}, {args.connections} connections")
        print(
            f"  {'server':34} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'CPU us/req':>10} {'CPU ratio':>9} {'errors':>7}"
        )
        base = median([r.requests_per_s for r in echo[0].runs])
        base_cpu = median([r.server_cpu_us for r in echo[0].runs])
        for e in echo:
            rps = median([r.requests_per_s for r in e.runs])
            cpu = median([r.server_cpu_us for r in e.runs])
            print(
                f"  {e.label:34} {rps:9,.0f} {rps / base:6.2f}x "
                f"{median([r.p50_ms for r in e.runs]):8.2f} "
                f"{median([r.p99_ms for r in e.runs]):8.2f} {cpu:10.1f} {base_cpu / cpu:8.2f}x "
                f"{sum(r.errors for r in e.runs):7d}"
            )
        print(
            "  CPU us/req: server CPU time (all its processes) per request; "
            "CPU ratio: the baseline's over this row's (above 1 is cheaper)"
        )
    if streams:
        print()
        print(f"streaming: {args.streams} concurrent streams x {args.chunks} chunks")
        print(
            f"  {'server':34} {'chunks/s':>9} {'ratio':>7} {'TTFB p50':>9} {'ratio':>7} "
            f"{'errors':>7}"
        )
        base_rate = base_ttfb = float("nan")
        for s in streams:
            rate = median([r.chunks_per_s for r in s.runs])
            ttfb = median([r.ttfb_p50_ms for r in s.runs])
            if "baseline" in s.label:
                base_rate, base_ttfb = rate, ttfb
            print(
                f"  {s.label:34} {rate:9,.0f} {rate / base_rate:6.2f}x {ttfb:7.2f}ms "
                f"{ttfb / base_ttfb:6.2f}x {sum(r.errors for r in s.runs):7d}"
            )
        rates = {s.label: median([r.chunks_per_s for r in s.runs]) for s in streams}
        sync, async_ = rates.get("kingpost sync generator"), rates.get("kingpost async generator")
        if sync and async_:
            print(f"  sync generator / async generator: {sync / async_:.2f}x")
    if startup:
        print()
        print("start-up (process start to ready) and idle memory")
        print(f"  {'server':34} {'ready s':>9} {'RSS MB':>8}")
        for u in startup:
            print(f"  {u.label:34} {median(u.ready_s):9.2f} {median(u.rss_mb):8.1f}")


def print_against(against: Against, echo: list[EchoTarget], streams: list[StreamTarget]) -> None:
    """Each Kingpost row beside the same row served from ``against``: server CPU per request."""
    rows: list[tuple[str, list[float], list[float]]] = []
    targets: list[Any] = [*echo, *streams]
    by_label = {t.label: t for t in targets}
    suffix = f" @{against.revision}"
    for target in targets:
        old = by_label.get(target.label + suffix)
        if old is not None:
            rows.append(
                (
                    target.label,
                    [r.server_cpu_us for r in target.runs],
                    [r.server_cpu_us for r in old.runs],
                )
            )
    if not rows:
        return
    print()
    print(f"against {against.revision}: server CPU per request (per stream for streams)")
    print(f"  {'server':34} {'this tree':>10} {against.revision:>10} {'ratio':>7}  per round")
    for label, new, old in rows:
        rounds = " ".join(f"{n / o:.3f}" for n, o in zip(new, old, strict=False))
        print(
            f"  {label:34} {median(new):10.1f} {median(old):10.1f} "
            f"{median(new) / median(old):6.3f}x  {rounds}"
        )
    print("  ratio: this tree's CPU over the revision's (below 1 is cheaper); rounds interleave")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or ("echo", "stream", "startup"))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    against = Against(args.against, check_out(args.against)) if args.against else None
    try:
        echo = bench_echo(args, log, against) if "echo" in parts else []
        streams = bench_streams(args, log, against) if "stream" in parts else []
        startup = bench_startup(args, log) if "startup" in parts else []
    finally:
        if against is not None:
            shutil.rmtree(against.tree, ignore_errors=True)
    print_table(args, echo, streams, startup)
    if against is not None:
        print_against(against, echo, streams)
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(
                {
                    "args": vars(args),
                    "echo": [asdict(t) for t in echo],
                    "streams": [asdict(t) for t in streams],
                    "startup": [asdict(t) for t in startup],
                },
                handle,
                indent=2,
                default=str,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A bounded soak: twice a model's capacity for a while, then a storm of dropped streams.

    python bench/soak.py                 # 10 minutes, then 10,000 dropped streams
    python bench/soak.py --minutes 1 --streams 2000

Part 1 offers requests at twice what the model can serve (open loop: a new
request every 1/rate s whatever happened to the others) to a model that takes
``SERVICE_S`` per request with ``predict_concurrency`` slots and a bounded wait
queue (``runtime.max_queue``). Every request must get a reply: 200, or a 503/429
refusal; none may time out or fail. After warm-up the server's RSS is sampled;
at the end it must be within 10 % of the post-warm-up value, and the in-flight
gauge must be back to zero.

Part 2 opens streams from a slow sync generator, reads the first chunk and
drops the connection, ``--streams`` times; RSS after must be within 10 % of RSS
after the first tenth, and in-flight back to zero.

The server is a real ``kingpost serve`` on 127.0.0.1; the client is one asyncio
process. The machine is shared: figures are noisy, the checks are generous.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from kingpost.testing import ServerProcess

SERVICE_S = 0.2
CONCURRENCY = 4
MAX_QUEUE = 8
CLIENT_TIMEOUT_S = 30.0
SENDERS = 64  # requests the client has open at once, at most
RSS_TOLERANCE = 0.10

SOAK_MODEL = f"""
import asyncio


class Model:
    async def predict(self, model_input):
        await asyncio.sleep({SERVICE_S})
        return {{"ok": True, "n": model_input.get("n")}}
"""

STREAM_MODEL = """
import time


class Model:
    def predict(self, model_input):
        for i in range(10_000):
            yield f"chunk {i} " + "x" * 1000 + "\\n"
            time.sleep(0.01)
"""


def write_model(root: Path, name: str, source: str, config: str) -> Path:
    directory = root / name
    (directory / "model").mkdir(parents=True)
    (directory / "model" / "model.py").write_text(source)
    (directory / "config.yaml").write_text(config)
    return directory


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def in_flight(client: httpx.Client, url: str) -> float:
    for line in client.get(url).text.splitlines():
        if line.startswith("kingpost_requests_in_flight "):
            return float(line.split()[1])
    raise RuntimeError("no kingpost_requests_in_flight in /metrics")


def wait_idle(server: ServerProcess, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while True:
            value = in_flight(client, server.url("/metrics"))
            if value == 0 or time.monotonic() > deadline:
                return value
            time.sleep(0.1)


async def offer_load(server: ServerProcess, seconds: float, rate: float, warm_up: float) -> dict:
    """Requests arrive every 1/rate s (open loop) and are sent by ``SENDERS`` tasks.

    The senders bound what the client itself holds: an arrival that finds every
    sender busy waits in the client's queue, and one that waited over a second is
    counted as ``late`` (the client, not the server, fell behind; the run still
    counts, but the offered rate was not met).
    """
    outcomes: collections.Counter[str] = collections.Counter()
    pid = server.process.pid if server.process else 0
    samples: list[tuple[float, int]] = []
    arrivals: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    late = 0
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as client:

        async def sender() -> None:
            nonlocal late
            while (item := await arrivals.get()) is not None:
                n, due = item
                if time.monotonic() - due > 1.0:
                    late += 1
                try:
                    reply = await client.post(server.url("/predict"), json={"n": n})
                    outcomes[str(reply.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

        senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
        started = time.monotonic()
        sent = 0
        next_sample = started + warm_up
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate)
            while sent < due:
                arrivals.put_nowait((sent, started + sent / rate))
                sent += 1
            if now >= next_sample:
                samples.append((now - started, rss_bytes(pid)))
                next_sample = now + 5
            await asyncio.sleep(0.002)
        for _ in senders:
            arrivals.put_nowait(None)
        await asyncio.wait(senders, timeout=CLIENT_TIMEOUT_S + 5)
    return {"sent": sent, "outcomes": dict(outcomes), "samples": samples, "late": late}


async def drop_streams(port: int, count: int, parallel: int) -> int:
    """Open ``count`` streams, read each one's first chunk, drop it; returns failures."""
    request = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\n\r\n{}"
    )
    failures = 0
    queue = iter(range(count))

    async def worker() -> None:
        nonlocal failures
        for _ in queue:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 10
                )
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                if not head.startswith(b"HTTP/1.1 200"):
                    failures += 1
                await asyncio.wait_for(reader.read(1024), 10)
                writer.transport.abort()
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                failures += 1

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return failures


def soak(root: Path, minutes: float) -> bool:
    config = f"runtime:\n  predict_concurrency: {CONCURRENCY}\n  max_queue: {MAX_QUEUE}\n"
    model_dir = write_model(root, "soak", SOAK_MODEL, config)
    capacity = CONCURRENCY / SERVICE_S
    rate = 2 * capacity
    seconds = minutes * 60
    warm_up = max(5.0, seconds / 10)
    with ServerProcess(model_dir, "--no-access-log") as server:
        result = asyncio.run(offer_load(server, seconds, rate, warm_up))
        final_in_flight = wait_idle(server)
        assert server.process is not None
        end_rss = rss_bytes(server.process.pid)
    outcomes = result["outcomes"]
    replied = sum(outcomes.get(code, 0) for code in ("200", "503", "429"))
    lost = result["sent"] - replied
    warm_rss = result["samples"][0][1] if result["samples"] else end_rss
    peak_rss = max([rss for _, rss in result["samples"]] + [end_rss])
    growth = end_rss / warm_rss - 1
    print(
        f"soak: {minutes:g} min at {rate:.0f} req/s offered (capacity {capacity:.0f}/s): "
        f"sent {result['sent']}, outcomes {outcomes}, lost {lost}, "
        f"late {result['late']} (waited over 1 s for a free sender)"
    )
    print(
        f"soak: RSS after warm-up {warm_rss / 2**20:.1f} MiB, peak {peak_rss / 2**20:.1f} MiB, "
        f"end {end_rss / 2**20:.1f} MiB ({growth:+.1%}); in-flight at the end {final_in_flight:g}"
    )
    return lost == 0 and abs(growth) <= RSS_TOLERANCE and final_in_flight == 0


def storm(root: Path, streams: int) -> bool:
    model_dir = write_model(root, "streams", STREAM_MODEL, "runtime:\n  predict_concurrency: 64\n")
    with ServerProcess(model_dir, "--no-access-log") as server:
        assert server.process is not None
        pid = server.process.pid
        warm = max(100, streams // 10)
        failures = asyncio.run(drop_streams(server.port, warm, 32))
        wait_idle(server)
        before = rss_bytes(pid)
        started = time.monotonic()
        failures += asyncio.run(drop_streams(server.port, streams - warm, 32))
        elapsed = time.monotonic() - started
        final_in_flight = wait_idle(server)
        after = rss_bytes(pid)
    growth = after / before - 1
    print(
        f"storm: {streams} streams dropped after their first chunk ({elapsed:.1f} s), "
        f"{failures} failed; RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
        f"({growth:+.1%}); in-flight at the end {final_in_flight:g}"
    )
    return failures == 0 and growth <= RSS_TOLERANCE and final_in_flight == 0


def main(argv: list[str] | None = None) -> int:
    # A SIGTERM (``timeout``) unwinds the with-blocks, so no server outlives the script.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=10_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kingpost-soak-") as tmp:
        ok = soak(Path(tmp), args.minutes)
        ok = storm(Path(tmp), args.streams) and ok
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

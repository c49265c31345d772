"""Embeddings/s for concurrent single-sentence clients: dynamic batching vs unbatched.

Both runs go through ``kingpost serve`` on 127.0.0.1 with the same model
(examples/minilm-embeddings); the unbatched run sets ``max_batch_size: 1``.
The servers run one after the other so they never share the CPU.

    python bench/embeddings_bench.py                 # 32 clients, 10 s per run
    python bench/embeddings_bench.py --clients 64 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kingpost.testing import ServerProcess  # noqa: E402

EXAMPLE = ROOT / "examples" / "minilm-embeddings"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A bench measures what a server does under load.",
    "Embeddings map sentences to points in a vector space.",
    "Dynamic batching lets many clients share one forward pass.",
    "It rained all afternoon, so the match was postponed.",
    "She ordered a coffee and opened her laptop.",
    "Prices rose by three percent in the last quarter.",
    "The museum opens at nine on weekdays.",
]


@dataclass
class RunResult:
    label: str
    embeddings: int
    seconds: float
    latencies: list[float]

    @property
    def per_second(self) -> float:
        return self.embeddings / self.seconds

    def describe(self) -> str:
        p50 = statistics.median(self.latencies) * 1000
        p99 = statistics.quantiles(self.latencies, n=100)[98] * 1000
        return (
            f"{self.label:>28}: {self.per_second:8.1f} embeddings/s "
            f"({self.embeddings} in {self.seconds:.1f} s, p50 {p50:.1f} ms, p99 {p99:.1f} ms)"
        )


def write_model_dir(directory: Path, max_batch_size: int, batch_wait_ms: float) -> Path:
    config = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    config["engine"]["max_batch_size"] = max_batch_size
    config["engine"]["batch_wait_ms"] = batch_wait_ms
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return directory


class KeepAliveConnection:
    """One HTTP/1.1 keep-alive connection posting JSON.

    The load generator shares this small machine with the server, so it is kept
    lean: a general-purpose client spends several times the server's CPU per
    request and would cap both runs at its own speed.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_json(self, path: str, body: dict[str, Any]) -> bytes:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = orjson.dumps(body)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in header.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        content = await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {content[:200]!r}")
        return content

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def drive(
    server: ServerProcess, clients: int, duration: float, warmup: float
) -> tuple[int, list[float]]:
    """``clients`` loops each sending one sentence at a time; counts those done after warm-up."""
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + duration
    done = 0
    latencies: list[float] = []

    async def client(number: int) -> None:
        nonlocal done
        connection = KeepAliveConnection("127.0.0.1", server.port)
        i = number
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    return
                text = f"{SENTENCES[i % len(SENTENCES)]} ({i})"
                content = await connection.post_json(
                    "/v1/embeddings", {"model": "m", "input": text, "encoding_format": "base64"}
                )
                finished = time.perf_counter()
                if b'"embedding"' not in content:
                    raise RuntimeError(f"no embedding in the reply: {content[:200]!r}")
                if sent >= measure_from and finished <= stop_at:
                    done += 1
                    latencies.append(finished - sent)
                i += clients
        finally:
            await connection.close()

    await asyncio.gather(*(client(n) for n in range(clients)))
    return done, latencies


def run(label: str, model_dir: Path, args: argparse.Namespace) -> RunResult:
    with ServerProcess(model_dir, "--no-access-log", env={"HF_HUB_OFFLINE": "1"}) as server:
        done, latencies = asyncio.run(drive(server, args.clients, args.duration, args.warmup))
    return RunResult(label, done, args.duration, latencies)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as batched_dir, tempfile.TemporaryDirectory() as single_dir:
        batched_label = f"batched (max {args.max_batch_size})"
        batched_model = write_model_dir(Path(batched_dir), args.max_batch_size, args.batch_wait_ms)
        unbatched_model = write_model_dir(Path(single_dir), 1, 0)
        print(f"{args.clients} concurrent single-sentence clients, {args.duration:.0f} s each")
        batched = run(batched_label, batched_model, args)
        print(batched.describe(), flush=True)
        unbatched = run("unbatched (max_batch_size 1)", unbatched_model, args)
        print(unbatched.describe(), flush=True)

    ratio = batched.per_second / unbatched.per_second
    print(f"ratio batched/unbatched: {ratio:.2f}x (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

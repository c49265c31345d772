"""A small FastAPI server that the proxy tests run as a custom server.

python fastapi_server.py --port 8000 [--startup-delay S] [--ignore-sigterm]
    [--spawn-grandchild]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--startup-delay", type=float, default=0.0)
parser.add_argument("--ignore-sigterm", action="store_true")
parser.add_argument("--spawn-grandchild", action="store_true")
parser.add_argument("--access-log", action="store_true")
options = parser.parse_args()

state: dict[str, object] = {"stream_cancellations": 0, "grandchild": None}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if options.ignore_sigterm:  # after uvicorn installed its handlers
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if options.spawn_grandchild:
        state["grandchild"] = subprocess.Popen(["sleep", "600"])
    print(f"test server ready on port {options.port}", flush=True)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/alive")
async def alive() -> dict[str, str]:
    return {"alive": "yes"}


@app.post("/predict")
async def predict(request: Request) -> dict[str, object]:
    return {"echo": await request.json(), "pid": os.getpid()}


@app.websocket("/predict")
async def predict_websocket(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(f"hello {ws.query_params.get('name', '')} {ws.headers.get('x-request-id')}")
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "bye":
                await ws.close(code=4001, reason="asked to leave")
                return
            if message.get("text") is not None:
                await ws.send_text("echo: " + message["text"])
            else:
                await ws.send_bytes(bytes(reversed(message["bytes"])))
    except WebSocketDisconnect:
        return


@app.api_route("/echo/{rest:path}", methods=ALL_METHODS)
async def echo(request: Request, rest: str) -> dict[str, object]:
    body = await request.body()
    return {
        "method": request.method,
        "path": request.scope["path"],
        "raw_path": request.scope["raw_path"].decode(),
        "query": request.scope["query_string"].decode(),
        "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
        "body": body.decode(errors="replace"),
    }


@app.post("/upload")
async def upload(request: Request) -> dict[str, object]:
    digest = hashlib.sha256()
    size = chunks = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
        chunks += 1
    return {"size": size, "sha256": digest.hexdigest(), "chunks": chunks}


@app.get("/download")
async def download(size: int, chunk: int = 65536) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        left = size
        while left > 0:
            part = min(chunk, left)
            yield b"x" * part
            left -= part

    return StreamingResponse(body(), media_type="application/octet-stream")


@app.get("/events")
async def events(n: int = 3, delay: float = 0.0, size: int = 0) -> StreamingResponse:
    pad = "p" * size

    async def stream() -> AsyncIterator[str]:
        for i in range(n):
            yield f"data: {i}{pad}\n\n"
            if delay:
                await asyncio.sleep(delay)

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/forever")
async def forever() -> StreamingResponse:
    async def stream() -> AsyncIterator[str]:
        try:
            while True:
                yield "data: tick\n\n"
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            state["stream_cancellations"] = int(state["stream_cancellations"]) + 1  # type: ignore[call-overload]
            raise

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/stream-cancellations")
async def stream_cancellations() -> dict[str, object]:
    return {"count": state["stream_cancellations"]}


@app.get("/until-disconnected")
async def until_disconnected(request: Request) -> dict[str, object]:
    while not await request.is_disconnected():
        await asyncio.sleep(0.05)
    state["disconnects_seen"] = int(state.get("disconnects_seen", 0)) + 1  # type: ignore[call-overload]
    return {}


@app.get("/disconnects-seen")
async def disconnects_seen() -> dict[str, object]:
    return {"count": state.get("disconnects_seen", 0)}


@app.get("/slow")
async def slow(seconds: float) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/status/{code}")
async def status(code: int) -> None:
    raise HTTPException(status_code=code, detail=f"asked for {code}")


@app.post("/crash")
async def crash() -> None:
    os._exit(17)


@app.get("/pids")
async def pids() -> dict[str, object]:
    grandchild = state["grandchild"]
    return {
        "pid": os.getpid(),
        "grandchild": grandchild.pid if isinstance(grandchild, subprocess.Popen) else None,
    }


@app.get("/environment")
async def environment(variable: str, secret: str) -> dict[str, object]:
    secret_file = Path(os.environ.get("KINGPOST_SECRETS_DIR", "/nonexistent"), secret)
    return {
        "variable": os.environ.get(variable),
        "secret_file": secret_file.read_text() if secret_file.is_file() else None,
    }


if __name__ == "__main__":
    time.sleep(options.startup_delay)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=options.port,
        access_log=options.access_log,
        log_level="info",
    )

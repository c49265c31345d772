"""The server that bench/proxy_bench.py runs behind Kingpost and also hits directly."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> dict[str, object]:
    return {"echo": await request.json()}


@app.get("/stream")
async def stream(n: int = 100, size: int = 32) -> StreamingResponse:
    event = ("data: " + "x" * size + "\n\n").encode()

    async def events() -> AsyncIterator[bytes]:
        for _ in range(n):
            yield event

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")

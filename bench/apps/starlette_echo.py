"""The baseline: a bare Starlette app, the least a Python web framework does.

Served by uvicorn with uvloop, httptools and no access log. It echoes the JSON
body on /predict and streams the same chunks as the bench models on /stream
and /v1/chat/completions, so every Kingpost row has a like-for-like partner.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


async def predict(request: Request) -> Response:
    return JSONResponse(await request.json())


async def _tokens(count: int) -> AsyncIterator[str]:
    for i in range(count):
        yield f"tok{i:05d} "


async def _events(count: int) -> AsyncIterator[str]:
    for i in range(count):
        yield f'data: {{"index":{i},"delta":"tok{i:05d} "}}\n\n'
    yield "data: [DONE]\n\n"


async def stream(request: Request) -> Response:
    count = int((await request.json())["chunks"])
    return StreamingResponse(_tokens(count), media_type="application/octet-stream")


async def chat_completions(request: Request) -> Response:
    count = int(json.loads(await request.body())["chunks"])
    return StreamingResponse(_events(count), media_type="text/event-stream")


async def liveness(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


app = Starlette(
    routes=[
        Route("/", liveness),
        Route("/predict", predict, methods=["POST"]),
        Route("/stream", stream, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
)

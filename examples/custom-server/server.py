"""A small HTTP server of our own, served by Kingpost as a custom server.

Any server works the same way (vLLM, llama.cpp, TGI, a Node app...): Kingpost
only needs the command that starts it and the port it listens on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError

app = FastAPI()
GREETING = os.environ.get("GREETING", "hi")


class Prompt(BaseModel):
    text: str


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> dict[str, object]:
    # Read as JSON whatever the content type says, so a plain `curl -d` works.
    try:
        prompt = Prompt.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(status_code=422, detail=exc.errors(include_url=False)) from None
    words = prompt.text.split()
    return {"greeting": GREETING, "words": len(words), "shout": prompt.text.upper()}


@app.get("/count")
async def count(to: int = 5) -> StreamingResponse:
    """Server-sent events, one a quarter-second: Kingpost passes each on as it comes."""

    async def events() -> AsyncIterator[str]:
        for n in range(1, to + 1):
            yield f"data: {n}\n\n"
            await asyncio.sleep(0.25)

    return StreamingResponse(events(), media_type="text/event-stream")


@app.websocket("/predict")
async def predict_websocket(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            text = await ws.receive_text()
            await ws.send_text(text.upper())
    except WebSocketDisconnect:
        return


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    port = parser.parse_args().port
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False)

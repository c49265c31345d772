"""A websocket model for frames both ways, close codes and disconnects.

Text frames are echoed (``close`` closes with 4001, ``fail`` raises, ``done``
returns), binary frames come back reversed. When the client goes away, the
handler writes ``ws_<name>`` (``name`` from the query string) under MARKER_DIR.
"""

import os
from pathlib import Path

import fastapi


class Model:
    async def websocket(self, websocket: fastapi.WebSocket):
        name = websocket.query_params.get("name", "unnamed")
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise fastapi.WebSocketDisconnect(message.get("code", 1000))
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"][::-1])
                    continue
                text = message.get("text") or ""
                if text == "close":
                    await websocket.close(code=4001, reason="asked to close")
                    return
                if text == "fail":
                    raise RuntimeError("asked to fail")
                if text == "done":
                    return
                await websocket.send_text(f"echo: {text}")
        except fastapi.WebSocketDisconnect:
            markers = Path(os.environ.get("MARKER_DIR", "."))
            (markers / f"ws_{name}").write_text("disconnected")
            raise

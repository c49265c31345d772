"""A websocket model: echoes each text message with its environment's name."""

import fastapi


class Model:
    def __init__(self, environment=None):
        self.environment = (environment or {}).get("name")

    async def websocket(self, websocket: fastapi.WebSocket):
        while True:
            text = await websocket.receive_text()
            if text == "done":
                return
            await websocket.send_text(f"{self.environment}: {text}")

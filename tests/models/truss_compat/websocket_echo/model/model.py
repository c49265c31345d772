import fastapi


class Model:
    def __init__(self, **kwargs):
        pass

    async def websocket(self, websocket: fastapi.WebSocket):
        while True:
            text = await websocket.receive_text()
            if text == "done":
                return
            if text == "boom":
                raise ValueError("the model refused this message")
            await websocket.send_text(f"echo: {text}")

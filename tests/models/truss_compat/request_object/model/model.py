import fastapi


class Model:
    def __init__(self, **kwargs):
        pass

    async def predict(self, model_input, request: fastapi.Request):
        return {
            "input": model_input,
            "header": request.headers.get("x-custom"),
            "path": request.url.path,
            "disconnected": await request.is_disconnected(),
        }

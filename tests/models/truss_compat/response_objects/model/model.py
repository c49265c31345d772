import time
from typing import Any, Dict

from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


class Model:
    def __init__(self, **kwargs):
        pass

    def predict(self, model_input: Dict[str, Any]):
        kind = model_input.get("kind")
        if kind == "json":
            return JSONResponse({"created": True}, status_code=201, headers={"x-model": "yes"})
        if kind == "text":
            return PlainTextResponse("plain words", media_type="text/plain")

        def chunks():
            for i in range(3):
                time.sleep(0.05)
                yield f"part-{i}\n"

        return StreamingResponse(chunks(), media_type="text/csv")

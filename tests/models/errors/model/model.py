import asyncio

import fastapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


class Model:
    async def predict(self, model_input):
        kind = model_input["kind"]
        if kind == "value_error":
            raise ValueError("secret internal detail")
        if kind == "http_exception":
            raise fastapi.HTTPException(status_code=418, detail="I am a teapot")
        if kind == "response":
            return PlainTextResponse("plain words", status_code=201, headers={"x-model": "yes"})
        if kind == "json_response":
            return JSONResponse({"custom": True}, status_code=202)
        if kind == "streaming_response":

            async def body():
                for i in range(3):
                    yield f"part{i}\n"

            return StreamingResponse(body(), media_type="text/plain")
        if kind == "slow":
            await asyncio.sleep(5)
            return "late"
        if kind == "numpy":
            import numpy as np

            return {"array": np.arange(3), "scalar": np.float32(1.5)}
        return model_input

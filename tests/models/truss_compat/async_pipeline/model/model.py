import asyncio

from fastapi import HTTPException


class Model:
    def __init__(self, **kwargs):
        self._calls = 0

    async def preprocess(self, model_input):
        await asyncio.sleep(0.01)
        if "numbers" not in model_input:
            raise HTTPException(status_code=422, detail="numbers is required")
        return [float(n) for n in model_input["numbers"]]

    async def predict(self, numbers):
        self._calls += 1
        await asyncio.sleep(0.01)
        return {"sum": sum(numbers), "calls": self._calls}

    def postprocess(self, result):
        result["mean_ready"] = True
        return result

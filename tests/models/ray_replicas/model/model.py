"""Holds each request for ``sleep`` seconds and says which process and file answered."""

import asyncio
import os


class Model:
    async def predict(self, model_input):
        await asyncio.sleep(float(model_input.get("sleep", 0)))
        return {"pid": os.getpid(), "file": __file__}

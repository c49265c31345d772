import asyncio
import time


class Model:
    async def predict(self, model_input):
        mode = model_input.get("mode", "async")
        count = int(model_input.get("count", 5))
        delay = float(model_input.get("delay", 0.0))
        if mode == "sync":
            return self._sync_chunks(count, delay)
        if mode == "fail_midway":
            return self._fail_after(2)
        if mode == "fail_first":
            return self._fail_after(0)
        if mode == "stall":
            return self._stall()
        return self._async_chunks(count, delay)

    async def _async_chunks(self, count, delay):
        for i in range(count):
            if delay:
                await asyncio.sleep(delay)
            yield f"chunk-{i};"

    def _sync_chunks(self, count, delay):
        for i in range(count):
            if delay:
                time.sleep(delay)
            yield f"chunk-{i};".encode()

    async def _fail_after(self, n):
        for i in range(n):
            yield f"chunk-{i};"
        raise RuntimeError("the model broke mid-stream")

    async def _stall(self):
        yield "first;"
        await asyncio.sleep(30)
        yield "never;"

    async def chat_completions(self, model_input):
        for i in range(int(model_input.get("count", 3))):
            yield f"data: {i}\n\n"
            await asyncio.sleep(float(model_input.get("delay", 0.0)))
        yield "data: [DONE]\n\n"

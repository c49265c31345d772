"""Streams words back one at a time, as a language model would stream tokens."""

import asyncio


class Model:
    async def predict(self, model_input):
        text = model_input.get("text", "hello from kingpost")
        delay = float(model_input.get("delay", 0.05))
        for word in text.split():
            await asyncio.sleep(delay)
            yield word + " "

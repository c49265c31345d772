import asyncio
from typing import Any, AsyncGenerator, Dict


class Model:
    def __init__(self, **kwargs) -> None:
        self._config = kwargs["config"]

    async def predict(self, model_input: Dict[str, Any]) -> AsyncGenerator[str, None]:
        words = model_input.get("words", ["alpha", "beta", "gamma"])
        for word in words:
            await asyncio.sleep(0.05)
            yield word + "\n"

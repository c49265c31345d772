import time
from typing import Any


class Model:
    def __init__(self, **kwargs) -> None:
        self._config = kwargs["config"]

    def predict(self, model_input: Any):
        def inner():
            yield "first;"
            # Longer than runtime.streaming_read_timeout: the server ends the stream.
            time.sleep(3)
            yield "late;"

        return inner()

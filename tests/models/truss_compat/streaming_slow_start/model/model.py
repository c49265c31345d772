import time
from typing import Any


class Model:
    def __init__(self, **kwargs) -> None:
        pass

    def predict(self, model_input: Any):
        def inner():
            # The first chunk comes later than runtime.streaming_read_timeout.
            time.sleep(3)
            yield "late;"

        return inner()

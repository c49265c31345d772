from typing import Any


class Model:
    def __init__(self, **kwargs) -> None:
        pass

    def predict(self, model_input: Any):
        def inner():
            yield "one;"
            yield "two;"
            if model_input.get("fail", True):
                raise ValueError("the generator broke after two chunks")
            yield "three;"

        return inner()

import time
from typing import Any, Dict, Iterator


class Model:
    def __init__(self, **kwargs) -> None:
        self._data_dir = kwargs["data_dir"]
        self._config = kwargs["config"]
        self._secrets = kwargs["secrets"]
        self._model = None

    def load(self):
        self._model = lambda n: (str(i) for i in range(n))

    def predict(self, model_input: Dict[str, Any]) -> Iterator[str]:
        count = int(model_input.get("count", 5))
        delay = float(model_input.get("delay", 0.0))

        def inner():
            for chunk in self._model(count):
                time.sleep(delay)
                yield chunk

        return inner()

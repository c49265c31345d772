from typing import Any, Dict


class Model:
    def __init__(self, **kwargs):
        self._healthy = True
        self._raise = False

    def load(self):
        self._healthy = True

    def is_healthy(self) -> bool:
        if self._raise:
            raise RuntimeError("health probe exploded")
        return self._healthy

    def predict(self, model_input: Dict[str, Any]) -> Dict[str, Any]:
        self._healthy = bool(model_input.get("healthy", True))
        self._raise = bool(model_input.get("raise", False))
        return {"healthy": self._healthy, "raise": self._raise}

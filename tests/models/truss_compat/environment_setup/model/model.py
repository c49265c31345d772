from typing import Any, Dict, List, Optional


class Model:
    def __init__(self, **kwargs):
        self._environment_at_init = kwargs["environment"]
        self._calls: List[str] = []
        self._environment: Optional[Dict[str, Any]] = None

    def setup_environment(self, environment: Optional[Dict[str, Any]]):
        self._calls.append("setup_environment")
        self._environment = environment

    def load(self):
        self._calls.append("load")

    def predict(self, model_input):
        return {
            "calls": self._calls,
            "environment": self._environment,
            "environment_at_init": self._environment_at_init,
        }

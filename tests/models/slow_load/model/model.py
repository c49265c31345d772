import os
import time
from pathlib import Path


class Model:
    """load() lasts until the file named by LOAD_GATE exists (a minute at most), else 2 s."""

    def load(self):
        if "LOAD_GATE" not in os.environ:
            time.sleep(2)
            return
        gate = Path(os.environ["LOAD_GATE"])
        deadline = time.monotonic() + 60
        while not gate.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{gate} was never created")
            time.sleep(0.01)

    def predict(self, model_input):
        return "loaded"

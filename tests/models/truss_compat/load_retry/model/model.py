class Model:
    def __init__(self, **kwargs):
        self._attempts = 0

    def load(self):
        self._attempts += 1
        if self._attempts == 1:
            raise RuntimeError("Simulated error: the first load fails")

    def predict(self, model_input):
        return {"load_attempts": self._attempts}

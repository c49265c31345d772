class Model:
    def __init__(self, **kwargs):
        self._model = None

    def load(self):
        raise RuntimeError("weights are corrupt: cannot load")

    def predict(self, model_input):
        return model_input

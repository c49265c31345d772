class Model:
    """Returns what it is sent."""

    def __init__(self, **kwargs):
        self._config = kwargs["config"]

    def load(self):
        pass

    async def predict(self, model_input):
        return model_input

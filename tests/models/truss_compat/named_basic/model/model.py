class Model:
    def __init__(self, **kwargs):
        self._model = None

    def load(self):
        self._model = lambda x: x

    def predict(self, model_input):
        if isinstance(model_input, dict) and model_input.get("fail"):
            return self._fail(model_input["fail"])
        if isinstance(model_input, dict) and model_input.get("fail_streaming"):
            return self._stream_then_fail(model_input["fail_streaming"])
        return self._model(model_input)

    def _fail(self, message):
        raise ValueError(message)

    def _stream_then_fail(self, message):
        yield "partial;"
        raise ValueError(message)

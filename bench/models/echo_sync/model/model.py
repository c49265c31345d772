"""Answers its input: a plain (sync) predict, run off the event loop."""


class Model:
    def predict(self, model_input):
        return model_input

"""Answers its input: an async predict with no work of its own."""


class Model:
    async def predict(self, model_input):
        return model_input

"""Echoes its input, or streams ``chunks`` small tokens when asked for them."""


class Model:
    async def predict(self, model_input):
        if "chunks" in model_input:
            return self._tokens(int(model_input["chunks"]))
        return model_input

    async def _tokens(self, count):
        for i in range(count):
            yield f"tok{i:05d} "

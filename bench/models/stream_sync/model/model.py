"""Streams ``chunks`` small tokens from a plain (sync) generator."""


class Model:
    def predict(self, model_input):
        for i in range(int(model_input["chunks"])):
            yield f"tok{i:05d} "

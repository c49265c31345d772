import pydantic


class Model:
    def predict(self, model_input):
        return {"pydantic": pydantic.VERSION}

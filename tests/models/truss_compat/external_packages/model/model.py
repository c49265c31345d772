from greetings import greet


class Model:
    def __init__(self, **kwargs):
        pass

    def predict(self, model_input):
        return greet(model_input["name"])

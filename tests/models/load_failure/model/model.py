class Model:
    def load(self):
        raise RuntimeError("weights are corrupt")

    def predict(self, model_input):
        return None

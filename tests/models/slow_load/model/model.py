import time


class Model:
    def load(self):
        time.sleep(2)

    def predict(self, model_input):
        return "loaded"

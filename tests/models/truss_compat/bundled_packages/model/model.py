from text_tools import shout


class Model:
    def __init__(self, **kwargs):
        self._data_dir = kwargs["data_dir"]
        self._greeting = None

    def load(self):
        self._greeting = (self._data_dir / "greeting.txt").read_text().strip()

    def predict(self, model_input):
        return {"shouted": shout(model_input["text"]), "greeting": self._greeting}

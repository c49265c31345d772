import os


class Model:
    def __init__(self, **kwargs):
        self._config = kwargs["config"]
        self._greeting = os.environ["GREETING"]

    def predict(self, model_input):
        return {
            "greeting": self._greeting,
            "retries": os.environ["RETRIES"],
            "verbose": os.environ["VERBOSE"],
            "tags": self._config["model_metadata"]["tags"],
            "predict_concurrency": self._config["runtime"]["predict_concurrency"],
            "accelerator": self._config["resources"]["accelerator"],
        }

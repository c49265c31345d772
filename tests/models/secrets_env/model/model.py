import os

import greeting_package


class Model:
    def __init__(self, secrets):
        self.secrets = secrets

    def predict(self, model_input):
        name = model_input["secret"]
        try:
            value = self.secrets[name]
        except KeyError as exc:
            return {"error": str(exc)}
        return {
            "secret": value,
            "env": os.environ.get("GREETING_STYLE"),
            "number": os.environ.get("ANSWER"),
            "bundled": greeting_package.greet("kingpost"),
        }

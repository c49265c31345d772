class Model:
    def __init__(self, **kwargs):
        self._secrets = kwargs["secrets"]

    def predict(self, model_input):
        name = model_input["name"]
        try:
            value = self._secrets[name]
        except KeyError as exc:
            return {"found": False, "error": str(exc)}
        return {"found": True, "length": len(value)}

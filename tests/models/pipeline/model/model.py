import fastapi


class Model:
    def __init__(self, config, data_dir, environment):
        self.config = config
        self.data_dir = data_dir
        self.environment = environment
        self.calls = 0

    def kingpost_metrics(self):
        return {"predictions_total": self.calls, "cache_entries": 7}

    def preprocess(self, model_input):
        return {"x": model_input["x"] + 1, "steps": ["preprocess"]}

    async def predict(self, model_input, request: fastapi.Request):
        self.calls += 1
        model_input["steps"].append("predict")
        model_input["request_id"] = request.state.request_id
        model_input["path"] = request.url.path
        model_input["header"] = request.headers.get("x-custom")
        return model_input

    def postprocess(self, model_output):
        model_output["steps"].append("postprocess")
        model_output["x"] *= 10
        model_output["data_file"] = (self.data_dir / "greeting.txt").read_text().strip()
        model_output["environment"] = self.environment
        model_output["model_name"] = self.config["model_name"]
        return model_output

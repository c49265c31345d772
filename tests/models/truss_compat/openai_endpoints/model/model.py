from typing import Any, Dict


class Model:
    def __init__(self, **kwargs):
        pass

    def predict(self, model_input: Dict) -> str:
        return "predict"

    def chat_completions(self, model_input: Dict) -> Any:
        if model_input.get("stream"):
            return (f"data: {word}\n\n" for word in ["chat", "completions"])
        return "chat_completions"

    def completions(self, model_input: Dict) -> str:
        return "completions"

    async def embeddings(self, model_input: Dict) -> str:
        return "embeddings"

    def messages(self, model_input: Dict) -> str:
        return "messages"

    def responses(self, model_input: Dict) -> str:
        return "responses"

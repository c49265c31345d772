from typing import List

import pydantic


class ModelInput(pydantic.BaseModel):
    prompt: str
    repeat: int = pydantic.Field(default=1, ge=1, le=10)


class ModelOutput(pydantic.BaseModel):
    texts: List[str]
    total_length: int


class Model:
    def __init__(self, **kwargs):
        self._prefix = "> "

    def predict(self, model_input: ModelInput) -> ModelOutput:
        texts = [self._prefix + model_input.prompt] * model_input.repeat
        return ModelOutput(texts=texts, total_length=sum(len(t) for t in texts))

"""GET /v1/models/model/schema, derived from the pipeline's pydantic annotations."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any

import pydantic

from kingpost.model.descriptor import ModelDescriptor
from kingpost.model.schema import ModelSchema
from kingpost.testing import InProcessServer
from tests.conftest import MODELS


class Question(pydantic.BaseModel):
    text: str


class Answer(pydantic.BaseModel):
    text: str
    score: float


class Cleaned(pydantic.BaseModel):
    words: list[str]


def schema_of(cls: type) -> ModelSchema | None:
    return ModelSchema.from_descriptor(ModelDescriptor.from_class(cls))


def test_input_and_output_come_from_predict() -> None:
    class Model:
        def predict(self, model_input: Question) -> Answer:
            return Answer(text=model_input.text, score=1.0)

    schema = schema_of(Model)
    assert schema is not None
    assert schema.input_schema == Question.model_json_schema()
    assert schema.output_schema == Answer.model_json_schema()
    assert schema.supports_streaming is False


def test_preprocess_gives_the_input_and_postprocess_the_output() -> None:
    class Model:
        def preprocess(self, model_input: Question) -> Cleaned:
            return Cleaned(words=model_input.text.split())

        def predict(self, model_input: Cleaned) -> dict[str, Any]:
            return {"n": len(model_input.words)}

        def postprocess(self, model_output: dict[str, Any]) -> Answer:
            return Answer(text="", score=model_output["n"])

    schema = schema_of(Model)
    assert schema is not None
    assert schema.input_schema is not None and schema.input_schema["title"] == "Question"
    assert schema.output_schema is not None and schema.output_schema["title"] == "Answer"


def test_a_generator_predict_supports_streaming() -> None:
    class Model:
        def predict(self, model_input: Question) -> Generator[str, None, None]:
            yield model_input.text

    class AsyncModel:
        async def predict(self, model_input: Question) -> AsyncGenerator[str, None]:
            yield model_input.text

    class EitherModel:
        def predict(self, model_input: Question) -> Answer | Iterator[str]:
            return Answer(text=model_input.text, score=0)

    for cls in (Model, AsyncModel):
        schema = schema_of(cls)
        assert schema is not None and schema.supports_streaming
        assert schema.output_schema is None
    either = schema_of(EitherModel)
    assert either is not None and either.supports_streaming
    assert either.output_schema == Answer.model_json_schema()


def test_a_container_return_is_not_streaming() -> None:
    class Model:
        def predict(self, model_input: Question) -> list[str]:
            return [model_input.text]

    schema = schema_of(Model)
    assert schema is not None and schema.supports_streaming is False


def test_a_model_without_pydantic_types_has_no_schema() -> None:
    class Model:
        def predict(self, model_input: dict[str, Any]) -> dict[str, Any]:
            return model_input

    assert schema_of(Model) is None


def test_the_schema_route_is_404_for_an_untyped_model(
    start_in_process: Callable[..., InProcessServer],
) -> None:
    server = start_in_process(MODELS / "sync_echo")
    response = server.client.get("/v1/models/model/schema")
    assert response.status_code == 404
    assert response.json()["error"] == "No schema found"

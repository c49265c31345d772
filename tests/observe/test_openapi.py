"""The OpenAPI document: what it describes, and schemathesis against a real server."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from kingpost.model.descriptor import ModelDescriptor
from kingpost.server.openapi import build_openapi
from kingpost.testing import ServerProcess

# Each operation gets this many generated requests per mode, all within the time bound.
EXAMPLES = 8
TIME_BOUND = 40.0


class Typed:
    def predict(self, inputs: dict) -> dict:  # untyped: any JSON in and out
        return inputs


def test_an_untyped_model_documents_predict_as_any_json_and_no_v1_routes() -> None:
    document = build_openapi(ModelDescriptor.from_class(Typed), title="t")
    assert "/predict" in document["paths"] and "/v1/chat/completions" not in document["paths"]
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {}
    assert document["x-kingpost"]["hooks"] == ["predict"]


@pytest.fixture(scope="module")
def llm(start_observed: Any) -> ServerProcess:
    return start_observed("observed_llm")


def test_served_document_names_typed_and_protocol_schemas(llm: ServerProcess) -> None:
    document = httpx.get(llm.url("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for path in ("/predict", "/v1/chat/completions", "/v1/messages", "/v1/responses", "/metrics"):
        assert path in paths, path
    predict = paths["/predict"]["post"]
    ref = predict["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    question = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(question["properties"]) == {"text", "times"}
    chat = paths["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ChatCompletionRequest"
    )
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    error = chat["responses"]["400"]["content"]["application/json"]["schema"]
    assert error["$ref"].endswith("OpenAIError")
    messages_error = paths["/v1/messages"]["post"]["responses"]["400"]["content"]
    assert messages_error["application/json"]["schema"]["$ref"].endswith("AnthropicError")


def test_schemathesis_finds_no_server_errors_and_no_response_off_its_schema(
    llm: ServerProcess,
) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(llm.url("/openapi.json"))
    deadline = time.monotonic() + TIME_BOUND
    tested: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                if time.monotonic() < deadline:
                    case.call_and_validate(base_url=llm.base_url, checks=checks, timeout=10)

            try:
                run()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing to get wrong
        tested.append(operation.label)
    assert "POST /v1/chat/completions" in tested and "POST /predict" in tested
    assert time.monotonic() < deadline, "the run was cut short by its time bound"

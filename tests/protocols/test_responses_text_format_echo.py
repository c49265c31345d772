"""A response object echoes the request's text.format under the API's own key names."""

from __future__ import annotations

from kingpost.protocols import ResponsesRequest, response_object

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_the_json_schema_is_echoed_as_schema() -> None:
    request = ResponsesRequest.model_validate(
        {
            "model": "m",
            "input": "x",
            "text": {"format": {"type": "json_schema", "name": "city", "schema": SCHEMA}},
        }
    )
    echoed = response_object("{}", model="m", request=request).model_dump(mode="json")
    assert echoed["text"]["format"]["schema"] == SCHEMA
    assert "schema_" not in echoed["text"]["format"]

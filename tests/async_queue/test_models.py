"""The async request body: defaults, ranges, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from kingpost.async_queue.models import AsyncPredictBody
from kingpost.async_queue.policy import backoff_seconds, classify
from kingpost.errors import InvalidInputError


def test_defaults_are_the_platforms() -> None:
    body = AsyncPredictBody.parse({"model_input": {"x": 1}})
    assert (body.priority, body.max_time_in_queue_seconds, body.webhook_endpoint) == (0, 600, None)
    retry = body.inference_retry_config
    assert (retry.max_attempts, retry.initial_delay_ms, retry.max_delay_ms) == (3, 1000, 5000)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "model_input"),
        ({"model_input": 1, "priority": 3}, "priority"),
        ({"model_input": 1, "priority": -1}, "priority"),
        ({"model_input": 1, "priority": "1"}, "priority"),
        ({"model_input": 1, "max_time_in_queue_seconds": 9}, "max_time_in_queue_seconds"),
        ({"model_input": 1, "max_time_in_queue_seconds": 259201}, "max_time_in_queue_seconds"),
        ({"model_input": 1, "inference_retry_config": {"max_attempts": 11}}, "max_attempts"),
        ({"model_input": 1, "inference_retry_config": {"initial_delay_ms": -1}}, "initial_delay"),
        ({"model_input": 1, "inference_retry_config": {"max_delay_ms": 60001}}, "max_delay_ms"),
    ],
)
def test_a_bad_body_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        AsyncPredictBody.parse(body)


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="model_input"):
        AsyncPredictBody.parse([1, 2])


def test_back_off_doubles_up_to_the_cap() -> None:
    delays = [backoff_seconds(n, 1000, 5000) for n in (1, 2, 3, 4)]
    assert delays == [1.0, 2.0, 4.0, 5.0]


@pytest.mark.parametrize(
    ("status", "code", "retried"),
    [
        (500, "MODEL_PREDICT_ERROR", True),
        (502, "MODEL_PREDICT_ERROR", True),
        (503, "MODEL_NOT_READY", True),
        (504, "MODEL_PREDICT_TIMEOUT", True),
        (400, "MODEL_INVALID_INPUT", False),
        (404, "MODEL_DOES_NOT_EXIST", False),
        (429, "MODEL_PREDICT_ERROR", False),
    ],
)
def test_only_500_502_503_504_are_retried(status: int, code: str, retried: bool) -> None:
    error = classify(status, "x")
    assert (error.code.value, error.retryable) == (code, retried)

"""Traces from real requests: to an OTLP receiver the test runs, and Truss's NDJSON file."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kingpost.observe import tracing
from kingpost.testing import ServerProcess
from tests.observe.conftest import MODELS

pytest.importorskip("opentelemetry.sdk", reason="the otel extra: pip install 'kingpost[otel]'")
pytest.importorskip("opentelemetry.proto", reason="the test extra has opentelemetry-proto")
from tests.observe.otlp_receiver import OTLPReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def observed(model_dir: Path, env: dict[str, str]) -> ServerProcess:
    return ServerProcess(model_dir, env=env)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def traced(receiver: OTLPReceiver) -> Iterator[ServerProcess]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "observed-test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    with observed(MODELS / "observed_llm", env) as server:
        yield server


def test_a_request_span_continues_the_incoming_traceparent(
    traced: ServerProcess, receiver: OTLPReceiver
) -> None:
    reply = httpx.post(
        traced.url("/predict"), json={"text": "hi"}, headers={"traceparent": TRACEPARENT}
    )
    assert reply.status_code == 200
    [request] = [s for s in receiver.wait_for("POST predict") if s["trace_id"] == TRACE_ID]
    assert request["parent_span_id"] == PARENT_ID
    assert request["kind"] == 2  # SERVER
    assert request["attributes"]["http.response.status_code"] == 200
    assert request["attributes"]["kingpost.request_id"] == reply.headers["x-request-id"]
    assert request["resource"]["service.name"] == "observed-test"
    hooks = [s for s in receiver.wait_for("predict") if s["trace_id"] == TRACE_ID]
    assert [hook["parent_span_id"] for hook in hooks] == [request["span_id"]]


def test_a_generation_span_has_the_genai_attributes(
    traced: ServerProcess, receiver: OTLPReceiver
) -> None:
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    reply = httpx.post(
        traced.url("/v1/chat/completions"),
        json={"messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5},
        headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"},
    )
    assert reply.status_code == 200
    usage = reply.json()["usage"]
    spans = {s["name"]: s for s in receiver.spans if s["trace_id"] == trace_id}
    deadline = time.monotonic() + 10
    while "chat observed-llm" not in spans and time.monotonic() < deadline:
        time.sleep(0.05)
        spans = {s["name"]: s for s in receiver.spans if s["trace_id"] == trace_id}
    generation = spans["chat observed-llm"]
    attributes = generation["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "observed-llm"
    assert attributes["gen_ai.response.model"] == "observed-llm"
    assert attributes["gen_ai.request.max_tokens"] == 5
    assert attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 5
    assert attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert attributes["gen_ai.server.time_to_first_token"] > 0
    hook = receiver.wait_for("chat_completions")[-1]
    assert generation["parent_span_id"] == hook["span_id"]
    assert hook["parent_span_id"] == spans["POST chat_completions"]["span_id"]


def test_truss_enable_tracing_data_writes_one_predict_endpoint_span_per_request(
    tmp_path: Path,
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(MODELS / "observed_llm", model_dir)
    config = model_dir / "config.yaml"
    config.write_text(
        config.read_text().replace("runtime:", "runtime:\n  enable_tracing_data: true")
    )
    spans_file = tmp_path / "spans.ndjson"
    server = observed(model_dir, {"OTEL_TRACING_NDJSON_FILE": str(spans_file)})
    with server, httpx.Client() as client:
        for index in range(3):
            headers = {"traceparent": TRACEPARENT} if index == 0 else {}
            client.post(server.url("/predict"), json={"text": "hi"}, headers=headers)
        client.post(
            server.url("/v1/chat/completions"),
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        client.get(server.url("/metrics"))
    spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    assert [span["name"] for span in spans] == ["predict-endpoint"] * 3
    assert spans[0]["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert spans[0]["parent_id"] == f"0x{PARENT_ID}"
    assert spans[0]["attributes"]["http.response.status_code"] == 200
    assert spans[0]["resource"]["attributes"]["service.name"] == "TrussServer"


def test_tracing_is_off_unless_the_environment_asks() -> None:
    assert tracing.configure(environ={}) is None
    assert tracing.ACTIVE is None
    assert tracing.configure(True, environ={}) is None  # Truss's flag needs its file too
    assert not tracing.wants_otlp(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}
    )
    assert not tracing.wants_otlp({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing.wants_otlp({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})


async def test_with_tracing_off_the_hook_runners_are_not_wrapped() -> None:
    from kingpost.serve import ServeOptions, build_app
    from kingpost.server.invoke import HookRunner

    app = build_app(ServeOptions(MODELS / "observed_llm"))
    assert tracing.ACTIVE is None
    app.startup()
    try:
        assert await app.wait_started() is None
        hooks = app.service.hooks  # type: ignore[union-attr]
        assert hooks and all(type(runner) is HookRunner for runner in hooks.values())
    finally:
        await app.shutdown()

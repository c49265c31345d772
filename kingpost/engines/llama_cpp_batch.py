"""Continuous batching of many sequences through one llama.cpp context.

One thread owns the llama.cpp context. Each step it builds a single batch holding
the next token of every running sequence (plus chunks of new prompts), decodes it
once, and samples each sequence from its own row of logits with its own sampler
chain. Sequences join and leave between steps, so a new request never waits for
the others to finish, and a cancelled one frees its slot at the next step.

Each slot (a llama.cpp sequence id with its own KV cache) keeps what its last
sequence left there. A new sequence takes the free slot sharing the longest prefix
with its prompt and decodes only the rest (the prefix cache: a shared system
prompt or a growing chat is read once); with no such slot it takes the one least
recently used, so the cache is bounded by the slots themselves.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from kingpost.engines.generation import (
    GeneratedToken,
    GenerationOutcome,
    GenerationRequest,
    SamplingParams,
    StopReason,
)
from kingpost.engines.llama_cpp_sampling import (
    Candidates,
    SamplingStats,
    TokenSampler,
    VocabularyIndex,
    candidate_tiers,
    free_samplers,
)
from kingpost.engines.llama_cpp_threads import ThreadGovernor
from kingpost.observe.metrics import GENERATIONS
from kingpost.protocols import TokenLogprob, TopLogprob

logger = logging.getLogger("kingpost.engines.llama_cpp")

SequenceEvent = GeneratedToken | GenerationOutcome | BaseException


class Outbox:
    """Events for the streams of one event loop, handed over together after each step.

    Waking a loop from another thread (``call_soon_threadsafe``) writes to its self-pipe;
    doing it for every token of every stream costs the loop a wake-up per token, on
    cores the decode needs. The scheduler puts a step's events here and sends them with
    one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._events: list[tuple[Callable[[SequenceEvent], None], SequenceEvent]] = []
        self._scheduled = False

    def put(self, deliver: Callable[[SequenceEvent], None], event: SequenceEvent) -> None:
        with self._lock:
            self._events.append((deliver, event))

    def send(self) -> None:
        """Wake the loop to deliver what was put (a no-op while a delivery is pending)."""
        with self._lock:
            if not self._events or self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is waiting for these any more
            with self._lock:
                self._events.clear()
                self._scheduled = False

    def _deliver(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            self._scheduled = False
        for deliver, event in events:
            deliver(event)


class Sequence:
    """One generation in flight: its tokens, sampler and where its events go.

    ``deliver`` runs on the event loop of ``outbox``, once per event.
    """

    def __init__(
        self,
        request: GenerationRequest,
        deliver: Callable[[SequenceEvent], None],
        outbox: Outbox,
        grammar: str | None = None,
    ) -> None:
        assert isinstance(request.prompt, list)
        self.prompt: list[int] = request.prompt
        self.params: SamplingParams = request.params
        self.grammar = grammar
        self.deliver = deliver
        self.outbox = outbox
        self.cancelled = False
        self.seq_id = -1
        self.slot: Slot | None = None
        self.copy_from: Slot | None = None  # a busy slot whose cached prefix it starts from
        self.position = 0  # tokens of this sequence already in the KV cache
        self.pending: list[int] = list(self.prompt)  # tokens to decode next
        self.generated = 0
        self.cached = 0  # prompt tokens found in the slot's KV cache
        self.row = -1  # the batch row holding this sequence's next-token logits
        self.sampler: TokenSampler | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")


# A busy slot's prefix is copied over (a whole-cache copy) when it is this many tokens
# longer than the best free slot's: cheaper than decoding them again.
COPY_THRESHOLD = 32


@dataclass
class Slot:
    """One llama.cpp sequence id and the tokens its KV cache holds, in order."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    last_used: int = 0


class PrefixSlots:
    """Hands out slots, preferring the one whose cached tokens share the longest prefix.

    >>> slots = PrefixSlots(2)
    >>> slot, _, _ = slots.take([1, 2, 3]); slot.tokens = [1, 2, 3, 9]; slots.give_back(slot)
    >>> slots.take([1, 2, 4])[:2] == (slot, 2)
    True
    """

    def __init__(self, count: int, *, enabled: bool = True) -> None:
        self._slots = [Slot(seq_id) for seq_id in range(count)]
        self._enabled = enabled
        self._clock = 0
        self.lookups = 0
        self.hits = 0
        self.reused_tokens = 0

    def has_free(self) -> bool:
        return any(not slot.busy for slot in self._slots)

    def take(self, prompt: list[int]) -> tuple[Slot, int, Slot | None]:
        """A free slot for ``prompt``, how many of its first tokens are cached, and the
        slot to copy them from when a busy one holds a longer prefix than any free one.

        Never all of the prompt counts as cached: its last token is decoded again for
        its logits.
        """
        free = [slot for slot in self._slots if not slot.busy]
        chosen, shared, source = min(free, key=lambda slot: slot.last_used), 0, None
        if self._enabled:
            for slot in free:
                common = common_prefix(slot.tokens, prompt)
                if common > shared:
                    chosen, shared = slot, common
            for slot in self._slots:
                common = common_prefix(slot.tokens, prompt) if slot.busy else 0
                if common > shared + COPY_THRESHOLD:
                    source, shared = slot, common
            if source is not None:
                chosen = min(free, key=lambda slot: slot.last_used)
        chosen.busy = True
        return chosen, max(min(shared, len(prompt) - 1), 0), source

    def count(self, reused: int) -> None:
        """Count one lookup that found ``reused`` tokens in the cache (for /metrics)."""
        self.lookups += 1
        if reused > 0:
            self.hits += 1
            self.reused_tokens += reused

    def give_back(self, slot: Slot) -> None:
        self._clock += 1
        slot.busy, slot.last_used = False, self._clock
        if not self._enabled:
            slot.tokens = []


def common_prefix(cached: list[int], prompt: list[int]) -> int:
    """How many leading tokens two token lists share."""
    size = min(len(cached), len(prompt))
    if size == 0:
        return 0
    differ = np.flatnonzero(np.asarray(cached[:size]) != np.asarray(prompt[:size]))
    return int(differ[0]) if len(differ) else size


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux: per thread; threads it
    starts later, such as llama.cpp's OpenMP team, inherit it). Nothing elsewhere."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)
    except OSError as error:
        logger.warning("could not lower the decode thread's priority: %s", error)


class BatchScheduler:
    """Runs sequences through a llama.cpp context on one thread, batched step by step."""

    def __init__(
        self,
        context: Any,
        vocab: Any,
        *,
        max_sequences: int,
        batch_tokens: int,
        context_length: int,
        prefix_cache: bool = True,
        grammar_first: bool = False,
        compute_nice: int = 0,
        adaptive_threads: bool = True,
    ) -> None:
        self._ctx = context
        self._compute_nice = compute_nice
        self._full_threads = int(llama_cpp.llama_n_threads(context))
        self._threads = ThreadGovernor(self._full_threads) if adaptive_threads else None
        self._grammar_first = grammar_first
        self._vocab = vocab
        self._memory = llama_cpp.llama_get_memory(context)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._batch_tokens = batch_tokens
        self._context_length = context_length
        self._batch = llama_cpp.llama_batch_init(batch_tokens, 0, max_sequences)
        self._slots = PrefixSlots(max_sequences, enabled=prefix_cache)
        self._waiting: deque[Sequence] = deque()
        self._active: dict[int, Sequence] = {}
        self._wakeup = threading.Condition()
        self._closed = False
        # Read by /metrics from another thread; ints are swapped whole, no lock needed.
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self._piece = ctypes.create_string_buffer(256)
        self._candidates = Candidates(self._n_vocab)
        self._tiers = candidate_tiers()
        self._index = VocabularyIndex(vocab)
        self._outboxes: set[Outbox] = set()  # those holding events of this step
        self.sampling = SamplingStats()
        self._thread = threading.Thread(target=self._run, name="llama-cpp-batch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        # the grammar's narrowed checks need it; until it is built they read everything
        threading.Thread(target=self._index.build, name="llama-cpp-vocab", daemon=True).start()

    def close(self) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self._batch)
        free_samplers(self._tiers)

    def submit(self, sequence: Sequence) -> None:
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the llama.cpp engine is shut down")
            self._waiting.append(sequence)
            self._wakeup.notify()

    def stats(self) -> dict[str, float]:
        """Sequences running and waiting, and tokens read and made so far."""
        return {
            "active_sequences": len(self._active),
            "waiting_sequences": len(self._waiting),
            "prompt_tokens_total": self.prompt_tokens,
            "generated_tokens_total": self.generated_tokens,
            "constrained_tokens_total": self.sampling.constrained_tokens,
            "grammar_rejections_total": self.sampling.grammar_rejections,
            "grammar_full_vocabulary_checks_total": self.sampling.full_vocabulary_checks,
            "grammar_narrowed_checks_total": self.sampling.narrowed_checks,
            "prefix_cache_lookups_total": self._slots.lookups,
            "prefix_cache_hits_total": self._slots.hits,
            "prefix_cache_hit_rate": self._slots.hits / max(self._slots.lookups, 1),
            "prefix_cache_reused_tokens_total": self._slots.reused_tokens,
            "decode_threads": self._threads.threads if self._threads else self._full_threads,
            "decode_thread_fallbacks_total": self._threads.fallbacks if self._threads else 0,
        }

    def cancel(self, sequence: Sequence) -> None:
        """Stop a sequence; its KV cache is freed before the next decode."""
        sequence.cancelled = True
        with self._wakeup:
            self._wakeup.notify()

    # ---- the scheduler thread -----------------------------------------------------

    def _run(self) -> None:
        lower_thread_priority(self._compute_nice)  # llama.cpp's compute threads inherit it
        while True:
            with self._wakeup:
                while not self._closed and not self._waiting and not self._active:
                    self._wakeup.wait()
                if self._closed:
                    break
                for sequence in [s for s in self._active.values() if s.cancelled]:
                    self._release(sequence)  # first, so that their slots can be reused now
                admitted = self._admit_waiting()
            for sequence in admitted:
                self._start(sequence)
            if self._active:
                try:
                    self._step()
                except Exception as error:  # a failed decode fails its sequences, not the thread
                    logger.exception("llama.cpp decode failed")
                    for sequence in list(self._active.values()):
                        self._fail(sequence, error)
            self._send()
        for sequence in [*self._active.values(), *self._waiting]:
            self._fail(sequence, RuntimeError("the llama.cpp engine is shutting down"))
        self._send()

    def _emit(self, sequence: Sequence, event: SequenceEvent) -> None:
        sequence.outbox.put(sequence.deliver, event)
        self._outboxes.add(sequence.outbox)

    def _send(self) -> None:
        for outbox in self._outboxes:
            outbox.send()
        self._outboxes.clear()

    def _admit_waiting(self) -> list[Sequence]:
        admitted = []
        while self._waiting and self._slots.has_free():
            sequence = self._waiting.popleft()
            if sequence.cancelled:
                continue
            sequence.slot, sequence.position, sequence.copy_from = self._slots.take(sequence.prompt)
            sequence.seq_id = sequence.slot.seq_id
            sequence.pending = sequence.prompt[sequence.position :]
            self._active[sequence.seq_id] = sequence
            self.prompt_tokens += len(sequence.prompt)
            admitted.append(sequence)
        return admitted

    def _start(self, sequence: Sequence) -> None:
        assert sequence.slot is not None
        slot = sequence.slot
        source, sequence.copy_from = sequence.copy_from, None
        if source is not None and sequence.position > 0:
            # llama.cpp copies the whole cache of that sequence before the next decode
            llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, -1, -1)
            slot.tokens = source.tokens[: sequence.position]
        # Keep the cached prefix, drop the rest; a cache that cannot be cut is emptied.
        kept = sequence.position > 0 and llama_cpp.llama_memory_seq_rm(
            self._memory, slot.seq_id, sequence.position, -1
        )
        if kept and llama_cpp.llama_memory_seq_pos_min(self._memory, slot.seq_id) > 0:
            kept = False  # a sliding-window cache no longer holds the prefix's start
        if not kept:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            sequence.position = 0
            sequence.pending = list(sequence.prompt)
        del slot.tokens[sequence.position :]
        sequence.cached = sequence.position
        self._slots.count(sequence.cached)
        try:
            sequence.sampler = TokenSampler(
                self._vocab,
                sequence.params,
                sequence.grammar,
                grammar_first=self._grammar_first,
                index=self._index,
            )
        except Exception as error:
            self._fail(sequence, error)

    def _step(self) -> None:
        """Decode one batch: one token per generating sequence, then prompt chunks."""
        batch = self._batch
        rows = placed = 0
        ready: list[Sequence] = []
        # sequences already generating go first so a long new prompt cannot stall them
        order = sorted(self._active.values(), key=lambda s: len(s.pending))
        for sequence in order:
            room = self._batch_tokens - rows
            if room <= 0:
                break
            chunk = sequence.pending[:room]
            if sequence.slot is not None:
                sequence.slot.tokens.extend(chunk)
            for offset, token in enumerate(chunk):
                batch.token[rows] = token
                batch.pos[rows] = sequence.position + offset
                batch.n_seq_id[rows] = 1
                batch.seq_id[rows][0] = sequence.seq_id
                batch.logits[rows] = 0
                rows += 1
            sequence.position += len(chunk)
            placed += 1
            del sequence.pending[: len(chunk)]
            if not sequence.pending:
                batch.logits[rows - 1] = 1
                sequence.row = rows - 1
                ready.append(sequence)
        batch.n_tokens = rows
        GENERATIONS.observe_batch(placed)  # sequences in this step (kingpost_batch_size)
        started, cpu = time.perf_counter(), time.process_time()
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        if self._threads is not None:
            now = time.perf_counter()
            threads = self._threads.observe(now - started, time.process_time() - cpu, now)
            if threads is not None:
                llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
                logger.debug("llama.cpp decodes with %d threads now", threads)
        for sequence in ready:
            self._sample(sequence)

    def _sample(self, sequence: Sequence) -> None:
        assert sequence.sampler is not None
        token = sequence.sampler.sample(
            self._ctx, sequence.row, self._candidates, self._tiers, self.sampling
        )
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop")
            return
        piece = self._token_bytes(token, special=not sequence.params.skip_special_tokens)
        logprob = self._logprob(sequence, token, piece) if sequence.params.logprobs else None
        sequence.generated += 1
        self.generated_tokens += 1
        self._emit(sequence, GeneratedToken(sequence.decoder.decode(piece), logprob))
        if (
            sequence.generated >= sequence.params.max_tokens
            or sequence.position >= self._context_length
        ):
            self._finish(sequence, "length")
        else:
            sequence.pending.append(token)

    def _finish(self, sequence: Sequence, reason: StopReason) -> None:
        outcome = GenerationOutcome(
            reason, len(sequence.prompt), sequence.generated, cached_tokens=sequence.cached
        )
        self._emit(sequence, outcome)
        self._release(sequence)

    def _fail(self, sequence: Sequence, error: BaseException) -> None:
        self._emit(sequence, error)
        if sequence.seq_id in self._active:
            self._release(sequence, keep_cache=False)  # a failed decode leaves it unknown

    def _release(self, sequence: Sequence, *, keep_cache: bool = True) -> None:
        slot = sequence.slot
        assert slot is not None
        if not keep_cache:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            slot.tokens = []
        if sequence.sampler is not None:
            sequence.sampler.close()
            sequence.sampler = None
        del self._active[sequence.seq_id]
        self._slots.give_back(slot)

    # ---- token text and logprobs --------------------------------------------------

    def _token_bytes(self, token: int, special: bool = False) -> bytes:
        size = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, 256, 0, special)
        return self._piece.raw[: max(size, 0)]

    def _logprob(self, sequence: Sequence, token: int, piece: bytes) -> TokenLogprob:
        """The sampled token's log probability under the model, and the top alternatives."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, sequence.row)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        peak = float(logits.max())
        log_total = peak + math.log(float(np.exp(logits - peak).sum()))
        top: list[TopLogprob] = []
        count = sequence.params.top_logprobs
        if count > 0:
            best = np.argpartition(-logits, count)[:count]
            for candidate in best[np.argsort(-logits[best])]:
                text_bytes = self._token_bytes(int(candidate))
                top.append(
                    TopLogprob(
                        token=text_bytes.decode("utf-8", "replace"),
                        logprob=float(logits[candidate]) - log_total,
                        bytes=list(text_bytes),
                    )
                )
        return TokenLogprob(
            token=piece.decode("utf-8", "replace"),
            logprob=float(logits[token]) - log_total,
            bytes=list(piece),
            top_logprobs=top,
        )

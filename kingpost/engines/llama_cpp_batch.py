"""Continuous batching of many sequences through one llama.cpp context.

One thread owns the llama.cpp context. Each step it builds a single batch holding
the next token of every running sequence (plus chunks of new prompts), decodes it
once, and samples each sequence from its own row of logits with its own sampler
chain. Sequences join and leave between steps, so a new request never waits for
the others to finish, and a cancelled one frees its KV cache at the next step.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
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
from kingpost.observe.metrics import GENERATIONS
from kingpost.protocols import TokenLogprob, TopLogprob

logger = logging.getLogger("kingpost.engines.llama_cpp")

SequenceEvent = GeneratedToken | GenerationOutcome | BaseException

_PENALTY_WINDOW = 64  # recent tokens the presence/frequency penalties look at
_RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: draw a random seed


class Sequence:
    """One generation in flight: its tokens, sampler and where its events go."""

    def __init__(
        self,
        request: GenerationRequest,
        emit: Callable[[SequenceEvent], None],
        grammar: str | None = None,
    ) -> None:
        assert isinstance(request.prompt, list)
        self.prompt: list[int] = request.prompt
        self.params: SamplingParams = request.params
        self.grammar = grammar
        self.emit = emit
        self.cancelled = False
        self.seq_id = -1
        self.position = 0  # tokens of this sequence already in the KV cache
        self.pending: list[int] = list(self.prompt)  # tokens to decode next
        self.generated = 0
        self.row = -1  # the batch row holding this sequence's next-token logits
        self.sampler: Any = None
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")


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
    ) -> None:
        self._ctx = context
        self._vocab = vocab
        self._memory = llama_cpp.llama_get_memory(context)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._batch_tokens = batch_tokens
        self._context_length = context_length
        self._batch = llama_cpp.llama_batch_init(batch_tokens, 0, max_sequences)
        self._free_ids = list(range(max_sequences - 1, -1, -1))
        self._waiting: deque[Sequence] = deque()
        self._active: dict[int, Sequence] = {}
        self._wakeup = threading.Condition()
        self._closed = False
        # Read by /metrics from another thread; ints are swapped whole, no lock needed.
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self._piece = ctypes.create_string_buffer(256)
        self._thread = threading.Thread(target=self._run, name="llama-cpp-batch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self._batch)

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
        }

    def cancel(self, sequence: Sequence) -> None:
        """Stop a sequence; its KV cache is freed before the next decode."""
        sequence.cancelled = True
        with self._wakeup:
            self._wakeup.notify()

    # ---- the scheduler thread -----------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._closed and not self._waiting and not self._active:
                    self._wakeup.wait()
                if self._closed:
                    break
                admitted = self._admit_waiting()
            for sequence in admitted:
                self._start(sequence)
            for sequence in [s for s in self._active.values() if s.cancelled]:
                self._release(sequence)
            if self._active:
                try:
                    self._step()
                except Exception as error:  # a failed decode fails its sequences, not the thread
                    logger.exception("llama.cpp decode failed")
                    for sequence in list(self._active.values()):
                        self._fail(sequence, error)
        for sequence in [*self._active.values(), *self._waiting]:
            self._fail(sequence, RuntimeError("the llama.cpp engine is shutting down"))

    def _admit_waiting(self) -> list[Sequence]:
        admitted = []
        while self._waiting and self._free_ids:
            sequence = self._waiting.popleft()
            if sequence.cancelled:
                continue
            sequence.seq_id = self._free_ids.pop()
            self._active[sequence.seq_id] = sequence
            self.prompt_tokens += len(sequence.prompt)
            admitted.append(sequence)
        return admitted

    def _start(self, sequence: Sequence) -> None:
        try:
            sequence.sampler = self._sampler_chain(sequence.params, sequence.grammar)
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
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        for sequence in ready:
            self._sample(sequence)

    def _sample(self, sequence: Sequence) -> None:
        token = llama_cpp.llama_sampler_sample(sequence.sampler, self._ctx, sequence.row)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop")
            return
        piece = self._token_bytes(token)
        logprob = self._logprob(sequence, token, piece) if sequence.params.logprobs else None
        sequence.generated += 1
        self.generated_tokens += 1
        sequence.emit(GeneratedToken(sequence.decoder.decode(piece), logprob))
        if (
            sequence.generated >= sequence.params.max_tokens
            or sequence.position >= self._context_length
        ):
            self._finish(sequence, "length")
        else:
            sequence.pending.append(token)

    def _finish(self, sequence: Sequence, reason: StopReason) -> None:
        sequence.emit(GenerationOutcome(reason, len(sequence.prompt), sequence.generated))
        self._release(sequence)

    def _fail(self, sequence: Sequence, error: BaseException) -> None:
        sequence.emit(error)
        if sequence.seq_id in self._active:
            self._release(sequence)

    def _release(self, sequence: Sequence) -> None:
        llama_cpp.llama_memory_seq_rm(self._memory, sequence.seq_id, -1, -1)
        if sequence.sampler is not None:
            llama_cpp.llama_sampler_free(sequence.sampler)
            sequence.sampler = None
        del self._active[sequence.seq_id]
        self._free_ids.append(sequence.seq_id)

    # ---- sampling -----------------------------------------------------------------

    def _sampler_chain(self, params: SamplingParams, grammar: str | None) -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            if not sampler:
                llama_cpp.llama_sampler_free(chain)
                raise ValueError("llama.cpp could not build the sampler (invalid grammar?)")
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if grammar is not None:
            add(llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root"))
        greedy = params.temperature == 0
        if params.top_k > 0 and not greedy:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.presence_penalty or params.frequency_penalty:
            add(
                llama_cpp.llama_sampler_init_penalties(
                    self._n_vocab,
                    _PENALTY_WINDOW,
                    1.0,
                    params.frequency_penalty,
                    params.presence_penalty,
                )
            )
        if greedy:
            add(llama_cpp.llama_sampler_init_greedy())
            return chain
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = _RANDOM_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        add(llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _token_bytes(self, token: int) -> bytes:
        size = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, 256, 0, False)
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

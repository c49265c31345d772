"""Picking each next token with llama.cpp's samplers, grammar-constrained when asked.

A sequence's samplers are a llama.cpp chain (top-k, penalties, top-p, temperature,
then greedy or a seeded draw) and, for structured output, a grammar. Checking the
grammar against every vocabulary entry costs far more than a decode step on a
262k-token vocabulary, so it is done the way llama.cpp's own sampler does it:

1. sample from the chain as if unconstrained, then ask the grammar about that one
   token; most steps end here;
2. on rejection, run the grammar over the highest-scoring candidates only (a few
   hundred, then a few thousand) and sample from those that survive, when that
   gives what the full check would: greedy, any survivor; top-k, at least k
   survivors (every token further down scores lower), or survivors so far above
   the cut that all the tokens below it could not weigh 1e-4 of them;
3. only when that cannot decide, check the whole vocabulary.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp
import numpy as np

from kingpost.engines.generation import SamplingParams

PENALTY_WINDOW = 64  # recent tokens the presence/frequency penalties look at
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: draw a random seed
# How many top candidates the grammar sees before it is run over the whole vocabulary.
CANDIDATE_TIERS = (256, 8192, 65536)
# Survivors this far (in log-probability, after temperature) above the best token left
# out make the tokens left out weigh less than e^-9 of them.
_NEGLIGIBLE = 9.0

# The layout of llama.cpp's llama_token_data {int32 id; float logit; float p;}.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)


class SamplingStats:
    """How constrained tokens were decided (read by /metrics; ints are swapped whole)."""

    def __init__(self) -> None:
        self.constrained_tokens = 0
        self.grammar_rejections = 0
        self.full_vocabulary_checks = 0


class Candidates:
    """Every token with its logit, as a ``llama_token_data_array`` samplers work on.

    One per scheduler thread: the buffer is refilled from the logits row each time.
    """

    def __init__(self, n_vocab: int) -> None:
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._n_vocab = n_vocab
        self.array = llama_cpp.llama_token_data_array(
            data=self._data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )
        self.pointer = ctypes.pointer(self.array)
        self._single = (llama_cpp.llama_token_data * 1)()
        self._single_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._single, llama_cpp.llama_token_data_p),
            size=1,
            selected=-1,
            sorted=False,
        )
        self._single_pointer = ctypes.pointer(self._single_array)

    def fill(self, context: Any, row: int) -> None:
        """All tokens, scored by the logits of batch row ``row``."""
        logits = llama_cpp.llama_get_logits_ith(context, row)
        self._data["id"] = self._ids
        self._data["logit"] = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        self._data["p"] = 0.0
        self._reset(self._n_vocab)

    def lowest_logit(self) -> float:
        """The lowest logit among the current candidates."""
        return float(self._data["logit"][: int(self.array.size)].min())

    def highest_logit(self) -> float:
        return float(self._data["logit"][: int(self.array.size)].max())

    def keep_survivors(self) -> int:
        """Drop the entries a grammar ruled out (logit -inf), keeping the order; how many stay."""
        size = int(self.array.size)
        view = self._data[:size]
        alive = view[np.isfinite(view["logit"])]
        self._data[: len(alive)] = alive
        self._reset(len(alive))
        return len(alive)

    def selected_token(self) -> int:
        return int(self.array.data[self.array.selected].id)

    def allows(self, grammar: Any, token: int) -> bool:
        """Whether the grammar accepts ``token`` next (a one-entry check)."""
        self._single[0].id = token  # type: ignore[assignment]  # ctypes converts the int
        self._single[0].logit = 1.0
        self._single[0].p = 0.0
        self._single_array.size = 1
        self._single_array.selected = -1
        self._single_array.sorted = False
        llama_cpp.llama_sampler_apply(grammar, self._single_pointer)
        return bool(np.isfinite(self._single[0].logit))

    def _reset(self, size: int) -> None:
        self.array.data = self._data.ctypes.data_as(llama_cpp.llama_token_data_p)  # type: ignore[assignment]
        self.array.size = size
        self.array.selected = -1
        self.array.sorted = False


class TokenSampler:
    """One sequence's sampler chain, and its grammar when the output is constrained."""

    def __init__(
        self,
        vocab: Any,
        params: SamplingParams,
        grammar: str | None,
        *,
        grammar_first: bool = False,
    ) -> None:
        self._grammar_first = grammar_first
        self._greedy = params.temperature == 0
        self._top_k = 0 if self._greedy else params.top_k
        self._temperature = params.temperature
        self._penalised = bool(params.presence_penalty or params.frequency_penalty)
        # how far above the cut survivors must be for the tokens below not to matter
        left_out = self._top_k or llama_cpp.llama_vocab_n_tokens(vocab)
        self._margin = (math.log(left_out) + _NEGLIGIBLE) * max(params.temperature, 1e-6)
        self.chain = _sampler_chain(vocab, params)
        self.grammar: Any = None
        if grammar is not None:
            self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not self.grammar:
                self.close()
                raise ValueError("llama.cpp could not build the grammar")

    def sample(
        self, context: Any, row: int, candidates: Candidates, tiers: list[Any], stats: SamplingStats
    ) -> int:
        """The next token from batch row ``row`` (accepted into the samplers' state)."""
        if self.grammar is None:
            return int(llama_cpp.llama_sampler_sample(self.chain, context, row))
        stats.constrained_tokens += 1
        if self._grammar_first:
            token = self._full_check(context, row, candidates, stats)
            llama_cpp.llama_sampler_accept(self.grammar, token)
            llama_cpp.llama_sampler_accept(self.chain, token)
            return token
        candidates.fill(context, row)
        llama_cpp.llama_sampler_apply(self.chain, candidates.pointer)
        token = candidates.selected_token()
        if not candidates.allows(self.grammar, token):
            stats.grammar_rejections += 1
            token = self._resample(context, row, candidates, tiers, stats)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def _resample(
        self, context: Any, row: int, candidates: Candidates, tiers: list[Any], stats: SamplingStats
    ) -> int:
        # Greedy with penalties reads the whole (penalised) vocabulary: no shortcut is exact.
        if not (self._greedy and self._penalised):
            exact_from = 1 if self._greedy else (self._top_k or 1 << 31)
            for top in tiers:
                candidates.fill(context, row)
                llama_cpp.llama_sampler_apply(top, candidates.pointer)
                cut = candidates.lowest_logit()
                llama_cpp.llama_sampler_apply(self.grammar, candidates.pointer)
                survivors = candidates.keep_survivors()
                if survivors >= exact_from or (
                    survivors > 0 and candidates.highest_logit() - cut >= self._margin
                ):
                    llama_cpp.llama_sampler_apply(self.chain, candidates.pointer)
                    return candidates.selected_token()
        return self._full_check(context, row, candidates, stats)

    def _full_check(
        self, context: Any, row: int, candidates: Candidates, stats: SamplingStats
    ) -> int:
        stats.full_vocabulary_checks += 1
        candidates.fill(context, row)
        llama_cpp.llama_sampler_apply(self.grammar, candidates.pointer)
        llama_cpp.llama_sampler_apply(self.chain, candidates.pointer)
        return candidates.selected_token()

    def close(self) -> None:
        for sampler in (self.chain, self.grammar):
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
        self.chain = self.grammar = None


def candidate_tiers() -> list[Any]:
    """Top-k samplers picking the candidates a grammar sees first (free with free_samplers)."""
    return [llama_cpp.llama_sampler_init_top_k(size) for size in CANDIDATE_TIERS]


def free_samplers(samplers: list[Any]) -> None:
    for sampler in samplers:
        llama_cpp.llama_sampler_free(sampler)


def _sampler_chain(vocab: Any, params: SamplingParams) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        if not sampler:
            llama_cpp.llama_sampler_free(chain)
            raise ValueError("llama.cpp could not build the sampler")
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    greedy = params.temperature == 0
    if params.top_k > 0 and not greedy:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
    if params.presence_penalty or params.frequency_penalty:
        add(
            llama_cpp.llama_sampler_init_penalties(
                llama_cpp.llama_vocab_n_tokens(vocab),
                PENALTY_WINDOW,
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
    seed = RANDOM_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    add(llama_cpp.llama_sampler_init_dist(seed))
    return chain

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
3. only when that cannot decide, check every token the grammar could accept, found by
   asking it about prefixes first (:class:`VocabularyIndex`): a token whose first
   character (or first two) the grammar refuses cannot pass, so one probe rules out a
   whole group of tokens, and the grammar reads a few thousand tokens instead of 262k;
4. the whole vocabulary only while the grammar is inside a multi-byte character, or
   until the index is built.

Greedy decoding without penalties takes the highest logit straight from the logits
row (what llama.cpp's greedy sampler picks, without building a 262k-entry array).
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections import defaultdict
from typing import Any

import llama_cpp
import numpy as np

from kingpost.engines.generation import SamplingParams

PENALTY_WINDOW = 64  # recent tokens the presence/frequency penalties look at
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: draw a random seed
# How many top candidates the grammar sees before it is run over the whole vocabulary
# (only the first tier while the vocabulary index can narrow the check instead).
CANDIDATE_TIERS = (256, 8192, 65536)
# A first-character group this large is split by its first two characters.
_SPLIT_GROUP = 64
# llama.cpp's UTF-8 decoder (llama-grammar.cpp): sequence length by the top 4 bits.
_UTF8_LENGTH = (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4)
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
        self.narrowed_checks = 0


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
        self._reset(self._n_vocab)  # "p" is left as it is: every sampler computes it first

    def fill_tokens(self, context: Any, row: int, ids: np.ndarray) -> None:
        """Only the tokens ``ids``, scored by the logits of batch row ``row``."""
        pointer = llama_cpp.llama_get_logits_ith(context, row)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        size = len(ids)
        self._data["id"][:size] = ids
        self._data["logit"][:size] = logits[ids]
        self._reset(size)

    def probe(self, grammar: Any, ids: np.ndarray) -> np.ndarray:
        """Which of ``ids`` the grammar accepts next, as a boolean array (ids in order)."""
        size = len(ids)
        self._data["id"][:size] = ids
        self._data["logit"][:size] = 0.0
        self._reset(size)
        llama_cpp.llama_sampler_apply(grammar, self.pointer)
        return np.isfinite(self._data["logit"][:size])

    def argmax(self, context: Any, row: int) -> int:
        """The token with the highest logit in batch row ``row`` (the first, on a tie)."""
        logits = llama_cpp.llama_get_logits_ith(context, row)
        return int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())

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


def utf8_remaining(remaining: int, piece: bytes) -> int:
    """Bytes still missing of the character a grammar is inside after reading ``piece``,
    having been ``remaining`` bytes short before (llama.cpp's decoder, step for step:
    negative after an invalid sequence)."""
    position, size = 0, len(piece)
    while position < size and piece[position] != 0 and remaining > 0:
        if piece[position] >> 6 != 2:
            return -1
        position += 1
        remaining -= 1
    while position < size and piece[position] != 0:
        remaining = _UTF8_LENGTH[piece[position] >> 4] - 1
        if remaining < 0:
            return remaining
        position += 1
        while position < size and piece[position] != 0 and remaining > 0:
            position += 1
            remaining -= 1
    return remaining


def _leading_characters(piece: bytes, count: int) -> tuple[int, ...]:
    """The first ``count`` (or fewer) whole characters of ``piece`` as llama.cpp's grammar
    decodes them; empty when the piece does not start with a whole character."""
    characters: list[int] = []
    position = 0
    while len(characters) < count and position < len(piece) and piece[position] != 0:
        length = _UTF8_LENGTH[piece[position] >> 4]
        if length == 0 or position + length > len(piece):
            break
        value = piece[position] & ((1 << (8 - length)) - 1)
        for byte in piece[position + 1 : position + length]:
            if byte == 0:
                return tuple(characters)
            value = (value << 6) + (byte & 0x3F)
        characters.append(value)
        position += length
    return tuple(characters)


class VocabularyIndex:
    """Every token grouped by its first character, and big groups by their first two,
    each group with a probe: the token that is exactly that prefix.

    A grammar that refuses a prefix refuses every token starting with it (it reads a
    token character by character), so the probes say which groups can hold a token the
    grammar accepts, and only those are checked. The result is the same as checking the
    whole vocabulary, for grammars made of character rules (the JSON-schema grammars).

    Built on a background thread at start (262k pieces take about a second);
    :attr:`ready` says when it can be used.
    """

    def __init__(self, vocab: Any) -> None:
        self._vocab = vocab
        self.ready = threading.Event()
        self.pieces: list[bytes] = []

    def build(self) -> None:
        vocab = self._vocab
        size = llama_cpp.llama_vocab_n_tokens(vocab)
        buffer = ctypes.create_string_buffer(512)
        pieces: list[bytes] = []
        for token in range(size):
            length = llama_cpp.llama_token_to_piece(vocab, token, buffer, 512, 0, True)
            pieces.append(buffer.raw[: max(length, 0)])
        always: list[int] = []  # end-of-generation and odd-prefixed tokens: always checked
        firsts: defaultdict[int, list[int]] = defaultdict(list)
        probes: dict[tuple[int, ...], int] = {}
        for token, piece in enumerate(pieces):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                always.append(token)
                continue
            if not piece or piece[0] == 0:
                continue  # a grammar refuses every empty piece
            prefix = _leading_characters(piece, 3)
            if not prefix:
                always.append(token)
                continue
            firsts[prefix[0]].append(token)
            if len(prefix) <= 2 and utf8_remaining(0, piece) == 0:
                probes.setdefault(prefix, token)  # the piece is exactly these characters
        first_group = np.full(size, -1, dtype=np.int32)
        second_group = np.full(size, -1, dtype=np.int32)
        first_probes: list[int] = []
        second_probes: list[int] = []
        second_owner: list[int] = []  # the first-character group each pair group splits
        for character, members in firsts.items():
            probe = probes.get((character,))
            if probe is None or len(members) < 2:
                always.extend(members)
                continue
            group = len(first_probes)
            first_probes.append(probe)
            first_group[members] = group
            if len(members) < _SPLIT_GROUP:
                continue
            pairs: defaultdict[tuple[int, ...], list[int]] = defaultdict(list)
            for token in members:
                pair = _leading_characters(pieces[token], 2)
                if len(pair) == 2 and pair in probes:
                    pairs[pair].append(token)
            for pair, pair_members in pairs.items():
                if len(pair_members) >= 2:
                    second_group[pair_members] = len(second_probes)
                    second_probes.append(probes[pair])
                    second_owner.append(group)
        self.pieces = pieces
        self._always = np.zeros(size, dtype=bool)
        self._always[always] = True
        self._first_group = first_group
        self._second_group = second_group
        self._first_probes = np.array(first_probes, dtype=np.int32)
        self._second_probes = np.array(second_probes, dtype=np.int32)
        self._second_owner = np.array(second_owner, dtype=np.int32)
        self.ready.set()

    def candidates(self, grammar: Any, candidates: Candidates) -> np.ndarray:
        """The tokens that may pass ``grammar`` next (a superset of those that do, in
        token order); the grammar must be between characters (``utf8_remaining`` 0)."""
        first_ok = np.zeros(len(self._first_probes) + 1, dtype=bool)
        first_ok[1:] = candidates.probe(grammar, self._first_probes)
        second_ok = np.zeros(len(self._second_probes) + 1, dtype=bool)
        asked = np.flatnonzero(first_ok[1:][self._second_owner])
        if len(asked):
            second_ok[asked + 1] = candidates.probe(grammar, self._second_probes[asked])
        split = self._second_group >= 0
        keep = self._always | (first_ok[self._first_group + 1] & ~split)
        keep |= second_ok[self._second_group + 1]
        return np.flatnonzero(keep).astype(np.int32)


class TokenSampler:
    """One sequence's sampler chain, and its grammar when the output is constrained."""

    def __init__(
        self,
        vocab: Any,
        params: SamplingParams,
        grammar: str | None,
        *,
        grammar_first: bool = False,
        index: VocabularyIndex | None = None,
    ) -> None:
        self._grammar_first = grammar_first
        self._greedy = params.temperature == 0
        self._top_k = 0 if self._greedy else params.top_k
        self._temperature = params.temperature
        self._penalised = bool(params.presence_penalty or params.frequency_penalty)
        # how far above the cut survivors must be for the tokens below not to matter
        left_out = self._top_k or llama_cpp.llama_vocab_n_tokens(vocab)
        self._margin = (math.log(left_out) + _NEGLIGIBLE) * max(params.temperature, 1e-6)
        self._vocab = vocab
        self._index = index
        self._argmax = self._greedy and not self._penalised  # the chain would pick the top logit
        self._remaining = 0  # bytes of a character the grammar has read only part of
        self._piece = ctypes.create_string_buffer(512)
        self.chain = _sampler_chain(vocab, params)
        self.grammar: Any = None
        if grammar is not None:
            self.grammar = grammar_sampler(vocab, grammar, params.grammar_trigger)
            if not self.grammar:
                self.close()
                raise ValueError("llama.cpp could not build the grammar")

    def sample(
        self, context: Any, row: int, candidates: Candidates, tiers: list[Any], stats: SamplingStats
    ) -> int:
        """The next token from batch row ``row`` (accepted into the samplers' state)."""
        if self.grammar is None:
            if self._argmax:
                return candidates.argmax(context, row)
            return int(llama_cpp.llama_sampler_sample(self.chain, context, row))
        stats.constrained_tokens += 1
        if self._grammar_first:
            token = self._exact_check(context, row, candidates, stats, narrow=False)
        else:
            if self._argmax:
                token = candidates.argmax(context, row)
            elif not self._penalised:
                # llama.cpp builds the candidates faster than numpy fills them, and accepting
                # a token into a chain without penalties changes nothing
                token = int(llama_cpp.llama_sampler_sample(self.chain, context, row))
            else:
                candidates.fill(context, row)
                llama_cpp.llama_sampler_apply(self.chain, candidates.pointer)
                token = candidates.selected_token()
            if not candidates.allows(self.grammar, token):
                stats.grammar_rejections += 1
                token = self._resample(context, row, candidates, tiers, stats)
        self._accept(token)
        return token

    def _accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.chain, token)
        if not llama_cpp.llama_vocab_is_eog(self._vocab, token):
            size = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, 512, 0, True)
            self._remaining = utf8_remaining(self._remaining, self._piece.raw[: max(size, 0)])

    def _resample(
        self, context: Any, row: int, candidates: Candidates, tiers: list[Any], stats: SamplingStats
    ) -> int:
        # Greedy with penalties reads the whole (penalised) vocabulary: no shortcut is exact.
        if not (self._greedy and self._penalised):
            exact_from = 1 if self._greedy else (self._top_k or 1 << 31)
            for top in tiers[:1] if self._can_narrow() else tiers:
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
        return self._exact_check(context, row, candidates, stats, narrow=self._can_narrow())

    def _can_narrow(self) -> bool:
        return self._index is not None and self._index.ready.is_set() and self._remaining == 0

    def _exact_check(
        self, context: Any, row: int, candidates: Candidates, stats: SamplingStats, *, narrow: bool
    ) -> int:
        """The token the chain picks among all those the grammar accepts (``narrow``: the
        index's candidates only, else the whole vocabulary)."""
        if narrow:
            assert self._index is not None
            stats.narrowed_checks += 1
            candidates.fill_tokens(context, row, self._index.candidates(self.grammar, candidates))
        else:
            stats.full_vocabulary_checks += 1
            candidates.fill(context, row)
        llama_cpp.llama_sampler_apply(self.grammar, candidates.pointer)
        if candidates.keep_survivors() == 0:
            raise RuntimeError("the grammar accepts no token here")
        llama_cpp.llama_sampler_apply(self.chain, candidates.pointer)
        return candidates.selected_token()

    def close(self) -> None:
        for sampler in (self.chain, self.grammar):
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
        self.chain = self.grammar = None


def grammar_sampler(vocab: Any, grammar: str, trigger: str | None) -> Any:
    """llama.cpp's grammar sampler; with ``trigger``, one that lets every token through
    until the output so far matches it, and constrains from its first group on."""
    if trigger is None:
        return llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    patterns = (ctypes.c_char_p * 1)(trigger.encode())
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        vocab, grammar.encode(), b"root", patterns, 1, None, 0
    )


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

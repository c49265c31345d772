"""Slots of the llama.cpp scheduler: the one sharing the longest prompt prefix is reused."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed: pip install 'kingpost[llama]'"
)

from kingpost.engines.llama_cpp_batch import COPY_THRESHOLD, PrefixSlots, common_prefix


def finished(slots: PrefixSlots, tokens: list[int]) -> None:
    slot, _, _ = slots.take(tokens)
    slot.tokens = list(tokens)
    slots.give_back(slot)


def test_common_prefix_counts_leading_equal_tokens() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_the_slot_with_the_longest_shared_prefix_is_chosen() -> None:
    slots = PrefixSlots(3)
    finished(slots, [1, 2, 3, 4])
    finished(slots, [7, 8, 9])
    slot, shared, source = slots.take([7, 8, 1])
    assert slot.tokens == [7, 8, 9] and shared == 2 and source is None


def test_lookups_hits_and_reused_tokens_are_counted() -> None:
    slots = PrefixSlots(1)
    slots.count(0)
    slots.count(5)
    assert (slots.lookups, slots.hits, slots.reused_tokens) == (2, 1, 5)


def test_the_last_prompt_token_is_always_decoded_again() -> None:
    slots = PrefixSlots(1)
    finished(slots, [1, 2, 3])
    assert slots.take([1, 2, 3])[1] == 2


def test_without_a_match_the_least_recently_used_slot_is_taken() -> None:
    slots = PrefixSlots(2)
    finished(slots, [1])
    finished(slots, [2])
    first, _, _ = slots.take([1])
    slots.give_back(first)
    slot, shared, _ = slots.take([9, 9])
    assert slot.tokens == [2] and shared == 0


def test_a_busy_slots_longer_prefix_is_copied_into_a_free_one() -> None:
    slots = PrefixSlots(2)
    prompt = list(range(COPY_THRESHOLD * 2))
    busy, _, _ = slots.take(prompt)
    busy.tokens = list(prompt)
    slot, shared, source = slots.take([*prompt, 5])
    assert source is busy and slot is not busy and shared == len(prompt)


def test_a_disabled_cache_reuses_nothing() -> None:
    slots = PrefixSlots(1, enabled=False)
    finished(slots, [1, 2, 3])
    assert slots.take([1, 2, 3, 4])[1:] == (0, None)

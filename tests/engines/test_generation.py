"""Stop sequences in streamed text."""

from __future__ import annotations

from kingpost.engines.generation import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(piece) for piece in pieces)


def test_text_without_stops_passes_through() -> None:
    matcher = StopMatcher([])
    assert feed_all(matcher, ["a", "b"]) == "ab"
    assert matcher.matched is None


def test_a_stop_split_across_pieces_is_found() -> None:
    matcher = StopMatcher(["</end>"])
    assert feed_all(matcher, ["hello </", "en", "d> tail"]) == "hello "
    assert matcher.matched == "</end>"


def test_a_possible_stop_prefix_is_held_back_then_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("ART") == "START"


def test_held_back_text_is_flushed_at_the_end() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("x ST") == "x "
    assert matcher.flush() == "ST"


def test_the_earliest_of_several_stops_wins() -> None:
    matcher = StopMatcher(["b", "a"])
    assert matcher.feed("xab") == "x"
    assert matcher.matched == "a"


def test_nothing_is_emitted_after_a_match() -> None:
    matcher = StopMatcher(["."])
    matcher.feed("one. two")
    assert matcher.feed("three") == ""

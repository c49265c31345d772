"""Request bodies: big integers stay exact, and one body cannot make the server build millions."""

from __future__ import annotations

import pytest

from kingpost.errors import InvalidInputError, PayloadTooLargeError
from kingpost.jsonbody import parse_json, value_bound


def test_integers_past_64_bits_stay_exact() -> None:
    body = b'{"big": 123456789012345678901234567890, "neg": [-18446744073709551617], "f": 1.5}'
    value = parse_json(body)
    assert value == {
        "big": 123456789012345678901234567890,
        "neg": [-18446744073709551617],
        "f": 1.5,
    }
    assert isinstance(value["big"], int)


def test_long_digit_strings_and_floats_are_left_alone() -> None:
    assert parse_json(b'{"id": "123456789012345678901234"}') == {"id": "123456789012345678901234"}
    assert parse_json(b"[1.123456789012345678901234]") == [1.1234567890123457]


def test_a_body_with_too_many_values_is_refused_before_parsing() -> None:
    body = b"[" + b"{}," * 99 + b"{}]"
    assert len(parse_json(body, max_values=250)) == 100
    with pytest.raises(PayloadTooLargeError, match="more than 50 values"):
        parse_json(body, max_values=50)
    assert value_bound(body) >= 101


def test_invalid_json_is_a_400() -> None:
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_json(b"{nope")

"""Parsing a JSON request body within bounds, keeping big integers exact.

A parsed body costs far more than its bytes (``[{},{},...]`` takes about 31x
its size), and the parser holds the GIL, so a thread does not keep the event
loop free: what bounds the harm of one request is the number of values it may
make the server build. The count is an upper bound taken in C (separators and
openers), so typical bodies pay a few memchr passes.

orjson turns integers past 64 bits into floats; such a body is parsed again by
the standard library, which keeps them exact (it is rare, and bounded by the
same count).

    value = parse_json(body, max_values=1_000_000)   # InvalidInputError / PayloadTooLargeError
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from kingpost.errors import InvalidInputError, PayloadTooLargeError

DEFAULT_MAX_VALUES = 2_000_000
# 20 or more digits in a row outside a fraction or exponent: past what 64 bits hold.
_LONG_INTEGER = re.compile(rb"(?<![\d.eE+-])-?\d{20,}(?![\d.eE])")


def value_bound(body: bytes) -> int:
    """At least the number of values ``body`` holds (an array or object of n has n-1 commas)."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def parse_json(body: bytes, max_values: int = DEFAULT_MAX_VALUES) -> Any:
    """The parsed body; 413 past ``max_values`` values, 400 if it is not JSON."""
    if len(body) > max_values and value_bound(body) > max_values:
        raise PayloadTooLargeError(
            f"the JSON body holds more than {max_values} values (runtime.max_json_values)"
        )
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None
    if _LONG_INTEGER.search(body) is not None and _has_lossy_float(value):
        return _parse_exact(body)
    return value


def _has_lossy_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and (item >= 2**63 or item < -(2**63)):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parse_exact(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None

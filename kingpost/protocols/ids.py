"""Identifiers for objects on the wire (``chatcmpl-...``, ``msg_...``, ``call_...``)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh random id with the API's conventional prefix, e.g. ``new_id("chatcmpl-")``."""
    return prefix + secrets.token_hex(12)

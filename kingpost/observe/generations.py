"""What one engine generation reports when it ends: metrics, and a GenAI span when tracing.

Engines do not call this directly: :func:`kingpost.engines.llm_replies.read_reply`,
the one reading of every engine's token stream, opens a watch per generation
and finishes it once, with the time of the first token and the token counts.
"""

from __future__ import annotations

import time
from typing import Any

from kingpost.observe import tracing
from kingpost.observe.metrics import GENERATIONS


class GenerationWatch:
    """Open when a generation starts; ``finish()`` once when it ends (or is stopped)."""

    __slots__ = ("finished", "model", "span", "started")

    def __init__(self, operation: str, model: str, params: Any) -> None:
        self.started = time.perf_counter()
        self.model = model
        self.finished = False
        active = tracing.ACTIVE
        self.span = active.generation_span(operation, model, params) if active else None

    def finish(
        self, first_token_at: float | None, prompt_tokens: int, output_tokens: int, reason: str
    ) -> None:
        self.finished = True
        ended = time.perf_counter()
        ttft = first_token_at - self.started if first_token_at is not None else None
        tpot = (
            (ended - first_token_at) / (output_tokens - 1)
            if first_token_at is not None and output_tokens > 1
            else None
        )
        GENERATIONS.observe(prompt_tokens, output_tokens, ttft, tpot, reason)
        active = tracing.ACTIVE
        if self.span is not None and active is not None:
            active.end_generation(self.span, self.model, prompt_tokens, output_tokens, ttft, reason)

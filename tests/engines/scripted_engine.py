"""A deterministic LLM engine for testing the shared endpoint layer without a model.

:class:`ScriptedEngine` is a real :class:`~kingpost.engines.llm_endpoints.LLMEndpoints`
engine (the same base llama.cpp and vLLM plug into) whose "model" replays a script
the request itself spells out: the text of the last user turn (for completions, the
whole prompt), split on ``|`` into tokens. ``"Hel|lo wor|ld"`` generates the three
tokens ``Hel``, ``lo wor``, ``ld``, then stops (reason ``stop``), or stops early at
``max_tokens`` (reason ``length``). Two tokens do something else:

- ``<error>`` raises mid-generation, after the tokens before it;
- ``<seed>`` is replaced by the request's sampling seed (to see ``n > 1`` reseeding);
- ``<pause>`` generates nothing for 0.1 s (a slow model, for deadlines).

Tokenizing is one token per character, so a prompt's usage is its length. Every
generation request is kept in ``requests``; ``yielded`` counts tokens handed out,
and ``closed`` the token streams closed before their end (as a stop sequence does).

A model directory can serve it as is: ``class Model(ScriptedEngine): pass``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from kingpost.engines.generation import (
    ChatTurn,
    GeneratedToken,
    GenerationOutcome,
    GenerationRequest,
)
from kingpost.engines.llm_endpoints import LLMEndpoints
from kingpost.protocols import TokenLogprob

TURN = "\x1e"  # separates rendered chat turns; no request text contains it
ERROR = "<error>"
SEED = "<seed>"
PAUSE = "<pause>"


class ScriptedEngine(LLMEndpoints):
    """Replays the tokens a prompt spells out (see the module docstring)."""

    def __init__(
        self, config: dict[str, Any] | None = None, *, context_length: int = 4096, **kwargs: Any
    ) -> None:
        super().__init__(config or {}, default_top_k=40, model_dir=kwargs.get("model_dir"))
        self._context_length = context_length
        self.requests: list[GenerationRequest] = []
        self.yielded = 0
        self.closed = 0

    def load(self) -> None:
        return None

    @property
    def context_length(self) -> int:
        return self._context_length

    def render_chat(self, turns: list[ChatTurn]) -> str:
        return "".join(f"{TURN}{turn.role}:{turn.content}" for turn in turns)

    def tokenize(self, text: str) -> list[int]:
        return [ord(character) for character in text]

    async def generate(
        self, request: GenerationRequest
    ) -> AsyncGenerator[GeneratedToken | GenerationOutcome, None]:
        self.requests.append(request)
        prompt = request.prompt
        text = prompt if isinstance(prompt, str) else "".join(map(chr, prompt))
        params = request.params
        produced = 0
        finished = False
        try:
            for piece in script_of(text):
                if produced == params.max_tokens:
                    finished = True
                    yield GenerationOutcome("length", len(prompt), produced)
                    return
                if piece == ERROR:
                    finished = True
                    raise RuntimeError("the scripted engine failed mid-generation")
                if piece == PAUSE:
                    await asyncio.sleep(0.1)
                    continue
                token = str(params.seed) if piece == SEED else piece
                await asyncio.sleep(0)  # like a real engine, let the loop run between tokens
                produced += 1
                self.yielded += 1
                yield GeneratedToken(token, _logprob(token) if params.logprobs else None)
            finished = True
            yield GenerationOutcome("stop", len(prompt), produced)
        finally:
            if not finished:
                self.closed += 1


def script_of(prompt: str) -> list[str]:
    """The tokens a prompt asks for: its last user turn (or all of it), split on ``|``."""
    if TURN in prompt:
        users = [turn for turn in prompt.split(TURN) if turn.startswith("user:")]
        prompt = users[-1].removeprefix("user:") if users else ""
    return [piece for piece in prompt.split("|") if piece]


def _logprob(token: str) -> TokenLogprob:
    return TokenLogprob(token=token, logprob=-0.5, bytes=list(token.encode()), top_logprobs=[])

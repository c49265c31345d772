"""OpenAI (legacy) text completions: the request, the response, and a stream builder.

>>> completion(text=" Paris.", model="gemma").choices[0].text
' Paris.'
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from kingpost.protocols.ids import new_id
from kingpost.protocols.openai_common import (
    FinishReason,
    StreamOptions,
    TokenLogprob,
    Usage,
    WireModel,
    stop_list,
)
from kingpost.protocols.sse import SSE_DONE, sse_event

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(WireModel):
    """The body of ``POST /v1/completions``; ``top_k`` is accepted as an extension."""

    model: str = ""
    prompt: Prompt
    max_tokens: int | None = Field(16, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        return self

    @property
    def stop_sequences(self) -> list[str]:
        return stop_list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def prompts(self) -> list[str | list[int]]:
        """The prompts to complete: each a string or a list of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(item, int) for item in prompt):
            return [list(prompt)]  # type: ignore[arg-type]
        return list(prompt)  # type: ignore[arg-type]


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)

    @classmethod
    def of(cls, logprobs: list[TokenLogprob], text_offset: int = 0) -> CompletionLogprobs:
        """Convert per-token logprobs to this API's column layout, offsets from text_offset."""
        result = cls()
        offset = text_offset
        for item in logprobs:
            result.tokens.append(item.token)
            result.token_logprobs.append(item.logprob)
            result.top_logprobs.append({top.token: top.logprob for top in item.top_logprobs})
            result.text_offset.append(offset)
            offset += len(item.token)
        return result


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str = Field(default_factory=lambda: new_id("cmpl-"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


def completion(
    text: str,
    *,
    model: str,
    finish_reason: FinishReason = "stop",
    usage: Usage | None = None,
    logprobs: list[TokenLogprob] | None = None,
) -> Completion:
    """A one-choice text completion."""
    choice = CompletionChoice(
        text=text,
        finish_reason=finish_reason,
        logprobs=CompletionLogprobs.of(logprobs) if logprobs is not None else None,
    )
    return Completion(model=model, choices=[choice], usage=usage)


class CompletionStream:
    """Builds the SSE chunks of one streamed text completion, all sharing one id."""

    def __init__(self, model: str, *, include_usage: bool = False) -> None:
        self.id = new_id("cmpl-")
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self._offset = 0

    def chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> Completion:
        return Completion(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def text(self, delta: str, logprobs: list[TokenLogprob] | None = None) -> str:
        item_logprobs = CompletionLogprobs.of(logprobs, self._offset) if logprobs else None
        self._offset += len(delta)
        choice = CompletionChoice(text=delta, finish_reason=None, logprobs=item_logprobs)
        return sse_event(self.chunk([choice]))

    def finish(self, finish_reason: FinishReason, usage: Usage | None = None) -> str:
        """The closing chunks: finish_reason, then usage if asked for, then ``[DONE]``."""
        events = sse_event(self.chunk([CompletionChoice(text="", finish_reason=finish_reason)]))
        if self.include_usage and usage is not None:
            events += sse_event(self.chunk([], usage=usage))
        return events + SSE_DONE

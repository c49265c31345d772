"""An LLM whose engine speaks a script: the Kingpost endpoint hooks over a tiny generate().

It answers every conversation with the words of SCRIPT, one token per word,
TOKEN_DELAY seconds apart (env, default 0). When a generation is closed before
its end (the client left) it writes how many tokens it had made to
MARKER_DIR/stopped. Its predict is typed, so its OpenAPI document has schemas.
"""

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel, Field

from kingpost.engines.generation import GeneratedToken, GenerationOutcome
from kingpost.engines.llm_endpoints import LLMEndpoints

SCRIPT = (
    "Kingpost streams this reply one word at a time so that a reader can watch it arrive "
    "and stop it whenever they like because every word takes its own little while "
) * 4


class Question(BaseModel):
    text: str = Field(max_length=200)
    times: int = Field(default=1, ge=1, le=5)


class Answer(BaseModel):
    text: str
    length: int


class Model(LLMEndpoints):
    def __init__(self, **kwargs):
        super().__init__(kwargs["config"], 0, kwargs.get("model_dir"))
        self.delay = float(os.environ.get("TOKEN_DELAY", "0"))
        markers = os.environ.get("MARKER_DIR")
        self.markers = Path(markers) if markers else None

    @property
    def context_length(self) -> int:
        return 4096

    def render_chat(self, turns):
        return "\n".join(f"{turn.role}: {turn.content}" for turn in turns) + "\nassistant:"

    def tokenize(self, text):
        return [len(word) for word in text.split()] or [0]

    async def generate(self, request):
        words = SCRIPT.split()
        limit = min(request.params.max_tokens, len(words))
        made = 0
        try:
            for word in words[:limit]:
                if self.delay:
                    await asyncio.sleep(self.delay)
                made += 1
                yield GeneratedToken(word + " ")
            reason = "length" if limit < len(words) else "stop"
            yield GenerationOutcome(reason, len(request.prompt), made)
        except (GeneratorExit, asyncio.CancelledError):
            if self.markers is not None and made < limit:
                (self.markers / "stopped").write_text(str(made))
            raise

    def predict(self, question: Question) -> Answer:
        text = " ".join([question.text] * question.times)
        return Answer(text=text, length=len(text))

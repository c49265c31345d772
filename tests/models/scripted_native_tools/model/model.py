"""The scripted LLM engine with a native tool syntax (Hermes / Qwen ``<tool_call>``)."""

from kingpost.engines.tool_calls import SYNTAXES
from tests.engines.scripted_engine import ScriptedEngine


class Model(ScriptedEngine):
    tool_syntax = next(syntax for syntax in SYNTAXES if syntax.name == "hermes")

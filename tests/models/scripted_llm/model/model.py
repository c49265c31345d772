"""The scripted LLM engine (tests/engines/scripted_engine.py) served as a model directory."""

from tests.engines.scripted_engine import ScriptedEngine


class Model(ScriptedEngine):
    pass

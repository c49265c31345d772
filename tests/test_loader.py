"""Several model directories in one process, each importing its own ``model`` package."""

from __future__ import annotations

import sys
from pathlib import Path

from kingpost.config import load_config
from kingpost.model.loader import ModelSource, describe_model, forget_modules
from kingpost.testing import InProcessServer


def write_model(directory: Path, word: str, package_init: bool) -> Path:
    """A Truss-style model whose model.py imports siblings both ways, as Truss models do."""
    package = directory / "model"
    (package / "tools").mkdir(parents=True)
    (directory / "config.yaml").write_text("model_name: m\n")
    if package_init:
        (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text(f"WORD = {word!r}\n")
    (package / "tools" / "__init__.py").write_text("")
    (package / "tools" / "shout.py").write_text(
        "from model.helpers import WORD\n\n\ndef shout():\n    return WORD.upper()\n"
    )
    (package / "model.py").write_text(
        "import sys\n\n"
        "from model.helpers import WORD\n"
        "from model.tools.shout import shout\n"
        "from . import helpers\n\n"
        "ONE_MODULE = helpers is sys.modules['model.helpers']\n\n\n"
        "class Model:\n"
        "    def predict(self, model_input):\n"
        "        return {'word': WORD, 'shout': shout(), 'one_module': ONE_MODULE}\n"
    )
    return directory


def model_class(directory: Path) -> type:
    source = ModelSource(directory.resolve(), load_config(directory))
    return describe_model(source).cls


def test_two_model_directories_keep_their_own_siblings(tmp_path: Path) -> None:
    first = write_model(tmp_path / "first", "alpha", package_init=True)
    second = write_model(tmp_path / "second", "beta", package_init=False)
    saved_path = list(sys.path)
    try:
        first_cls = model_class(first)
        second_cls = model_class(second)
        again = model_class(first)
    finally:
        sys.path[:] = saved_path
        forget_modules(tmp_path)
    assert first_cls().predict({}) == {
        "word": "alpha",
        "shout": "ALPHA",
        "one_module": True,
    }
    assert second_cls().predict({})["shout"] == "BETA"
    assert again().predict({})["word"] == "alpha"
    assert first_cls is not second_cls


def test_the_same_directory_loaded_again_is_the_same_class(tmp_path: Path) -> None:
    directory = write_model(tmp_path / "m", "gamma", package_init=True)
    saved_path = list(sys.path)
    try:
        assert model_class(directory) is model_class(directory)
    finally:
        sys.path[:] = saved_path
        forget_modules(tmp_path)


def test_forgetting_a_directory_reads_its_files_again(tmp_path: Path) -> None:
    directory = write_model(tmp_path / "m", "delta", package_init=True)
    saved_path = list(sys.path)
    try:
        before = model_class(directory)
        assert "model.helpers" in forget_modules(directory)
        (directory / "model" / "helpers.py").write_text("WORD = 'epsilon'\n")
        after = model_class(directory)
    finally:
        sys.path[:] = saved_path
        forget_modules(tmp_path)
    assert before().predict({})["word"] == "delta"
    assert after().predict({})["word"] == "epsilon"


def test_two_in_process_servers_serve_their_own_models_at_once(tmp_path: Path) -> None:
    first = write_model(tmp_path / "first", "alpha", package_init=True)
    second = write_model(tmp_path / "second", "beta", package_init=False)
    with InProcessServer(first) as one, InProcessServer(second) as two:
        assert one.client.post("/predict", json={}).json()["shout"] == "ALPHA"
        assert two.client.post("/predict", json={}).json()["shout"] == "BETA"
    assert str(first.resolve()) not in sys.path

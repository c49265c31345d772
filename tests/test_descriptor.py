"""The signature rules for hooks, decided once when the class is inspected."""

from __future__ import annotations

import fastapi
import pytest
from starlette.requests import Request

from kingpost.errors import ModelDefinitionError
from kingpost.model.descriptor import HookKind, ModelDescriptor


def describe(cls: type) -> ModelDescriptor:
    return ModelDescriptor.from_class(cls)


def test_a_hook_may_take_nothing() -> None:
    class Model:
        def predict(self):
            return 1

    hook = describe(Model).hooks["predict"]
    assert (hook.takes_inputs, hook.takes_request) == (False, False)


def test_a_single_argument_is_the_inputs_unless_annotated_as_request() -> None:
    class Model:
        def predict(self, request):  # named "request" but not annotated: it is the inputs
            return request

    hook = describe(Model).hooks["predict"]
    assert (hook.takes_inputs, hook.takes_request) == (True, False)


def test_a_single_request_argument_is_recognised_by_annotation() -> None:
    class Model:
        async def predict(self, anything: fastapi.Request):
            return None

    hook = describe(Model).hooks["predict"]
    assert (hook.takes_inputs, hook.takes_request) == (False, True)
    assert hook.kind is HookKind.ASYNC


def test_inputs_then_request() -> None:
    class Model:
        def chat_completions(self, inputs, req: Request):
            yield "x"

    hook = describe(Model).hooks["chat_completions"]
    assert (hook.takes_inputs, hook.takes_request) == (True, True)
    assert hook.kind is HookKind.SYNC_GENERATOR


def test_string_annotations_are_resolved() -> None:
    class Model:
        async def predict(self, inputs, request: "fastapi.Request"):  # noqa: UP037
            yield inputs

    hook = describe(Model).hooks["predict"]
    assert hook.takes_request
    assert hook.kind is HookKind.ASYNC_GENERATOR


def test_two_arguments_without_a_request_annotation_are_refused() -> None:
    class Model:
        def predict(self, inputs, request):
            return inputs

    with pytest.raises(ModelDefinitionError, match=r"Model\.predict: .*annotated as a request"):
        describe(Model)


def test_request_before_inputs_is_refused() -> None:
    class Model:
        def predict(self, request: fastapi.Request, inputs):
            return inputs

    with pytest.raises(ModelDefinitionError, match=r"Model\.predict: .*after the inputs"):
        describe(Model)


def test_three_arguments_are_refused() -> None:
    class Model:
        def preprocess(self, a, b, c):
            return a

    with pytest.raises(ModelDefinitionError, match=r"Model\.preprocess: takes 3 arguments"):
        describe(Model)


def test_var_args_are_refused() -> None:
    class Model:
        def embeddings(self, *args):
            return args

    with pytest.raises(ModelDefinitionError, match=r"Model\.embeddings: \*args"):
        describe(Model)


def test_websocket_and_predict_cannot_coexist() -> None:
    class Model:
        def predict(self, inputs):
            return inputs

        async def websocket(self, ws):
            return None

    with pytest.raises(ModelDefinitionError, match="both websocket and predict"):
        describe(Model)


def test_staticmethod_hooks_have_no_self() -> None:
    class Model:
        @staticmethod
        def predict(inputs):
            return inputs

    assert describe(Model).hooks["predict"].takes_inputs


def test_endpoint_hooks_are_listed_in_route_order() -> None:
    class Model:
        def responses(self, inputs):
            return inputs

        def chat_completions(self, inputs):
            return inputs

    assert describe(Model).endpoint_hooks == ["chat_completions", "responses"]

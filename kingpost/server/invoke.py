"""Calling one hook: argument shape, sync or async, concurrency slot, cancellation.

Everything here is decided when the model is loaded; a call is a couple of
attribute reads and one await.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from pydantic import BaseModel, ValidationError

from kingpost.errors import ClientDisconnectedError, InvalidInputError
from kingpost.model.descriptor import HookDescriptor, HookKind
from kingpost.server.exchange import Exchange


class StreamResult:
    """A hook returned a generator: what to stream and how to free its slot."""

    __slots__ = ("on_done", "source")

    def __init__(self, source: Any, on_done: Callable[[], None] | None) -> None:
        self.source = source
        self.on_done = on_done


def is_generator(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


class HookRunner:
    """A bound hook plus what is needed to call it the way its signature asks."""

    def __init__(
        self,
        descriptor: HookDescriptor,
        model: Any,
        executor: Executor,
        slot: asyncio.Semaphore | None = None,
    ) -> None:
        self.descriptor = descriptor
        self.name = descriptor.name
        self.fn = getattr(model, descriptor.name)
        self.kind = descriptor.kind
        self.takes_inputs = descriptor.takes_inputs
        self.takes_request = descriptor.takes_request
        self.executor = executor
        self.slot = slot
        annotation = descriptor.input_annotation
        self.input_model: type[BaseModel] | None = (
            annotation
            if inspect.isclass(annotation) and issubclass(annotation, BaseModel)
            else None
        )

    def arguments(self, inputs: Any, request: Any) -> tuple[Any, ...]:
        if self.takes_inputs:
            if self.input_model is not None and not isinstance(inputs, self.input_model):
                inputs = validate_input(self.input_model, inputs)
            return (inputs, request) if self.takes_request else (inputs,)
        return (request,) if self.takes_request else ()

    async def __call__(self, ex: Exchange, inputs: Any, request: Any) -> Any:
        """Run the hook for one request; generators come back as a StreamResult.

        The slot (if any) is held until the hook returns, or, for a generator,
        until the stream's producer has finished with it.
        """
        if ex.disconnected:
            raise ClientDisconnectedError("client disconnected before the step ran")
        args = self.arguments(inputs, request)
        slot = self.slot
        if slot is not None:
            await slot.acquire()
        kind = self.kind
        if kind is HookKind.ASYNC:
            try:
                result = await cancel_on_disconnect(ex, self.fn(*args))
            except BaseException:
                if slot is not None:
                    slot.release()
                raise
        elif kind is HookKind.SYNC:
            result = await self._run_in_thread(args)
        else:  # generator functions: creating the generator runs no model code
            return StreamResult(self.fn(*args), slot.release if slot is not None else None)
        if is_generator(result):
            return StreamResult(result, slot.release if slot is not None else None)
        if slot is not None and kind is HookKind.ASYNC:
            slot.release()
        return result

    async def _run_in_thread(self, args: tuple[Any, ...]) -> Any:
        """Run a sync hook in the pool; its slot is released when the thread is done.

        Abandoning the wait (timeout) does not free the slot early: the thread
        still owns it until the hook returns.
        """
        slot = self.slot
        future = self.executor.submit(contextvars.copy_context().run, self.fn, *args)
        try:
            result = await asyncio.wrap_future(future)
        except BaseException:
            if slot is not None:
                if future.done():
                    slot.release()
                else:
                    loop = asyncio.get_running_loop()
                    future.add_done_callback(lambda _: loop.call_soon_threadsafe(slot.release))
            raise
        if slot is not None and not is_generator(result):
            slot.release()
        return result


async def cancel_on_disconnect(ex: Exchange, awaitable: Any) -> Any:
    """Await a coroutine of the model, cancelling it if the client goes away."""
    task = asyncio.current_task()
    assert task is not None

    def cancel() -> None:
        task.cancel()

    ex.on_disconnect(cancel)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if ex.disconnected and task.uncancel() == 0:
            raise ClientDisconnectedError("client disconnected; the hook was cancelled") from None
        raise
    finally:
        ex.remove_disconnect_callback(cancel)


def validate_input(model: type[BaseModel], inputs: Any) -> BaseModel:
    try:
        return model.model_validate(inputs)
    except ValidationError as exc:
        raise InvalidInputError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"field '{field}': {error['msg']}")
    return "invalid input: " + "; ".join(parts)

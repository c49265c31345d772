"""Calling one hook: argument shape, sync or async, concurrency slot, cancellation.

Everything here is decided when the model is loaded; a call is a couple of
attribute reads and one await.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Coroutine, Generator
from typing import Any

from pydantic import BaseModel, ValidationError

from kingpost.errors import ClientDisconnectedError, InvalidInputError
from kingpost.limits import BoundedSlots
from kingpost.model.descriptor import HookDescriptor, HookKind
from kingpost.observe.metrics import QUEUE
from kingpost.server.exchange import CancelOnDisconnect, Exchange
from kingpost.server.streaming import StreamResult
from kingpost.server.threads import HookThreads


def is_generator(value: Any) -> bool:
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


class HookRunner:
    """A bound hook plus what is needed to call it the way its signature asks."""

    def __init__(
        self,
        descriptor: HookDescriptor,
        model: Any,
        threads: HookThreads,
        slot: asyncio.Semaphore | None = None,
        watch_client: bool = True,
    ) -> None:
        self.descriptor = descriptor
        self.name = descriptor.name
        self.fn = getattr(model, descriptor.name)
        self.kind = descriptor.kind
        self.takes_inputs = descriptor.takes_inputs
        self.takes_request = descriptor.takes_request
        self.threads = threads
        self.slot = slot
        self.watch_client = watch_client
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
            await acquire_slot(ex, slot)
        kind = self.kind
        if kind is HookKind.ASYNC:
            try:
                result = await run_coroutine(ex, self.fn(*args))
            except BaseException:
                if slot is not None:
                    slot.release()
                raise
        elif kind is HookKind.SYNC:
            result = await self._run_in_thread(ex, args)
        else:  # generator functions: creating the generator runs no model code
            return StreamResult(self.fn(*args), slot.release if slot is not None else None)
        if is_generator(result):
            return StreamResult(result, slot.release if slot is not None else None)
        if slot is not None and kind is HookKind.ASYNC:
            slot.release()
        return result

    async def _run_in_thread(self, ex: Exchange, args: tuple[Any, ...]) -> Any:
        """Run a sync hook in a pool thread; its slot is released when the thread is done.

        Abandoning the wait (timeout) does not free the slot early: the thread
        still owns it until the hook returns. The thread cannot be interrupted, so
        the client is only watched meanwhile if a later step could still be skipped.
        """
        slot = self.slot
        try:
            call = self.threads.call(self.fn, *args)
        except BaseException:  # the pool is shut down: the slot was never handed on
            if slot is not None:
                slot.release()
            raise
        if self.watch_client:
            ex.begin_wait()
        else:
            ex.arm_deadline()
        try:
            result = await call.future
        except BaseException:
            if slot is not None:
                call.when_finished(slot.release)
            raise
        if slot is not None and not is_generator(result):
            slot.release()
        return result


async def acquire_slot(ex: Exchange, slot: asyncio.Semaphore) -> None:
    """Take a concurrency slot; a client that leaves while queued gives up its place."""
    if not slot.locked():
        await slot.acquire()  # returns at once
        QUEUE.observe_no_wait()
        return
    ex.begin_wait()
    QUEUE.waiting += 1
    queued = time.perf_counter()
    try:
        # Bounded slots refuse (503) once runtime.max_queue requests wait already.
        waiting = slot.acquire_queued() if isinstance(slot, BoundedSlots) else slot.acquire()
        await cancel_on_disconnect(ex, waiting)
    finally:
        QUEUE.waiting -= 1
        QUEUE.observe(time.perf_counter() - queued)
    if ex.disconnected:
        slot.release()
        raise ClientDisconnectedError("client disconnected while waiting for a slot")


async def run_coroutine(ex: Exchange, coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Await a hook's coroutine, cancelling it if the client goes away.

    It is started right here: one that finishes without suspending (no I/O) is
    done before any watch on the client is needed. Only one that suspends gets
    the watch, the deadline and cancellation.
    """
    try:
        pending = coroutine.send(None)
    except StopIteration as done:
        return done.value
    ex.begin_wait()
    return await cancel_on_disconnect(ex, Resumed(coroutine, pending))


class Resumed:
    """Awaitable rest of a coroutine that has already run up to its first suspension.

    The awaiting task gets what the coroutine was waiting on and drives the
    coroutine from there, passing in whatever it is sent or thrown
    (cancellation included): the same steps ``await`` would have taken.
    """

    __slots__ = ("coroutine", "pending")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coroutine = coroutine
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine = self.coroutine
        pending = self.pending
        while True:
            try:
                value = yield pending
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:
                try:
                    pending = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    pending = coroutine.send(value)
                except StopIteration as done:
                    return done.value


async def cancel_on_disconnect(ex: Exchange, awaitable: Any) -> Any:
    """Await a coroutine of the model, cancelling it if the client goes away."""
    with CancelOnDisconnect(ex):
        return await awaitable


def validate_input(model: type[BaseModel], inputs: Any) -> BaseModel:
    try:
        return model.model_validate(inputs)
    except ValidationError as exc:
        raise InvalidInputError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Truss's wording: a heading, then one indented line per field.

    Input Parsing Error:
      `prompt`: Field required.
    """
    errors = exc.errors(include_url=False, include_input=False)
    lines = ["Input Parsing Error:" if len(errors) == 1 else "Input Parsing Errors:"]
    for error in errors:
        lines.append(f"  `{_field_path(error['loc'])}`: {error['msg']}.")
    return "\n".join(lines)


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``('items', 1, 'value')`` as ``items[1].value``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path

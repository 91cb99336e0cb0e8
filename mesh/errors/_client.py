"""Client side: a failed call becomes a tree error with its details decoded.

`from_call` is the one decoder of ``grpc.aio.AioRpcError``; `wrap` applies it to every call
made through a stub (or one multicallable), so callers catch our tree, never grpc's error.
Works over any ``grpc.aio.Channel``, the tunnel's ``TunnelChannel`` included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any, TypeVar, cast

import grpc
from google.rpc import status_pb2
from grpc_status import rpc_status

from mesh.errors._tree import StatusError

__all__ = ["from_call", "wrap"]

T = TypeVar("T")

_DETAILS_KEY = "grpc-status-details-bin"


def from_call(error: grpc.RpcError) -> StatusError:
    """The tree error a failed call stands for (like api-core's ``from_grpc_error``).

    Details come from ``grpc-status-details-bin`` when its code and message agree with
    the call's; otherwise (a status from a proxy that rewrote it, or none) the error has
    the call's code and message and no details. Other trailing metadata is kept in
    ``trailers``.

    Args:
        error: a ``grpc.aio.AioRpcError`` (or any ``grpc.RpcError`` that is a ``grpc.Call``).

    Returns:
        An instance of the class registered for the call's code.
    """
    call = cast(grpc.Call, error)
    code = call.code()
    message = call.details() or ""
    pairs = tuple((str(k), v) for k, v in (call.trailing_metadata() or ()))
    trailers = tuple((k, v) for k, v in pairs if k != _DETAILS_KEY)
    try:
        status = rpc_status.from_call(call)
    except ValueError:  # the details disagree with the call: trust the call
        status = None
    if status is None:
        status = status_pb2.Status(code=code.value[0], message=message)
    return StatusError.from_status(status, trailers=trailers)


class _Call:
    """A call whose failure raises the tree error (awaitable and async-iterable)."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from self._call.__await__())
        except grpc.RpcError as err:
            raise from_call(err) from err

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for message in self._call:
                yield message
        except grpc.RpcError as err:
            raise from_call(err) from err

    async def read(self) -> Any:
        """``call.read()``, raising the tree error."""
        try:
            return await self._call.read()
        except grpc.RpcError as err:
            raise from_call(err) from err

    def __getattr__(self, name: str) -> Any:
        # cancel(), initial_metadata(), write(), done_writing(), ... of the grpc call
        return getattr(self._call, name)


class _MultiCallable:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> _Call:
        return _Call(self._inner(*args, **kwargs))


class _Stub:
    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._stub, name)
        if name.startswith("_") or not callable(value):
            return value
        return _MultiCallable(value)


def wrap(target: T) -> T:
    """A stub (or one multicallable) whose calls raise the tree instead of ``AioRpcError``.

    ``await stub.Method(request, timeout=…)`` raises e.g. `NotFound` with its
    ``resource``; ``async for`` over a streaming call raises the same way. The wrapped
    object has the type of the original, so generated stub types still check.

    Args:
        target: a generated stub, or a multicallable such as ``channel.unary_unary(…)``.

    Returns:
        The wrapped stub or multicallable.
    """
    if callable(target):
        return cast(T, _MultiCallable(target))
    return cast(T, _Stub(target))

"""Routing the hospital services' calls to the servicers of the active profile.

Each profile's servicers register on a registrar of their own (a :class:`TunnelServer` used
only to register and look up handlers). The edge's real :class:`TunnelServer` gets one
generic handler per service from :class:`ServiceSwitch`, which looks the method up in the
*active* generation at the moment a call arrives. The handler it returns is that
generation's, so a call finishes on the profile it started with, whatever is applied
meanwhile; each generation counts its calls in flight so the old one is closed only once
they are done (or a bound has passed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from mesh.tunnel import TunnelServer

__all__ = ["Generation", "ServiceSwitch"]


class Generation:
    """One profile's servicers and their calls in flight.

    Args:
        registrar: where the profile's servicers registered.
        label: for logs (e.g. ``"revision 3"``).
    """

    def __init__(self, registrar: TunnelServer, label: str = "") -> None:
        self.registrar = registrar
        self.label = label
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    @property
    def calls(self) -> int:
        """Calls (and task attempts) in flight on this generation."""
        return self._calls

    def enter(self) -> None:
        """Counts one call in."""
        self._calls += 1
        self._idle.clear()

    def leave(self) -> None:
        """Counts one call out."""
        self._calls -= 1
        if self._calls <= 0:
            self._calls = 0
            self._idle.set()

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """Counts the block as one call."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    async def drained(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Waits until no call is in flight, at most ``timeout`` seconds; True when idle."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def lookup(self, method: str, metadata: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The generation's handler of ``method``, counted until the call ends."""
        counted = self._handlers.get(method)
        if counted is None:
            handler = self.registrar.lookup(method, metadata)
            if handler is None:
                return None
            # The registrar's handlers are fixed once built: wrap each method once.
            counted = self._handlers[method] = _counted(handler, self)
        self.enter()
        return counted


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or inspect.isawaitable(value):
        return await value
    return value


def _counted(handler: Any, generation: Generation) -> grpc.RpcMethodHandler[Any, Any]:
    if not handler.response_streaming:
        name = "stream_unary" if handler.request_streaming else "unary_unary"
        call = getattr(handler, name)

        async def unary(request: Any, context: Any) -> Any:
            try:
                return await _maybe_await(call(request, context))
            finally:
                generation.leave()

        replaced: grpc.RpcMethodHandler[Any, Any] = handler._replace(**{name: unary})
        return replaced
    name = "stream_stream" if handler.request_streaming else "unary_stream"
    call = getattr(handler, name)

    async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            result = call(request, context)
            if hasattr(result, "__aiter__"):
                async for response in result:
                    yield response
            else:
                await _maybe_await(result)
        finally:
            generation.leave()

    streamed: grpc.RpcMethodHandler[Any, Any] = handler._replace(**{name: streaming})
    return streamed


class _Route(grpc.GenericRpcHandler):
    """The generic handler of one service on the edge's server."""

    def __init__(self, switch: ServiceSwitch, service: str) -> None:
        self._switch = switch
        self._prefix = f"/{service}/"
        self._service = service

    def service_name(self) -> str:
        return self._service

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if not method.startswith(self._prefix):
            return None
        return self._switch.active.lookup(method, handler_call_details.invocation_metadata)


class ServiceSwitch:
    """Serves the active generation's services on ``server`` (see the module docstring).

    Args:
        server: the edge's tunnel server.
        first: the generation active at start; its services are the ones routed.
    """

    def __init__(self, server: TunnelServer, first: Generation) -> None:
        self.active = first
        self._services = tuple(first.registrar.services)
        server.add_generic_rpc_handlers([_Route(self, name) for name in self._services])

    def switch(self, generation: Generation) -> Generation:
        """Makes ``generation`` active; returns the one it replaced.

        Raises:
            ValueError: it serves other services than the first (a profile change cannot
                add or remove a service; the servicers are the same code).
        """
        if tuple(generation.registrar.services) != self._services:
            raise ValueError("a generation must serve the same services as the first")
        old, self.active = self.active, generation
        return old

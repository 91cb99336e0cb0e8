"""Edge side: `TunnelServer`, a ``grpc.aio.Server`` look-alike that serves calls from tunnels.

Generated ``add_*Servicer_to_server`` functions register on it like on a real server, so one
servicer class serves a listening port and the tunnel alike. Each inner call runs its handler
in a task owned by the tunnel session, with a `TunnelServicerContext`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import google.rpc.status_pb2 as status_pb2
import grpc

from mesh.tunnel._hooks import CallHook, CallInfo, HookRejection
from mesh.tunnel._metadata import (
    MetadataPairs,
    entries_from_pairs,
    status_from_trailers,
)
from mesh.tunnel._session import Session
from mesh.tunnel._stream import ServerStream, StreamEnded

__all__ = ["TunnelServer", "TunnelServicerContext", "call_time_left"]

_log = logging.getLogger("mesh.tunnel")

_CALL_DEADLINE: contextvars.ContextVar[tuple[asyncio.Task[Any] | None, float] | None] = (
    contextvars.ContextVar("hplus_tunnel_call_deadline", default=None)
)
"""The task serving a tunnel call, and the call's deadline (event-loop time)."""


def call_time_left() -> float | None:
    """Seconds left before the deadline of the tunnel call the current task serves.

    ``None`` when the task serves no call or the caller set no deadline. A task started
    from within a call (a background refresh) inherits the context but not the deadline:
    only the call's own task sees it.
    """
    found = _CALL_DEADLINE.get()
    if found is None:
        return None
    task, deadline = found
    if task is not asyncio.current_task():
        return None
    return max(deadline - asyncio.get_running_loop().time(), 0.0)


class _HandlerCallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str, invocation_metadata: MetadataPairs) -> None:
        self.method = method
        self.invocation_metadata = invocation_metadata  # type: ignore[assignment]


class _Abort(grpc.aio.AbortError):
    """Raised by `TunnelServicerContext.abort`.

    A grpc ``AbortError``, so error mappings written for ``grpc.aio`` servers
    (``mesh.errors``) let it pass on the tunnel too.
    """


class TunnelServer(grpc.aio.Server):
    """The registrar and dispatcher of the edge: servicers register here, tunnels call them.

    Args:
        hooks: Call hooks (tracing, metrics, authorization), run around every call.
    """

    def __init__(self, *, hooks: Sequence[CallHook] = ()) -> None:
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._services: list[str] = []
        self._hooks = tuple(hooks)
        self._sessions: set[Session] = set()

    # -- registration (what generated code calls) -----------------------------------------

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]
    ) -> None:
        """Adds generic handlers (``grpc.method_handlers_generic_handler`` and the like)."""
        for handler in generic_rpc_handlers:
            self._generic.append(handler)
            name = getattr(handler, "service_name", None)
            if callable(name):
                self._add_service(str(name()))

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """Adds the handlers of one service, keyed by method name."""
        for method, handler in method_handlers.items():
            self._registered[f"/{service_name}/{method}"] = handler
        self._add_service(service_name)

    def _add_service(self, name: str) -> None:
        if name not in self._services:
            self._services.append(name)

    @property
    def services(self) -> list[str]:
        """Full names of the registered services (for the hello)."""
        return list(self._services)

    def lookup(
        self, method: str, metadata: MetadataPairs
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Finds the handler of ``method``, or ``None``."""
        handler = self._registered.get(method)
        if handler is not None:
            return handler
        details = _HandlerCallDetails(method, metadata)
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    # -- grpc.aio.Server surface that has no meaning for a tunnel -------------------------

    def add_insecure_port(self, address: str) -> int:
        """Not supported: a tunnel server listens on no port."""
        raise NotImplementedError("TunnelServer serves tunnels, not ports")

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        """Not supported: a tunnel server listens on no port."""
        raise NotImplementedError("TunnelServer serves tunnels, not ports")

    async def start(self) -> None:
        """Nothing to start: tunnels (`EdgeTunnel`) bring the calls."""

    async def stop(self, grace: float | None) -> None:
        """Drains every tunnel currently attached (see `Session.drain`)."""
        await asyncio.gather(*(session.drain(grace) for session in list(self._sessions)))

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Not tracked: returns False at once."""
        return False

    # -- dispatch --------------------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """Remembers a session so `stop` can drain it."""
        self._sessions.add(session)

    def detach(self, session: Session) -> None:
        """Forgets a session."""
        self._sessions.discard(session)

    def on_open(self, stream: ServerStream) -> None:
        """Starts the handler of a new inner call in a task owned by its session."""
        session = stream.session
        stream.task = session.spawn(self._serve(stream), f"{session.name}-call-{stream.id}")

    async def _serve(self, stream: ServerStream) -> None:
        loop = asyncio.get_running_loop()
        metadata = list(stream.metadata)
        trace = stream.trace
        if trace is not None and trace.traceparent:
            for key, _ in metadata:
                if key == "traceparent":
                    break
            else:
                metadata.append(("traceparent", trace.traceparent))
                if trace.tracestate:
                    metadata.append(("tracestate", trace.tracestate))
        info = CallInfo(
            method=stream.method,
            metadata=metadata,
            trace=trace,
            hospital_id=stream.session.hello.hospital_id,
            session=stream.session.name,
            started=loop.time(),
            timeout=None if stream.deadline is None else stream.deadline - loop.time(),
        )
        context = TunnelServicerContext(stream, metadata)
        if stream.deadline is not None:
            # What the servicer's work below may use (call_time_left): this task only.
            _CALL_DEADLINE.set((asyncio.current_task(), stream.deadline))
        started: list[CallHook] = []
        try:
            if not stream.method.startswith("/") or stream.method.count("/") != 2:
                context._finish(grpc.StatusCode.INVALID_ARGUMENT, "Malformed method name")
                return
            handler = self.lookup(stream.method, metadata)
            if handler is None:
                context._finish(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
                return
            try:
                for hook in self._hooks:
                    hook.on_start(info)
                    started.append(hook)
            except HookRejection as rejection:
                context._finish(rejection.code, rejection.details)
                return
            await _run_handler(handler, context)
        except asyncio.CancelledError:
            context._cancelled = not stream.ended or bool(stream.cancel_reason)
            if stream.ended:
                return  # the caller cancelled or the deadline passed; nothing to send
            raise
        except Exception:  # a failing hook: ours, so INTERNAL (servicer errors are handled)
            _log.exception("tunnel call plumbing failed for %s", stream.method)
            context._finish(grpc.StatusCode.INTERNAL, "Internal error")
        finally:
            context._set_done()
            code, details = context._outcome()
            for hook in reversed(started):
                try:
                    hook.on_end(info, code, details)
                except Exception:
                    _log.exception("call hook failed")


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _run_handler(handler: Any, context: TunnelServicerContext) -> None:
    context._deserializer = handler.request_deserializer
    context._serializer = handler.response_serializer
    try:
        if not handler.request_streaming:
            request = await context._single_request()
            if request is None:
                return
            if not handler.response_streaming:
                response = await _maybe_await(handler.unary_unary(request, context))
                await context._finish_unary(response)
                return
            result = handler.unary_stream(request, context)
        elif not handler.response_streaming:
            response = await _maybe_await(handler.stream_unary(context._requests(), context))
            await context._finish_unary(response)
            return
        else:
            result = handler.stream_stream(context._requests(), context)
        if hasattr(result, "__aiter__"):
            async for response in result:
                await context.write(response)
        else:
            await _maybe_await(result)
        context._finish_from_state()
    except _Abort:
        context._finish_from_state()
    except StreamEnded:
        return
    except Exception as exc:
        if context._stream.ended:
            return
        _log.exception("servicer of %s failed", context._stream.method)
        if context._code is not grpc.StatusCode.OK:
            # As grpc.aio does: a status the handler set before raising wins (the generated
            # base's unimplemented methods set UNIMPLEMENTED, then raise).
            context._finish_from_state()
            return
        context._finish(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


class TunnelServicerContext(grpc.aio.ServicerContext[Any, Any]):
    """The ``grpc.aio.ServicerContext`` of a call that arrived through a tunnel."""

    def __init__(self, stream: ServerStream, metadata: MetadataPairs) -> None:
        self._stream = stream
        self._metadata = tuple(metadata)
        self._code = grpc.StatusCode.OK
        self._details = ""
        self._code_set = False
        self._trailers: MetadataPairs = []
        self._initial: MetadataPairs | None = None
        self._done = False
        self._cancelled = False
        self._aborted = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._deserializer: Callable[[bytes], Any] | None = None
        self._serializer: Callable[[Any], bytes] | None = None

    # -- requests --------------------------------------------------------------------------

    def _decode(self, data: bytes) -> Any:
        if self._deserializer is None:
            return data
        try:
            return self._deserializer(data)
        except Exception:
            self._finish(grpc.StatusCode.INTERNAL, "Exception deserializing request!")
            raise StreamEnded from None

    async def _single_request(self) -> Any:
        data = await self._stream.receive()
        if data is None:
            if not self._stream.ended:
                self._finish(grpc.StatusCode.INTERNAL, "Expected exactly one request message")
            return None
        return self._decode(data)

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            data = await self._stream.receive()
            if data is None:
                if self._stream.ended:
                    raise StreamEnded
                return
            yield self._decode(data)

    async def read(self) -> Any:
        """Returns the next request message, or ``grpc.aio.EOF``."""
        data = await self._stream.receive()
        if data is None:
            return grpc.aio.EOF
        return self._decode(data)

    # -- responses -------------------------------------------------------------------------

    def _encode(self, message: Any) -> bytes:
        if self._serializer is None:
            return bytes(message)
        try:
            return self._serializer(message)
        except Exception:
            self._finish(grpc.StatusCode.INTERNAL, "Failed to serialize response!")
            raise StreamEnded from None

    def _check_size(self, data: bytes) -> bool:
        limit = self._stream.session.peer_max_message
        if len(data) > limit:
            self._finish(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(data)} vs. {limit})",
            )
            return False
        return True

    async def write(self, message: Any) -> None:
        """Sends one response message (streaming responses)."""
        if self._stream.ended:
            raise StreamEnded
        data = self._encode(message)
        if not self._check_size(data):
            raise StreamEnded
        self._flush_headers()
        await self._stream.send_data(data)

    def _flush_headers(self) -> None:
        if not self._stream.headers_sent and self._initial is not None:
            self._stream.send_headers(entries_from_pairs(self._initial))

    async def send_initial_metadata(self, initial_metadata: Any) -> None:
        """Sends the response headers now."""
        if self._stream.headers_sent:
            raise grpc.aio.UsageError("Send initial metadata failed: already sent")
        self._initial = list(initial_metadata)
        self._flush_headers()

    async def _finish_unary(self, response: Any) -> None:
        stream = self._stream
        if stream.ended:
            return
        if self._code is not grpc.StatusCode.OK or response is None:
            if self._code is grpc.StatusCode.OK:
                self._code, self._details = grpc.StatusCode.INTERNAL, "No response message"
            self._finish_from_state()
            return
        data = self._encode(response)
        if not self._check_size(data):
            return
        session = stream.session
        headers = (
            None
            if stream.headers_sent or self._initial is None
            else entries_from_pairs(self._initial)
        )
        if session.revision >= 2 and len(data) <= min(
            stream.send_credit, session.config.chunk_bytes
        ):
            trailers = entries_from_pairs(self._trailers)
            status = status_from_trailers(0, self._details, trailers)
            stream.close(status, trailers, headers=headers, message=data)
            return
        self._flush_headers()
        await stream.send_data(data)
        self._finish_from_state()

    def _finish_from_state(self) -> None:
        self._finish(self._code, self._details)

    def _finish(self, code: grpc.StatusCode, details: str) -> None:
        stream = self._stream
        self._code, self._details = code, details
        if stream.ended:
            return
        trailers = entries_from_pairs(self._trailers)
        status = status_from_trailers(code.value[0], details, trailers)
        headers = None
        if self._initial is not None and not stream.headers_sent:
            headers = entries_from_pairs(self._initial)
            if stream.session.revision < 2:
                stream.send_headers(headers)
                headers = None
        stream.close(status, trailers, headers=headers)

    def _outcome(self) -> tuple[grpc.StatusCode, str]:
        if self._cancelled:
            return grpc.StatusCode.CANCELLED, self._stream.cancel_reason
        return self._code, self._details

    def _set_done(self) -> None:
        if self._done:
            return
        self._done = True
        if not self._stream.ended:  # a handler that ended without a status: close it
            self._finish_from_state()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _log.exception("done callback failed")

    # -- status ----------------------------------------------------------------------------

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> NoReturn:
        """Ends the call with ``code`` and ``details`` (and trailers, e.g. status details).

        Raises:
            grpc.aio.UsageError: ``code`` is OK, or the call was aborted before.
        """
        if code is grpc.StatusCode.OK:
            raise grpc.aio.UsageError("Abort with OK status is not allowed")
        if self._aborted:
            raise grpc.aio.UsageError("Abort already called!")
        self._aborted = True
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailers = list(trailing_metadata)
        raise _Abort

    async def abort_with_status(self, status: Any) -> NoReturn:
        """Aborts with a ``grpc.Status`` (as built by ``grpc_status.rpc_status.to_status``)."""
        await self.abort(status.code, status.details, status.trailing_metadata)

    def set_code(self, code: grpc.StatusCode) -> None:
        """Sets the status code the call ends with."""
        self._code = code

    def set_details(self, details: str) -> None:
        """Sets the status message the call ends with."""
        self._details = details

    def code(self) -> grpc.StatusCode:
        """The status code set so far."""
        return self._code

    def details(self) -> str:
        """The status message set so far."""
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Any) -> None:
        """Sets the trailers the call ends with."""
        self._trailers = list(trailing_metadata)

    def trailing_metadata(self) -> Any:
        """The trailers set so far."""
        return tuple(self._trailers)

    def invocation_metadata(self) -> Any:
        """The caller's request headers, ``-bin`` values as bytes."""
        return self._metadata

    def time_remaining(self) -> Any:
        """Seconds left before the caller's deadline (``None`` without one)."""
        deadline = self._stream.deadline
        if deadline is None:
            return None
        return max(deadline - asyncio.get_running_loop().time(), 0.0)

    def peer(self) -> str:
        """``tunnel:<hospital>/<session>`` (the cloud side of the tunnel)."""
        session = self._stream.session
        return f"tunnel:{session.hello.hospital_id}/{session.welcome.session_id or session.name}"

    def peer_identities(self) -> Iterable[bytes] | None:
        """None: the tunnel authenticates the edge, not the cloud caller."""
        return None

    def peer_identity_key(self) -> str | None:
        """None (see `peer_identities`)."""
        return None

    def auth_context(self) -> Mapping[str, Iterable[bytes]]:
        """Empty: authentication happened when the tunnel was set up."""
        return {}

    def set_compression(self, compression: grpc.Compression) -> None:
        """Ignored: tunnel frames are not compressed."""

    def disable_next_message_compression(self) -> None:
        """Ignored: tunnel frames are not compressed."""

    def cancelled(self) -> bool:
        """True if the caller cancelled or the deadline passed."""
        return self._cancelled or bool(self._stream.cancel_reason)

    def done(self) -> bool:
        """True once the handler has finished."""
        return self._done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Calls ``callback(context)`` when the handler finishes."""
        if self._done:
            callback(self)
        else:
            self._callbacks.append(callback)

    def status_proto(self) -> status_pb2.Status:
        """The status the call ends (or ended) with, details included."""
        trailers = entries_from_pairs(self._trailers)
        return status_from_trailers(self._code.value[0], self._details, trailers)

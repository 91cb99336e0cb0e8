"""Cloud side: `TunnelChannel`, a ``grpc.aio.Channel`` whose calls travel through a tunnel.

Generated stubs take it like any channel. Call objects behave like ``grpc.aio``'s: awaitable
or async-iterable, ``initial_metadata()``, ``trailing_metadata()``, ``code()``, ``details()``,
``cancel()``; failures raise ``grpc.aio.AioRpcError`` with code, details and trailers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._errors import TunnelClosed, make_status, reason_of
from mesh.tunnel._hooks import CallHook, CallInfo, HookRejection
from mesh.tunnel._metadata import MetadataPairs, entries_from_pairs
from mesh.tunnel._session import Session
from mesh.tunnel._stream import CallerStream, Final, StreamEnded

__all__ = ["SessionPicker", "TunnelChannel"]

SessionPicker = Callable[[], Session | None]
"""Returns the session a new call should use, or ``None`` when no tunnel is up."""

_log = logging.getLogger("mesh.tunnel")
_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_Serializer = Callable[[Any], bytes] | None
_Deserializer = Callable[[bytes], Any] | None


class TunnelChannel(grpc.aio.Channel):
    """A channel to one hospital's edge, through its tunnel session(s).

    Args:
        sessions: The session to use, or a callable that picks one per call (several
            tunnels of one hospital, reconnects). ``None`` from the picker fails the call
            with UNAVAILABLE.
        hooks: Call hooks (tracing, metrics, authorization), run around every call.
    """

    def __init__(self, sessions: Session | SessionPicker, *, hooks: Sequence[CallHook] = ()):
        if isinstance(sessions, Session):
            session = sessions
            self._pick: SessionPicker = lambda: session
        else:
            self._pick = sessions
        self._hooks = tuple(hooks)
        # Decided once per channel, not per call: most hooks never look at messages.
        self._message_hooks = tuple(
            h for h in self._hooks if type(h).on_message is not CallHook.on_message
        )
        self._closed = False

    def pick(self) -> Session | None:
        """Returns the session a call started now would use."""
        if self._closed:
            return None
        return self._pick()

    @property
    def hooks(self) -> tuple[CallHook, ...]:
        """The call hooks."""
        return self._hooks

    @property
    def message_hooks(self) -> tuple[CallHook, ...]:
        """The hooks that override `CallHook.on_message`."""
        return self._message_hooks

    async def __aenter__(self) -> TunnelChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        """Stops new calls; the tunnel itself belongs to the gateway and stays up."""
        self._closed = True

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY while a tunnel accepts calls, else TRANSIENT_FAILURE (or SHUTDOWN)."""
        if self._closed:
            return grpc.ChannelConnectivity.SHUTDOWN
        session = self._pick()
        if session is not None and session.accepting_calls:
            return grpc.ChannelConnectivity.READY
        return grpc.ChannelConnectivity.TRANSIENT_FAILURE

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Not tracked for tunnels: raises to say so."""
        raise NotImplementedError("TunnelChannel does not report state changes")

    async def channel_ready(self) -> None:
        """Returns if a tunnel is up, else raises UNAVAILABLE."""
        if self.get_state() is not grpc.ChannelConnectivity.READY:
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "no tunnel to the edge", [], [])

    def unary_unary(
        self,
        method: str,
        request_serializer: _Serializer = None,
        response_deserializer: _Deserializer = None,
        _registered_method: bool = False,
    ) -> _UnaryUnaryMultiCallable:
        """Returns a callable for a unary-unary method."""
        return _UnaryUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def unary_stream(
        self,
        method: str,
        request_serializer: _Serializer = None,
        response_deserializer: _Deserializer = None,
        _registered_method: bool = False,
    ) -> _UnaryStreamMultiCallable:
        """Returns a callable for a unary-stream method."""
        return _UnaryStreamMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_unary(
        self,
        method: str,
        request_serializer: _Serializer = None,
        response_deserializer: _Deserializer = None,
        _registered_method: bool = False,
    ) -> _StreamUnaryMultiCallable:
        """Returns a callable for a stream-unary method."""
        return _StreamUnaryMultiCallable(self, method, request_serializer, response_deserializer)

    def stream_stream(
        self,
        method: str,
        request_serializer: _Serializer = None,
        response_deserializer: _Deserializer = None,
        _registered_method: bool = False,
    ) -> _StreamStreamMultiCallable:
        """Returns a callable for a stream-stream method."""
        return _StreamStreamMultiCallable(self, method, request_serializer, response_deserializer)


def _rpc_error(
    code: grpc.StatusCode,
    details: str,
    initial: MetadataPairs,
    trailing: MetadataPairs,
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*trailing),
        details=details,
        debug_error_string=f"tunnel: {code.name}: {details}",
    )


def _identity(value: Any) -> Any:
    return value


class _MultiCallable:
    def __init__(
        self,
        channel: TunnelChannel,
        method: str,
        serializer: _Serializer,
        deserializer: _Deserializer,
    ) -> None:
        self._channel = channel
        self._method = method
        self._serializer = serializer or _identity
        self._deserializer = deserializer or _identity


class _UnaryUnaryMultiCallable(_MultiCallable, grpc.aio.UnaryUnaryMultiCallable[Any, Any]):
    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> _UnaryUnaryCall:
        return _UnaryUnaryCall(self, timeout, metadata, request, None)


class _UnaryStreamMultiCallable(_MultiCallable, grpc.aio.UnaryStreamMultiCallable[Any, Any]):
    def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> _UnaryStreamCall:
        return _UnaryStreamCall(self, timeout, metadata, request, None)


class _StreamUnaryMultiCallable(_MultiCallable, grpc.aio.StreamUnaryMultiCallable[Any, Any]):
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> _StreamUnaryCall:
        return _StreamUnaryCall(self, timeout, metadata, _NO_REQUEST, request_iterator)


class _StreamStreamMultiCallable(_MultiCallable, grpc.aio.StreamStreamMultiCallable[Any, Any]):
    def __call__(
        self,
        request_iterator: Any = None,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: Any = None,
        wait_for_ready: bool | None = None,
        compression: Any = None,
    ) -> _StreamStreamCall:
        return _StreamStreamCall(self, timeout, metadata, _NO_REQUEST, request_iterator)


_NO_REQUEST = object()


class _Call:
    """State and the ``grpc.aio.Call`` surface shared by the four call kinds."""

    def __init__(
        self,
        multi: _MultiCallable,
        timeout: float | None,
        metadata: Any,
        request: Any,
        request_iterator: Any,
    ) -> None:
        channel = multi._channel
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._deserializer = multi._deserializer
        self._serializer = multi._serializer
        self._deadline = None if timeout is None else loop.time() + timeout
        self._final: Final | None = None
        self._stream: CallerStream | None = None
        self._session: Session | None = None
        self._done_writing = False
        self._callbacks: list[Callable[[Any], None]] = []
        self._hooks = channel.hooks
        self._message_hooks = channel.message_hooks
        pairs: MetadataPairs = list(metadata) if metadata else []
        session = channel.pick()
        self._info = CallInfo(
            method=multi._method,
            metadata=pairs,
            trace=_trace_from(pairs),
            hospital_id=session.hello.hospital_id if session is not None else "",
            session=session.name if session is not None else "",
            started=loop.time(),
            timeout=timeout,
            contract_release=session.hello.contract_release if session is not None else "",
        )
        unary_request = request is not _NO_REQUEST
        try:
            data = self._serializer(request) if unary_request else None
        except Exception:
            self._fail(grpc.StatusCode.INTERNAL, "Exception serializing request!")
            return
        try:
            for hook in self._hooks:
                hook.on_start(self._info)
        except HookRejection as rejection:
            self._fail(rejection.code, rejection.details)
            return
        if data is not None and self._message_hooks:
            self._observe(True, data)
        if session is None or not session.accepting_calls:
            self._fail(
                grpc.StatusCode.UNAVAILABLE, "no tunnel to the edge is accepting calls", "NO_TUNNEL"
            )
            return
        if data is not None and len(data) > session.peer_max_message:
            self._fail(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(data)} vs. {session.peer_max_message})",
            )
            return
        try:
            stream, folded = session.open_stream(
                multi._method,
                entries_from_pairs(self._info.metadata),
                timeout=timeout,
                trace=self._info.trace,
                first_message=data,
                half_close=unary_request,
            )
        except TunnelClosed as closed:
            self._fail(grpc.StatusCode.UNAVAILABLE, closed.status.message, reason_of(closed.status))
            return
        self._session = session
        self._stream = stream
        stream.on_done.append(self._on_done)
        if unary_request:
            self._done_writing = True
            if not folded:
                assert data is not None
                session.spawn(self._send_unary(stream, data), f"{session.name}-send-{stream.id}")
        elif request_iterator is not None:
            session.spawn(self._pump(request_iterator), f"{session.name}-pump-{stream.id}")

    # -- completion ------------------------------------------------------------------------

    def _fail(self, code: grpc.StatusCode, details: str, reason: str = "") -> None:
        self._final = Final(make_status(code, details, reason), [])
        self._loop.call_soon(self._on_done)

    def _on_done(self) -> None:
        final = self._current_final()
        assert final is not None
        for hook in reversed(self._hooks):
            try:
                hook.on_end(self._info, final.code, final.details)
                if final.code is not _OK:
                    hook.on_failed(self._info, final.code, final.details, final.trailers)
            except Exception:  # a hook must not break the tunnel's reader
                _log.exception("call hook failed")
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _log.exception("done callback failed")

    def _current_final(self) -> Final | None:
        if self._stream is not None:
            return self._stream.final
        return self._final

    async def _wait_final(self, cancel_on_cancel: bool = False) -> Final:
        if self._stream is None:
            assert self._final is not None
            return self._final
        try:
            return await self._stream.wait_done()
        except asyncio.CancelledError:
            if cancel_on_cancel:
                self.cancel()
            raise

    def _error(self, final: Final) -> grpc.aio.AioRpcError:
        headers = self._stream.headers if self._stream is not None else None
        return _rpc_error(final.code, final.details, headers or [], final.trailers)

    def _raise_for(self, final: Final) -> None:
        if final.code is _CANCELLED and self._stream is not None and self._stream.cancelled_locally:
            raise asyncio.CancelledError
        raise self._error(final)

    def _observe(self, outgoing: bool, data: bytes) -> None:
        for hook in self._message_hooks:
            try:
                hook.on_message(self._info, outgoing, data)
            except Exception:  # an observer must never break a call
                _log.exception("call hook failed on a message")

    def _deserialize(self, data: bytes) -> Any:
        if self._message_hooks:
            self._observe(False, data)
        try:
            return self._deserializer(data)
        except Exception:
            if self._stream is not None:
                self._stream.cancel(
                    grpc.StatusCode.INTERNAL, "Exception deserializing response!", "bad response"
                )
            raise _rpc_error(
                grpc.StatusCode.INTERNAL, "Exception deserializing response!", [], []
            ) from None

    # -- grpc.aio.Call surface -------------------------------------------------------------

    def cancelled(self) -> bool:
        """True if the call ended as CANCELLED."""
        final = self._current_final()
        return final is not None and final.code is _CANCELLED

    def done(self) -> bool:
        """True once the call has ended."""
        return self._current_final() is not None

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or ``None`` without one."""
        if self._deadline is None:
            return None
        return max(self._deadline - self._loop.time(), 0.0)

    def cancel(self) -> bool:
        """Cancels the call (the servicer's context is cancelled); False if already done."""
        if self.done() or self._stream is None:
            return False
        self._stream.cancel(_CANCELLED, "Locally cancelled by application!", "client cancelled")
        return True

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Calls ``callback(call)`` once the call has ended (at once if it has)."""
        if self.done() and not self._callbacks:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def initial_metadata(self) -> grpc.aio.Metadata:
        """Waits for and returns the response headers."""
        if self._stream is None:
            return grpc.aio.Metadata()
        return grpc.aio.Metadata(*await self._stream.wait_headers())

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        """Waits for the end of the call and returns its trailers."""
        return grpc.aio.Metadata(*(await self._wait_final()).trailers)

    async def code(self) -> grpc.StatusCode:
        """Waits for the end of the call and returns its status code."""
        return (await self._wait_final()).code

    async def details(self) -> str:
        """Waits for the end of the call and returns its status message."""
        return str((await self._wait_final()).details)

    async def debug_error_string(self) -> str:
        """A debug string naming the final status."""
        final = await self._wait_final()
        return f"tunnel: {final.code.name}: {final.details}"

    async def wait_for_connection(self) -> None:
        """Returns once the call is on its way; raises if it already failed."""
        final = self._current_final()
        if final is not None and final.code is not _OK:
            self._raise_for(final)

    # -- requests --------------------------------------------------------------------------

    async def _send_unary(self, stream: CallerStream, data: bytes) -> None:
        try:
            await stream.send_data(data)
        except StreamEnded:
            return
        stream.half_close()

    async def write(self, request: Any) -> None:
        """Sends one request message (streaming requests).

        Raises:
            grpc.aio.AioRpcError: The call has ended with an error.
            grpc.aio.UsageError: ``done_writing`` was called before.
        """
        if self._done_writing:
            raise grpc.aio.UsageError("write after done_writing")
        final = self._current_final()
        if final is not None:
            if final.code is not _OK:
                self._raise_for(final)
            raise asyncio.InvalidStateError("RPC already finished.")
        stream = self._stream
        session = self._session
        assert stream is not None
        assert session is not None
        try:
            data = self._serializer(request)
        except Exception:
            stream.cancel(grpc.StatusCode.INTERNAL, "Exception serializing request!", "bad request")
            self._raise_for(stream.final)  # type: ignore[arg-type]
        if len(data) > session.peer_max_message:
            stream.cancel(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Sent message larger than max ({len(data)} vs. {session.peer_max_message})",
                "request message too large",
            )
        if self._message_hooks:
            self._observe(True, data)
        try:
            await stream.send_data(data)
        except StreamEnded:
            assert stream.final is not None
            self._raise_for(stream.final)
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def done_writing(self) -> None:
        """Tells the server no more requests follow."""
        if self._done_writing:
            return
        self._done_writing = True
        if self._stream is not None:
            self._stream.half_close()

    async def _pump(self, requests: AsyncIterable[Any] | Iterable[Any]) -> None:
        try:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    await self.write(request)
            else:
                for request in requests:
                    await self.write(request)
            await self.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return
        except Exception:
            if self._stream is not None:
                self._stream.cancel(
                    grpc.StatusCode.UNKNOWN, "Exception iterating requests!", "request iterator"
                )

    # -- responses -------------------------------------------------------------------------

    async def _unary_response(self) -> Any:
        final = await self._wait_final(cancel_on_cancel=True)
        if final.code is not _OK:
            self._raise_for(final)
        data = self._stream.take() if self._stream is not None else None
        if data is None:
            raise _rpc_error(grpc.StatusCode.INTERNAL, "No response message", [], final.trailers)
        return self._deserialize(data)

    async def read(self) -> Any:
        """Returns the next response message, or ``grpc.aio.EOF`` at the end.

        Raises:
            grpc.aio.AioRpcError: The call ended with an error.
        """
        stream = self._stream
        if stream is None:
            assert self._final is not None
            self._raise_for(self._final)
            return grpc.aio.EOF
        try:
            data = await stream.receive()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if data is not None:
            return self._deserialize(data)
        final = await self._wait_final(cancel_on_cancel=True)
        if final.code is not _OK:
            self._raise_for(final)
        return grpc.aio.EOF

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            message = await self.read()
            if message is grpc.aio.EOF:
                return
            yield message


def _trace_from(pairs: MetadataPairs) -> tunnel_pb2.TraceContext | None:
    parent = state = None
    for key, value in pairs:
        if key == "traceparent":
            parent = value
        elif key == "tracestate":
            state = value
    if parent is None:
        return None
    return tunnel_pb2.TraceContext(traceparent=str(parent), tracestate=str(state or ""))


class _UnaryUnaryCall(_Call, grpc.aio.UnaryUnaryCall[Any, Any]):
    def __await__(self) -> Any:
        return self._unary_response().__await__()


class _UnaryStreamCall(_Call, grpc.aio.UnaryStreamCall[Any, Any]):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()


class _StreamUnaryCall(_Call, grpc.aio.StreamUnaryCall[Any, Any]):
    def __await__(self) -> Any:
        return self._unary_response().__await__()


class _StreamStreamCall(_Call, grpc.aio.StreamStreamCall[Any, Any]):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

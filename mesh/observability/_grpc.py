"""Tracing and RPC metrics for ``grpc.aio`` servers and clients, as interceptors.

`ServerObservability` goes on every ``grpc.aio`` server of a process: it takes the
caller's W3C ``traceparent`` (or starts a trace), opens a SERVER span that is current
(``mesh.logs.CURRENT_SPAN``) while the servicer runs (so log lines, router, tunnel and
forwarding calls join it), counts the RPC (``grpc_server_*``), and on the public
endpoint returns the trace id to the app as ``x-request-id`` in the initial metadata.
`client_interceptors` go on channels to peer nodes: a CLIENT span whose context travels
in ``traceparent``, and ``grpc_client_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry.trace import SpanKind

from mesh.logs import CURRENT_SPAN
from mesh.observability._metrics import RPC_METRICS, counter
from mesh.observability._tracing import CallSpan, Tracing

__all__ = [
    "REQUEST_ID_KEY",
    "ServerObservability",
    "client_interceptors",
    "code_of",
    "with_traceparent",
]

REQUEST_ID_KEY = "x-request-id"
_HOSPITAL_KEY = "x-hplus-hospital"
"""Metadata naming the hospital a call concerns (the router's route key)."""
"""Initial-metadata key of the request id returned to apps (the W3C trace id)."""

_FORWARDED = counter(
    "hplus_forwarded_calls_total",
    "Calls forwarded to the peer node holding the hospital's tunnel",
    ["peer", "grpc_code"],
)

_PENDING: set[asyncio.Task[None]] = set()
"""Metric/span completions of peer calls, held until they ran."""

_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def code_of(value: Any) -> grpc.StatusCode:
    """A status code from what grpc reports (enum, int or None meaning OK)."""
    if value is None:
        return grpc.StatusCode.OK
    if isinstance(value, grpc.StatusCode):
        return value
    if isinstance(value, int):
        return _BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.UNKNOWN


def _header(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v if isinstance(v, str) else None
    return None


def with_traceparent(
    metadata: Sequence[tuple[str, Any]] | None, traceparent: str
) -> list[tuple[str, Any]]:
    """``metadata`` with ``traceparent`` (any earlier one replaced)."""
    out = [(k, v) for k, v in metadata or () if k != "traceparent"]
    out.append(("traceparent", traceparent))
    return out


_KIND = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


_MAKE = {
    "unary": grpc.unary_unary_rpc_method_handler,
    "server_stream": grpc.unary_stream_rpc_method_handler,
    "client_stream": grpc.stream_unary_rpc_method_handler,
    "bidi_stream": grpc.stream_stream_rpc_method_handler,
}

_WRAPPED_METHODS = 4096
"""Methods whose wrapped handler a `ServerObservability` keeps (a server has a few dozen;
the bound holds against handlers made per call for names a peer chose)."""

_OK = grpc.StatusCode.OK


class ServerObservability(grpc.aio.ServerInterceptor):
    """Server interceptor: trace context, SERVER span, ``grpc_server_*`` metrics.

    The wrapper of a method's handler is made once and kept (while the server hands out
    the same handler object), so a call costs its span, a context variable and the
    counters, not a new handler and closures.

    Args:
        tracing: the process's tracing.
        return_request_id: send ``x-request-id`` in the initial metadata (public endpoint).
        hospital_key: metadata key naming the hospital a call concerns (span attribute).
        skip_request_id: method prefixes that never get ``x-request-id`` (tunnels, whose
            headers belong to the tunnel protocol).
    """

    def __init__(
        self,
        tracing: Tracing,
        *,
        return_request_id: bool = False,
        hospital_key: str = _HOSPITAL_KEY,
        skip_request_id: Sequence[str] = ("/hplus.tunnel.",),
    ) -> None:
        self._tracing = tracing
        self._return_id = return_request_id
        self._hospital_key = hospital_key
        self._skip = tuple(skip_request_id)
        self._wrapped: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the handler of each call (once per method)."""
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method or ""
        found = self._wrapped.get(method)
        if found is not None and found[0] is handler:
            return found[1]
        wrapped = self._wrap(method, handler)
        if found is not None or len(self._wrapped) < _WRAPPED_METHODS:
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        kind = _KIND[(bool(handler.request_streaming), bool(handler.response_streaming))]
        send_id = self._return_id and not method.startswith(self._skip)
        tracing = self._tracing
        hospital_key = self._hospital_key
        # An app's sampled flag is not obeyed (it could make us keep every trace); a peer
        # node's or an operator's is.
        honor = not self._return_id
        rpc = RPC_METRICS.counts("server", kind, method)

        def begin(context: grpc.aio.ServicerContext[Any, Any]) -> CallSpan:
            header = hospital = None
            for key, value in context.invocation_metadata() or ():
                if key == "traceparent":
                    header = value
                elif key == hospital_key:
                    hospital = value
            span = tracing.serve(
                method,
                SpanKind.SERVER,
                header if isinstance(header, str) else None,
                hospital_id=hospital if isinstance(hospital, str) else "",
                honor_sampled=honor,
            )
            rpc.started += 1
            return span

        def end(
            span: CallSpan,
            context: grpc.aio.ServicerContext[Any, Any],
            failed: BaseException | None,
        ) -> None:
            code: Any = context.code()
            if code is None or code is _OK or code == 0:
                if failed is None:
                    rpc.handled(_OK, time.monotonic() - span.started)
                    if span.sampled:
                        span.end(0)
                    return
                code = grpc.StatusCode.UNKNOWN
            code = code_of(code)
            if failed is not None and code is _OK:
                code = grpc.StatusCode.UNKNOWN
            rpc.handled(code, time.monotonic() - span.started)
            message = ""
            if code is not _OK:
                details = context.details() if hasattr(context, "details") else ""
                if isinstance(details, bytes):
                    details = details.decode("utf-8", "replace")
                message = f"{code.name}: {details or ''}"
            span.end(code.value[0], message)

        inner: Any = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        behavior: Any
        if inspect.isasyncgenfunction(inner):

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                span = begin(context)
                token = CURRENT_SPAN.set(span)
                failed: BaseException | None = None
                try:
                    if send_id:
                        await context.send_initial_metadata(((REQUEST_ID_KEY, span.trace_hex),))
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    # An abandoned generator is closed by asyncio in a task of its own,
                    # where the token does not belong (that context ends anyway).
                    with contextlib.suppress(ValueError):
                        CURRENT_SPAN.reset(token)
                    end(span, context, failed)

            behavior = streaming
        else:
            # A coroutine: a unary answer, or a streaming one written with context.write.

            async def unary(request: Any, context: Any) -> Any:
                span = begin(context)
                token = CURRENT_SPAN.set(span)
                failed: BaseException | None = None
                try:
                    if send_id:
                        await context.send_initial_metadata(((REQUEST_ID_KEY, span.trace_hex),))
                    return await inner(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    CURRENT_SPAN.reset(token)
                    end(span, context, failed)

            behavior = unary
        wrapped: grpc.RpcMethodHandler[Any, Any] = _MAKE[kind](
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return wrapped


class _Details(grpc.aio.ClientCallDetails):
    pass


class _ClientBase:
    """The CLIENT span, traceparent and metrics of one peer call.

    Shared by the four kinds: a grpc.aio channel files each interceptor under one kind only.
    """

    def __init__(self, tracing: Tracing, *, peer: str) -> None:
        self._tracing = tracing
        self._peer = peer

    def _begin(self, details: Any, kind: str) -> tuple[Any, Callable[[Any], None]]:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        attributes = {"net.peer.name": self._peer}
        # A call forwarded to the node holding a hospital's tunnel names the hospital: its
        # span is then among the hospital's (the dashboard's recent failures).
        hospital = _header(details.metadata, _HOSPITAL_KEY)
        span = self._tracing.begin(
            method, SpanKind.CLIENT, hospital_id=hospital or "", attributes=attributes
        )
        metric = RPC_METRICS.counts("client", kind, method)
        metric.started += 1
        peer = self._peer
        new = _Details(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*with_traceparent(details.metadata, span.traceparent())),
            details.credentials,
            details.wait_for_ready,
        )

        async def finish(call: Any) -> None:
            try:
                code = (
                    code_of(await call.code())
                    if not call.cancelled()
                    else grpc.StatusCode.CANCELLED
                )
            except Exception:  # a call that cannot tell
                code = grpc.StatusCode.UNKNOWN
            metric.handled(code, time.monotonic() - span.started)
            _FORWARDED.labels(peer, code.name).inc()
            span.end(code.value[0], "" if code is grpc.StatusCode.OK else code.name)

        def done(call: Any) -> None:
            # An aio call's code() is a coroutine (immediate once the call is done).
            task = asyncio.get_running_loop().create_task(finish(call))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

        return new, done

    async def _run(self, continuation: Any, details: Any, request: Any, kind: str) -> Any:
        new, done = self._begin(details, kind)
        call = await continuation(new, request)
        call.add_done_callback(done)
        return call


class _UnaryUnary(_ClientBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._run(continuation, details, request, "unary")


class _UnaryStream(_ClientBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._run(continuation, details, request, "server_stream")


class _StreamUnary(_ClientBase, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._run(continuation, details, requests, "client_stream")


class _StreamStream(_ClientBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._run(continuation, details, requests, "bidi_stream")


def client_interceptors(tracing: Tracing, *, peer: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel to a peer node.

    A CLIENT span per call whose context travels in ``traceparent``, ``grpc_client_*`` and
    ``hplus_forwarded_calls_total``.

    Args:
        tracing: the process's tracing.
        peer: the peer's name in metrics (its address).
    """
    return [
        kind(tracing, peer=peer)
        for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]

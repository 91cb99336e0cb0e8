"""Tracing and RPC metrics for ``grpc.aio`` servers and clients, as interceptors.

`ServerObservability` goes on every ``grpc.aio`` server of a process: it takes the
caller's W3C ``traceparent`` (or starts a trace), opens a SERVER span that is current while
the servicer runs (so log lines, router, tunnel and forwarding calls join it), counts the
RPC (``grpc_server_*``), and on the public endpoint returns the trace id to the app as
``x-request-id`` in the initial metadata. `client_interceptors` go on channels to peer
nodes: a CLIENT span whose context travels in ``traceparent``, and ``grpc_client_*``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from mesh.observability._metrics import RPC_METRICS, counter
from mesh.observability._tracing import CallSpan, Tracing, parse_traceparent

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


class ServerObservability(grpc.aio.ServerInterceptor):
    """Server interceptor: trace context, SERVER span, ``grpc_server_*`` metrics.

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

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the handler of each call."""
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method or ""
        metadata = tuple(details.invocation_metadata or ())
        kind = _KIND[(bool(handler.request_streaming), bool(handler.response_streaming))]
        send_id = self._return_id and not method.startswith(self._skip)
        tracing = self._tracing
        hospital_key = self._hospital_key
        # An app's sampled flag is not obeyed (it could make us keep every trace); a peer
        # node's or an operator's is.
        honor = not self._return_id

        def begin() -> tuple[CallSpan, object, Any, float]:
            parent = parse_traceparent(_header(metadata, "traceparent"))
            attributes: dict[str, Any] = {}
            hospital = _header(metadata, hospital_key)
            if hospital:
                attributes["hplus.hospital_id"] = hospital
            span = tracing.begin(
                method[1:],
                SpanKind.SERVER,
                parent=parent,
                attributes=attributes,
                honor_sampled=honor,
            )
            token = otel_context.attach(span.current())
            return span, token, RPC_METRICS.started("server", kind, method), time.perf_counter()

        def end(
            state: tuple[CallSpan, object, Any, float],
            context: grpc.aio.ServicerContext[Any, Any],
            failed: BaseException | None,
        ) -> None:
            span, token, metric, started = state
            code = code_of(context.code())
            if failed is not None and code is grpc.StatusCode.OK:
                code = grpc.StatusCode.UNKNOWN
            RPC_METRICS.handled(metric, code.name, time.perf_counter() - started)
            message = ""
            if code is not grpc.StatusCode.OK:
                details = context.details() if hasattr(context, "details") else ""
                if isinstance(details, bytes):
                    details = details.decode("utf-8", "replace")
                message = f"{code.name}: {details or ''}"
            span.end(code.value[0], message)
            otel_context.detach(token)  # type: ignore[arg-type]

        async def announce(context: grpc.aio.ServicerContext[Any, Any], span: CallSpan) -> None:
            if send_id:
                await context.send_initial_metadata(((REQUEST_ID_KEY, span.trace_hex),))

        inner: Any = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        behavior: Any
        if inspect.isasyncgenfunction(inner):

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                state = begin()
                failed: BaseException | None = None
                try:
                    await announce(context, state[0])
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    end(state, context, failed)

            behavior = streaming
        else:
            # A coroutine: a unary answer, or a streaming one written with context.write.

            async def unary(request: Any, context: Any) -> Any:
                state = begin()
                failed: BaseException | None = None
                try:
                    await announce(context, state[0])
                    return await inner(request, context)
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    end(state, context, failed)

            behavior = unary
        make = {
            "unary": grpc.unary_unary_rpc_method_handler,
            "server_stream": grpc.unary_stream_rpc_method_handler,
            "client_stream": grpc.stream_unary_rpc_method_handler,
            "bidi_stream": grpc.stream_stream_rpc_method_handler,
        }[kind]
        wrapped: grpc.RpcMethodHandler[Any, Any] = make(
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
        if hospital:
            attributes["hplus.hospital_id"] = hospital
        span = self._tracing.begin(method[1:], SpanKind.CLIENT, attributes=attributes)
        metric = RPC_METRICS.started("client", kind, method)
        started = time.perf_counter()
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
            RPC_METRICS.handled(metric, code.name, time.perf_counter() - started)
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

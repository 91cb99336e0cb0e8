"""Recording failed calls: a server interceptor and a tunnel hook feed one bounded queue.

Nothing runs on a call that succeeds beyond the wrapper's ``try``: the status and its
details are read, attributed (`mesh.attribution.attribute`) and queued only when a call
fails; a background loop writes the queue to the `FailureStore` in batches.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.rpc import status_pb2
from opentelemetry import trace

from cloud.attribution._store import FailureRow, FailureStore
from mesh import errors
from mesh.attribution import attribute, failure_of
from mesh.observability import current_span, valid_trace_id
from mesh.tunnel import CallHook, CallInfo

__all__ = ["FailureRecorder"]

log = logging.getLogger("cloud.attribution")

_DETAILS_KEY = "grpc-status-details-bin"
_SKIPPED = ("/grpc.health.", "/grpc.reflection.", "/hplus.tunnel.")
"""Served methods never recorded: probes, reflection, and the tunnels' outer streams (a
tunnel's end is not a failed call; the calls on it are recorded by the hook)."""
_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def decode(
    code: grpc.StatusCode, message: str, trailers: Sequence[tuple[str, Any]]
) -> errors.StatusError:
    """The tree error of a failed call from its code, message and trailers.

    Args:
        code: the call's status code.
        message: its message.
        trailers: its trailing metadata (``grpc-status-details-bin`` among them, if sent).

    Returns:
        The error, details decoded when the trailer agrees with the call's code.
    """
    for key, value in trailers:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:  # a peer's malformed trailer: keep the bare code
                break
            if status.code == code.value[0]:
                return errors.StatusError.from_status(status)
            break
    return errors.error_for(code)(message)


def _request_id() -> str:
    """The request id of the call being served (its trace id), "" outside one."""
    span = current_span()
    if span is not None:
        return span.trace_hex
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else ""


def _call_request_id(call: CallInfo) -> str:
    """The request id a tunnel call carried to the edge (its open frame's traceparent)."""
    given = call.trace
    if given is None:
        return ""
    parts = given.traceparent.split("-")
    return parts[1] if len(parts) == 4 and valid_trace_id(parts[1]) else ""


class FailureRecorder:
    """Attributes and stores the node's failed calls.

    Args:
        store: where rows go.
        node: this node's id.
        capacity: rows queued at most between two writes; past it rows are counted in
            ``dropped`` and logged, never silently lost.
        flush_interval: seconds between two writes.
    """

    def __init__(
        self,
        store: FailureStore,
        *,
        node: str,
        capacity: int = 10_000,
        flush_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.node = node
        self._queue: collections.deque[FailureRow] = collections.deque()
        self._capacity = capacity
        self._interval = flush_interval
        self._wake = asyncio.Event()
        self._stopping = False
        self.dropped = 0
        self.recorded = 0

    # -- noting ------------------------------------------------------------------------

    def note(
        self,
        *,
        side: str,
        method: str,
        hospital_id: str,
        error: errors.StatusError,
        request_id: str = "",
    ) -> FailureRow:
        """Attributes one failed call and queues its row.

        Args:
            side: ``api`` or ``hospital``.
            method: the full method name.
            hospital_id: the hospital concerned, or "".
            error: the failure, details decoded.
            request_id: the request (trace) id.

        Returns:
            The row queued.
        """
        found = attribute(failure_of(error, side=side, method=method))
        metadata = error.metadata
        row = FailureRow(
            at=time.time(),
            node=self.node,
            hospital_id=hospital_id,
            side=side,
            method=method,
            code=error.code.name,
            error_reason=error.reason,
            error_domain=error.domain if error.reason else "",
            cause=metadata.get("cause") or metadata.get("last_end") or "",
            owner=found.owner.value,
            reason=found.reason,
            hop=found.hop,
            vendor=found.vendor,
            request_id=request_id or _request_id(),
        )
        if len(self._queue) >= self._capacity:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("failure queue full: %d failure rows not recorded", self.dropped)
        else:
            self._queue.append(row)
            if len(self._queue) >= self._capacity // 2:
                self._wake.set()
        return row

    def _served(self, method: str, request: Any, context: Any, exc: BaseException) -> None:
        try:
            if isinstance(exc, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
            else:
                raw = context.code()
                found = raw if isinstance(raw, grpc.StatusCode) else _BY_VALUE.get(raw or 2)
                code = (
                    found
                    if found is not None and found is not grpc.StatusCode.OK
                    else grpc.StatusCode.UNKNOWN
                )
            details = context.details() or ""
            if isinstance(details, bytes):
                details = details.decode("utf-8", "replace")
            trailers = tuple(context.trailing_metadata() or ())
            hospital = getattr(request, "hospital_id", "") if request is not None else ""
            if not isinstance(hospital, str):
                hospital = ""
            self.note(
                side="api",
                method=method,
                hospital_id=hospital,
                error=decode(code, details, trailers),
            )
        except Exception:  # recording must never change the call's outcome
            log.exception("recording a failed call of %s", method)

    # -- the two feeds -----------------------------------------------------------------

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """The server interceptor that records the node's served calls that fail."""
        return _Interceptor(self)

    def hook(self) -> CallHook:
        """The tunnel call hook that records the node's calls to edges that fail."""
        return _Hook(self)

    # -- writing -----------------------------------------------------------------------

    def pending(self) -> int:
        """Rows queued and not yet written."""
        return len(self._queue)

    async def flush(self) -> int:
        """Writes what is queued; returns how many rows."""
        batch: list[FailureRow] = []
        while self._queue:
            batch.append(self._queue.popleft())
        if batch:
            await self.store.write(batch)
            self.recorded += len(batch)
        return len(batch)

    async def run(self) -> None:
        """Writes the queue every ``flush_interval`` seconds until `shutdown`."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing failure rows")

    async def shutdown(self) -> None:
        """Stops the loop (its last pass writes what is queued) and flushes."""
        self._stopping = True
        self._wake.set()
        try:
            await self.flush()
        except Exception:
            log.exception("writing failure rows at shutdown")


class _Hook(CallHook):
    def __init__(self, recorder: FailureRecorder) -> None:
        self._recorder = recorder

    def on_failed(
        self,
        call: CallInfo,
        code: grpc.StatusCode,
        details: str,
        trailers: Sequence[tuple[str, Any]],
    ) -> None:
        self._recorder.note(
            side="hospital",
            method=call.method,
            hospital_id=call.hospital_id,
            error=decode(code, details, trailers),
            request_id=_call_request_id(call),
        )


class _Interceptor(grpc.aio.ServerInterceptor):
    def __init__(self, recorder: FailureRecorder) -> None:
        self._recorder = recorder

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wraps the handler of each call the node serves (probes and tunnels excepted)."""
        handler = await continuation(details)
        method: str = details.method or ""
        if handler is None or method.startswith(_SKIPPED):
            return handler
        served = self._recorder._served
        inner: Any = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        behavior: Any
        if inspect.isasyncgenfunction(inner):

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    async for item in inner(request, context):
                        yield item
                except BaseException as exc:
                    served(method, request, context, exc)
                    raise

            behavior = streaming
        else:

            async def unary(request: Any, context: Any) -> Any:
                try:
                    return await inner(request, context)
                except BaseException as exc:
                    served(method, request, context, exc)
                    raise

            behavior = unary
        kind = (bool(handler.request_streaming), bool(handler.response_streaming))
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[kind]
        wrapped: grpc.RpcMethodHandler[Any, Any] = make(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return wrapped

"""Every HIS call observed.

A CLIENT span ``his.<operation>``, latency and errors by dialect, and a log line for each
failure and timeout (with the request id, never the patient data the call carried).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, cast

from opentelemetry.trace import SpanKind

from frontend_server.adapters import (
    Capabilities,
    HisAdapter,
    HisError,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
)
from mesh.logs import CURRENT_SPAN
from mesh.observability import Tracing, counter, histogram

__all__ = ["ObservedAdapter", "observed"]

log = logging.getLogger("frontend_server.his")

_SECONDS = histogram(
    "hplus_his_call_seconds", "Latency of calls to the HIS", ["dialect", "operation"]
)
_ERRORS = counter(
    "hplus_his_call_errors_total",
    "Failed calls to the HIS by kind (timeout, unavailable, protocol, rejected, other)",
    ["dialect", "operation", "kind"],
)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, HisTimeout):
        return "timeout"
    if isinstance(exc, HisUnavailable):
        return "unavailable"
    if isinstance(exc, HisProtocolError):
        return "protocol"
    if isinstance(exc, HisRejected):
        return "rejected"
    return "other"


class ObservedAdapter:
    """Wraps an adapter: each coroutine method is one observed HIS call.

    Args:
        adapter: the adapter (it keeps its own lifecycle).
        tracing: the edge's tracing.
        edge_id: this edge, in span attributes.
    """

    def __init__(self, adapter: HisAdapter, tracing: Tracing, *, edge_id: str) -> None:
        self._adapter = adapter
        self._tracing = tracing
        self._edge_id = edge_id
        self._calls: dict[str, Callable[..., Awaitable[Any]]] = {}

    @property
    def dialect(self) -> str:
        """The wrapped adapter's dialect."""
        return self._adapter.dialect

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped adapter's capabilities."""
        return self._adapter.capabilities

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the wrapped adapter."""
        await self._adapter.aclose()

    def __getattr__(self, name: str) -> Any:
        found = self._calls.get(name)
        if found is not None:
            return found
        attribute = getattr(self._adapter, name)
        if name.startswith("_") or not inspect.iscoroutinefunction(attribute):
            return attribute
        call = cast(Callable[..., Awaitable[Any]], attribute)
        dialect = self._adapter.dialect
        seconds = _SECONDS.labels(dialect, name)
        tracing = self._tracing
        edge_id = self._edge_id

        @functools.wraps(call)
        async def observed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            span = tracing.begin(
                f"his.{name}",
                SpanKind.CLIENT,
                attributes={"his.dialect": dialect, "his.operation": name, "edge.id": edge_id},
            )
            token = CURRENT_SPAN.set(span)
            try:
                result = await call(*args, **kwargs)
            except HisError as exc:
                kind = _kind(exc)
                _ERRORS.labels(dialect, name, kind).inc()
                span.set_attribute("his.error", kind)
                # A refusal is the HIS's answer (FAILED_PRECONDITION); anything else means
                # the HIS did not serve the call (UNAVAILABLE).
                span.end(9 if kind == "rejected" else 14, f"{kind}: {exc}")
                if kind != "rejected":
                    log.warning(
                        "HIS %s call %s failed after %.3fs (%s): %s",
                        dialect,
                        name,
                        time.perf_counter() - started,
                        kind,
                        exc,
                    )
                raise
            except Exception as exc:
                _ERRORS.labels(dialect, name, "other").inc()
                span.end(13, f"other: {type(exc).__name__}")
                log.warning("HIS %s call %s failed (%s)", dialect, name, type(exc).__name__)
                raise
            finally:
                CURRENT_SPAN.reset(token)
                seconds.observe(time.perf_counter() - started)
            span.end(0)
            return result

        self._calls[name] = observed_call
        return observed_call


def observed(adapter: HisAdapter, tracing: Tracing, *, edge_id: str) -> HisAdapter:
    """``adapter`` with every HIS call observed (see :class:`ObservedAdapter`)."""
    return cast(HisAdapter, ObservedAdapter(adapter, tracing, edge_id=edge_id))

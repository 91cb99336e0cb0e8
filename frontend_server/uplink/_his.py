"""A cheap check of the HIS through the adapter: reachability and latency."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable

from frontend_server.adapters import (
    HisAdapter,
    HisError,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
)
from hplus.cloud.v1 import edge_pb2
from hplus.hospital.v1 import admin_pb2

__all__ = ["HisCheck", "HisStatus"]

log = logging.getLogger(__name__)

_NAMES: dict[int, str] = {
    edge_pb2.HIS_REACHABILITY_UNSPECIFIED: "not checked yet",
    edge_pb2.HIS_REACHABILITY_REACHABLE: "reachable",
    edge_pb2.HIS_REACHABILITY_SLOW: "slow",
    edge_pb2.HIS_REACHABILITY_ERRORING: "erroring",
    edge_pb2.HIS_REACHABILITY_UNREACHABLE: "unreachable",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class HisStatus:
    """The outcome of the latest check."""

    reachability: int = edge_pb2.HIS_REACHABILITY_UNSPECIFIED
    """A ``HisReachability`` value."""
    latency: float | None = None
    """Seconds the last successful check took."""
    last_success: dt.datetime | None = None
    """When the HIS last answered."""
    error: str = ""
    """The last error (its kind and message; no patient data)."""
    checked_at: dt.datetime | None = None
    """When the check ran."""


class HisCheck:
    """Reads the department list (the cheapest read every dialect has) and times it.

    Args:
        adapter: the HIS adapter, or a callable giving the one in use now (a profile applied
            live replaces it); real-time pacing applies: a check is one call.
        dialect: the adapter's dialect, for the report.
        slow_seconds: an answer slower than this is ``SLOW``.
        timeout: the check's deadline; no answer by then is ``UNREACHABLE``.
    """

    interface = "directory"
    """The interface the check exercises, as reported."""

    def __init__(
        self,
        adapter: HisAdapter | Callable[[], HisAdapter],
        *,
        dialect: str,
        slow_seconds: float,
        timeout: float,
    ) -> None:
        self._adapter: Callable[[], HisAdapter] = (
            adapter if callable(adapter) else (lambda: adapter)
        )
        self.dialect = dialect
        self._slow = slow_seconds
        self._timeout = timeout
        self.status = HisStatus()

    async def check(self) -> HisStatus:
        """Run one check; the result is also kept in `status`. Logs each change once."""
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        before = self.status
        try:
            async with asyncio.timeout(self._timeout):
                await self._adapter().list_departments()
        except (HisUnavailable, HisTimeout, TimeoutError, ConnectionError, OSError) as err:
            status = HisStatus(
                reachability=edge_pb2.HIS_REACHABILITY_UNREACHABLE,
                last_success=before.last_success,
                error=f"{type(err).__name__}: {str(err)[:200]}",
                checked_at=now,
            )
        except (HisRejected, HisProtocolError, HisError) as err:
            status = HisStatus(
                reachability=edge_pb2.HIS_REACHABILITY_ERRORING,
                last_success=before.last_success,
                error=f"{type(err).__name__}: {str(err)[:200]}",
                checked_at=now,
            )
        else:
            latency = time.perf_counter() - started
            status = HisStatus(
                reachability=edge_pb2.HIS_REACHABILITY_SLOW
                if latency > self._slow
                else edge_pb2.HIS_REACHABILITY_REACHABLE,
                latency=latency,
                last_success=now,
                checked_at=now,
            )
        if status.reachability != before.reachability:
            log_at = (
                logging.INFO
                if status.reachability == edge_pb2.HIS_REACHABILITY_REACHABLE
                else logging.WARNING
            )
            log.log(
                log_at,
                "HIS %s: %s%s",
                self.interface,
                _NAMES.get(status.reachability, "?"),
                f" ({status.error})" if status.error else "",
            )
        self.status = status
        return status

    def interface_health(self) -> edge_pb2.HisInterfaceHealth:
        """The latest check as the health report's ``HisInterfaceHealth``."""
        s = self.status
        out = edge_pb2.HisInterfaceHealth(
            interface=self.interface,
            adapter=self.dialect,
            reachability=s.reachability,  # type: ignore[arg-type]
        )
        if s.last_success is not None:
            out.last_success_time.FromDatetime(s.last_success)
        if s.latency is not None:
            out.latency.FromNanoseconds(round(s.latency * 1e9))
        if s.error:
            out.last_error.code = 14  # UNAVAILABLE
            out.last_error.message = s.error
        return out

    def component(self) -> admin_pb2.Component:
        """The latest check as GetEdgeInfo's ``his`` component."""
        s = self.status
        states: dict[int, admin_pb2.ComponentState.ValueType] = {
            edge_pb2.HIS_REACHABILITY_REACHABLE: admin_pb2.COMPONENT_STATE_SERVING,
            edge_pb2.HIS_REACHABILITY_SLOW: admin_pb2.COMPONENT_STATE_DEGRADED,
            edge_pb2.HIS_REACHABILITY_ERRORING: admin_pb2.COMPONENT_STATE_DEGRADED,
            edge_pb2.HIS_REACHABILITY_UNREACHABLE: admin_pb2.COMPONENT_STATE_NOT_SERVING,
        }
        state = states.get(s.reachability, admin_pb2.COMPONENT_STATE_UNSPECIFIED)
        detail = f"{self.interface} via {self.dialect}: {_NAMES.get(s.reachability, '?')}"
        if s.latency is not None and s.reachability in (
            edge_pb2.HIS_REACHABILITY_REACHABLE,
            edge_pb2.HIS_REACHABILITY_SLOW,
        ):
            detail += f", {s.latency * 1000:.0f} ms"
        if s.error:
            detail += f" ({s.error})"
        out = admin_pb2.Component(name="his", state=state, detail=detail)
        if s.checked_at is not None:
            out.state_change_time.FromDatetime(s.checked_at)
        return out

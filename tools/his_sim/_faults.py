"""Faults a simulated HIS can be told to inject, and the request log tests read."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.his_sim._core import HisCore
from tools.his_sim._model import CST

__all__ = [
    "WRITE_OPERATIONS",
    "ArchiveReport",
    "Fault",
    "FaultState",
    "Latency",
    "Outage",
    "RenameField",
    "RequestRecord",
    "TimeoutAfterCommit",
    "fault_from_json",
    "fault_to_json",
]

WRITE_OPERATIONS = frozenset(
    {"hold", "release_hold", "book", "cancel", "quote", "settle", "refund", "register_patient"}
)
"""Canonical names of the operations that change the HIS."""


@dataclass(frozen=True)
class Latency:
    """Adds a delay before the HIS answers."""

    seconds: float
    """Delay added to every matching request."""
    operations: frozenset[str] = frozenset()
    """Canonical operation names delayed; empty for all."""


@dataclass(frozen=True)
class Outage:
    """Makes the HIS unavailable."""

    mode: str = "503"
    """"503": answer every request with the vendor's service-unavailable error (HTTP 503;
    for the database HIS an error response row). "refuse": close the listening socket, so
    connections are refused (the database HIS stops picking up requests)."""
    duration: float | None = None
    """Seconds after which the outage ends by itself; None until cleared."""


@dataclass(frozen=True)
class TimeoutAfterCommit:
    """Commits a write, then loses its answer."""

    operations: frozenset[str] = frozenset({"book", "settle"})
    """Canonical write operations affected."""
    mode: str = "hang"
    """"hang": hold the answer for ``hang_seconds`` (past the caller's timeout); "drop":
    close the connection without answering (database HIS: never write the response row)."""
    hang_seconds: float = 30.0
    """How long "hang" holds the answer."""
    times: int = 1
    """How many matching writes lose their answer before the fault is used up."""


@dataclass(frozen=True)
class RenameField:
    """Renames a field on the wire, as after a vendor upgrade.

    Responses carry ``new`` instead of ``old``; requests must use ``new`` too (a request that
    still sends ``old`` is treated as missing it). The database HIS renames the view column
    and the procedure parameter.
    """

    old: str
    """The dialect's field (JSON key, XML element or column) name before the upgrade."""
    new: str
    """Its name after the upgrade."""


@dataclass(frozen=True)
class ArchiveReport:
    """Archives a report after a while or after it was read."""

    report_id: str
    """The HIS report id."""
    after_seconds: float | None = None
    """Archive this long after the fault is set (0: now)."""
    after_reads: int | None = None
    """Archive once its content has been read this many more times."""


Fault = Latency | Outage | TimeoutAfterCommit | RenameField | ArchiveReport


@dataclass
class RequestRecord:
    """One request the HIS saw (admin calls excluded)."""

    monotonic: float
    """``time.monotonic()`` when the request arrived; compare records to measure rates."""
    time: dt.datetime
    """Wall-clock arrival time (UTC+8)."""
    operation: str
    """Canonical operation name, or "invalid" when the request could not be parsed."""
    outcome: str = "pending"
    """"ok", "error:<vendor code>", "outage", "lost" (answer withheld by a fault)."""
    traceparent: str = ""
    """The W3C trace context the caller sent (HTTP header, SOAP header), if any."""


_TYPES: dict[str, type[Any]] = {
    "latency": Latency,
    "outage": Outage,
    "timeout_after_commit": TimeoutAfterCommit,
    "rename_field": RenameField,
    "archive_report": ArchiveReport,
}


def fault_from_json(obj: Mapping[str, Any]) -> Fault:
    """Builds a fault from its admin-API JSON form.

    Args:
        obj: ``{"type": "latency", "seconds": 0.2, ...}``; see the README for each type.

    Returns:
        The fault.

    Raises:
        ValueError: For an unknown type or bad fields.
    """
    kind = obj.get("type")
    cls = _TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown fault type {kind!r}; expected one of {sorted(_TYPES)}")
    args = {k: v for k, v in obj.items() if k != "type"}
    if "operations" in args:
        ops = args["operations"]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ValueError("operations must be a list of strings")
        args["operations"] = frozenset(ops)
    try:
        fault: Fault = cls(**args)
    except TypeError as err:
        raise ValueError(f"bad fields for {kind}: {err}") from err
    _validate(fault)
    return fault


def _validate(fault: Fault) -> None:
    if isinstance(fault, Latency) and not (
        isinstance(fault.seconds, int | float) and fault.seconds >= 0
    ):
        raise ValueError("latency seconds must be a non-negative number")
    if isinstance(fault, Outage) and fault.mode not in ("503", "refuse"):
        raise ValueError("outage mode must be '503' or 'refuse'")
    if isinstance(fault, TimeoutAfterCommit):
        if fault.mode not in ("hang", "drop"):
            raise ValueError("timeout_after_commit mode must be 'hang' or 'drop'")
        if not fault.operations <= WRITE_OPERATIONS:
            raise ValueError(f"operations must be among {sorted(WRITE_OPERATIONS)}")
        if fault.times < 1:
            raise ValueError("times must be at least 1")
    if isinstance(fault, RenameField) and not (fault.old and fault.new):
        raise ValueError("rename_field needs old and new")
    if isinstance(fault, ArchiveReport) and (fault.after_seconds is None) == (
        fault.after_reads is None
    ):
        raise ValueError("archive_report needs exactly one of after_seconds and after_reads")


def fault_to_json(fault: Fault) -> dict[str, Any]:
    """Renders a fault in its admin-API JSON form.

    Args:
        fault: The fault.

    Returns:
        A JSON-ready dict.
    """
    kind = next(k for k, v in _TYPES.items() if isinstance(fault, v))
    out: dict[str, Any] = {"type": kind}
    for name in fault.__dataclass_fields__:
        value = getattr(fault, name)
        out[name] = sorted(value) if isinstance(value, frozenset) else value
    return out


@dataclass
class _Archive:
    fault: ArchiveReport
    set_at: float
    base_reads: int


@dataclass
class FaultState:
    """The faults in force on one simulator."""

    latencies: list[Latency] = field(default_factory=list)
    outage: Outage | None = None
    outage_since: float = 0.0
    timeouts: list[list[Any]] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    archives: list[_Archive] = field(default_factory=list)

    def add(self, fault: Fault, core: HisCore) -> None:
        """Puts a fault in force.

        Args:
            fault: The fault.
            core: The HIS core (archive faults read its counters).
        """
        if isinstance(fault, Latency):
            self.latencies.append(fault)
        elif isinstance(fault, Outage):
            self.outage = fault
            self.outage_since = time.monotonic()
        elif isinstance(fault, TimeoutAfterCommit):
            self.timeouts.append([fault, fault.times])
        elif isinstance(fault, RenameField):
            self.renames[fault.old] = fault.new
        else:
            reads = core.report_reads.get(fault.report_id, 0)
            self.archives.append(_Archive(fault, time.monotonic(), reads))
            self.apply_archives(core)

    def clear(self) -> None:
        """Removes every fault."""
        self.latencies.clear()
        self.outage = None
        self.timeouts.clear()
        self.renames.clear()
        self.archives.clear()

    def active(self) -> list[Fault]:
        """Lists the faults in force.

        Returns:
            The faults (timeouts with their remaining count as ``times``).
        """
        out: list[Fault] = [*self.latencies]
        if self.outage_active():
            assert self.outage is not None
            out.append(self.outage)
        for fault, left in self.timeouts:
            out.append(TimeoutAfterCommit(fault.operations, fault.mode, fault.hang_seconds, left))
        out.extend(RenameField(old, new) for old, new in self.renames.items())
        out.extend(a.fault for a in self.archives)
        return out

    def outage_active(self) -> bool:
        """Tells whether an outage is in force (ending a timed-out one).

        Returns:
            True during an outage.
        """
        if self.outage is None:
            return False
        if (
            self.outage.duration is not None
            and time.monotonic() - self.outage_since >= self.outage.duration
        ):
            self.outage = None
            return False
        return True

    def latency_for(self, operation: str) -> float:
        """Total added delay for an operation.

        Args:
            operation: Canonical operation name.

        Returns:
            Seconds.
        """
        return sum(
            f.seconds for f in self.latencies if not f.operations or operation in f.operations
        )

    def take_timeout(self, operation: str) -> TimeoutAfterCommit | None:
        """Uses up one matching timeout-after-commit fault.

        Args:
            operation: Canonical write operation that just committed.

        Returns:
            The fault, or None when the answer may go out.
        """
        for entry in self.timeouts:
            fault, left = entry
            if operation in fault.operations and left > 0:
                entry[1] = left - 1
                if entry[1] == 0:
                    self.timeouts.remove(entry)
                assert isinstance(fault, TimeoutAfterCommit)
                return fault
        return None

    def apply_archives(self, core: HisCore) -> None:
        """Archives the reports whose archive fault is due.

        Args:
            core: The HIS core.
        """
        now = time.monotonic()
        for entry in list(self.archives):
            fault = entry.fault
            due = (
                fault.after_seconds is not None and now - entry.set_at >= fault.after_seconds
            ) or (
                fault.after_reads is not None
                and core.report_reads.get(fault.report_id, 0) - entry.base_reads
                >= fault.after_reads
            )
            if due:
                if fault.report_id in core.reports:
                    core.archive_report(fault.report_id)
                self.archives.remove(entry)

    def rename_out(self, obj: Any) -> Any:
        """Renames keys of a JSON-like response per the rename faults.

        Args:
            obj: Response data.

        Returns:
            The data with renamed keys.
        """
        if not self.renames:
            return obj
        if isinstance(obj, dict):
            return {self.renames.get(k, k): self.rename_out(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.rename_out(v) for v in obj]
        return obj

    def rename_in(self, obj: Any) -> Any:
        """Maps the keys of a JSON-like request back to the HIS's internal names.

        A request still using an old name loses that field, as with a real upgraded HIS.

        Args:
            obj: Request data.

        Returns:
            The data with internal names.
        """
        if not self.renames:
            return obj
        back = {new: old for old, new in self.renames.items()}
        if isinstance(obj, dict):
            return {
                back.get(k, k): self.rename_in(v)
                for k, v in obj.items()
                if k not in self.renames or k in back
            }
        if isinstance(obj, list):
            return [self.rename_in(v) for v in obj]
        return obj


def now_cst() -> dt.datetime:
    """Returns the wall-clock time in UTC+8.

    Returns:
        Aware datetime.
    """
    return dt.datetime.now(CST)

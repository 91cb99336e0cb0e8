"""The parameter-change list's values: changes, their per-RPC views, and the report.

:mod:`compat._differ` finds the changes on the pairs of :mod:`compat._pairing` (the pairs
the rules run on); :mod:`compat._judge` attaches them to the RPCs that reach them and
judges them per direction.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Literal

from compat._model import Severity, fingerprint

__all__ = [
    "Change",
    "ChangeKind",
    "ChangeReport",
    "Direction",
    "ParameterChange",
    "ServedBy",
]

Direction = Literal["request", "response"]

ServedBy = Literal["edge", "cloud"]
"""Which side serves an RPC: hospital services are served by edges and called by the
cloud; the cloud's own services are served by the cloud and called by edges and apps."""


class ChangeKind(enum.Enum):
    """What happened to an element."""

    ADDED = "added"
    REMOVED = "removed"
    RENAMED = "renamed"
    RENUMBERED = "renumbered"
    RETYPED = "retyped"
    RELABELED = "relabeled"
    ONEOF = "oneof"
    JSON_NAME = "json_name"
    DEFAULT = "default"
    DEPRECATED = "deprecated"
    RESERVED = "reserved"
    UNRESERVED = "unreserved"
    STREAMING = "streaming"
    REQUEST_TYPE = "request_type"
    RESPONSE_TYPE = "response_type"


@dataclasses.dataclass(frozen=True)
class Change:
    """One change to one element, independent of any RPC."""

    kind: ChangeKind
    """What happened."""
    element: str
    """``file``, ``message``, ``enum``, ``service``, ``field``, ``enum_value``, ``oneof``,
    ``reserved`` or ``rpc``."""
    owner: str
    """Full name of the enclosing message, enum or service ('' for top-level types)."""
    name: str
    """The element's name (the newer one when renamed)."""
    message: str
    """What changed, for people."""
    path: str
    """File in the newer release (the older one when the whole file is gone)."""
    line: int
    """1-based line of the element (or its surviving parent) in that file."""
    column: int
    """1-based column."""
    severity: Severity
    """Judgement without regard to direction (additions are INFO)."""
    old: str = ""
    """The value before (type, name, number, label...)."""
    new: str = ""
    """The value after."""
    number: int | None = None
    """Field or enum value number, when the element has one."""

    @property
    def subject(self) -> str:
        """Stable key of the element."""
        key = f"{self.owner}.{self.name}" if self.owner else self.name
        return key if self.number is None else f"{self.owner}#{self.number}"

    @property
    def fingerprint(self) -> str:
        """Stable ID of the change."""
        return fingerprint(self.kind.value, self.path, self.subject, self.message)

    def to_json(self) -> dict[str, Any]:
        """The change as a JSON object."""
        return {
            "kind": self.kind.value,
            "element": self.element,
            "owner": self.owner,
            "name": self.name,
            "number": self.number,
            "old": self.old,
            "new": self.new,
            "message": self.message,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "severity": self.severity.name.lower(),
            "fingerprint": self.fingerprint,
        }


@dataclasses.dataclass(frozen=True)
class ParameterChange:
    """A change as seen from one RPC's request or response."""

    service: str
    """Full name of the service."""
    rpc: str
    """RPC name."""
    direction: Direction | None
    """``request`` or ``response``; ``None`` for a change to the RPC itself. Who writes
    which depends on :attr:`served_by`."""
    parameter: str
    """Dotted path from the request/response root (``booking.patient.id_card``)."""
    change: Change
    """The underlying change."""
    severity: Severity
    """Judgement in this direction."""
    note: str
    """Why, in this direction."""
    approved: bool = False
    """Whether the underlying change's fingerprint is in the approvals file."""
    served_by: ServedBy = "edge"
    """Who serves the RPC, which decides who writes a request and who a response."""

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object."""
        return {
            "approved": self.approved,
            "service": self.service,
            "served_by": self.served_by,
            "rpc": self.rpc,
            "direction": self.direction,
            "parameter": self.parameter,
            "severity": self.severity.name.lower(),
            "note": self.note,
            "change": self.change.to_json(),
        }


@dataclasses.dataclass(frozen=True)
class ChangeReport:
    """Every change between two releases, and its per-RPC view."""

    changes: list[Change]
    """All changes, schema-wide, in file order."""
    parameters: list[ParameterChange]
    """Changes reachable from an RPC, grouped service → RPC → direction → parameter path."""

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object."""
        return {
            "changes": [c.to_json() for c in self.changes],
            "parameters": [p.to_json() for p in self.parameters],
        }

"""Faults the payment simulator can be told to inject."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = [
    "COMMANDS",
    "Fault",
    "InvalidSignature",
    "NotificationDelayed",
    "NotificationDuplicated",
    "NotificationLost",
    "RefundDelayed",
    "TimeoutAfterCommit",
    "fault_from_json",
    "fault_to_json",
]

COMMANDS = frozenset({"prepay", "close", "refund"})
"""Merchant calls that change the channel (the ones a timeout-after-commit can hit)."""

_EVENTS = frozenset({"payment", "refund", "any"})


@dataclasses.dataclass(frozen=True)
class NotificationLost:
    """The next ``times`` notifications (of ``event``) are never delivered, not even retried."""

    times: int = 1
    event: str = "any"
    """``payment``, ``refund`` or ``any``."""


@dataclasses.dataclass(frozen=True)
class NotificationDuplicated:
    """The next ``times`` notifications are delivered ``copies`` times each."""

    copies: int = 2
    times: int = 1
    event: str = "any"


@dataclasses.dataclass(frozen=True)
class NotificationDelayed:
    """The next ``times`` notifications wait: ``seconds``, or (``None``) until released.

    A held notification is delivered by ``release_notifications()`` (``POST
    /_sim/notifications/release``): a test queries the payment first, then lets the
    notification arrive late.
    """

    seconds: float | None = None
    times: int = 1
    event: str = "any"


@dataclasses.dataclass(frozen=True)
class TimeoutAfterCommit:
    """The next ``times`` matching merchant calls commit, then lose their answer."""

    operations: frozenset[str] = frozenset(COMMANDS)
    """Among ``prepay``, ``close``, ``refund``."""
    mode: str = "drop"
    """``drop``: close the connection without an answer; ``hang``: hold the answer for
    ``hang_seconds`` (past the caller's timeout)."""
    hang_seconds: float = 30.0
    times: int = 1


@dataclasses.dataclass(frozen=True)
class RefundDelayed:
    """Refunds accepted while this is in force stay ``PROCESSING``.

    For ``seconds``, or (``None``) until ``complete_refunds()`` (``POST
    /_sim/refunds/complete``); then they succeed and their notification is sent.
    """

    seconds: float | None = None


@dataclasses.dataclass(frozen=True)
class InvalidSignature:
    """The next ``times`` notifications carry a signature that does not verify."""

    times: int = 1
    mode: str = "corrupt"
    """``corrupt``: a flipped byte; ``other-key``: signed by a key the cloud does not hold."""


Fault = (
    NotificationLost
    | NotificationDuplicated
    | NotificationDelayed
    | TimeoutAfterCommit
    | RefundDelayed
    | InvalidSignature
)

_TYPES: dict[str, type[Any]] = {
    "notification_lost": NotificationLost,
    "notification_duplicated": NotificationDuplicated,
    "notification_delayed": NotificationDelayed,
    "timeout_after_commit": TimeoutAfterCommit,
    "refund_delayed": RefundDelayed,
    "invalid_signature": InvalidSignature,
}


def fault_from_json(obj: Mapping[str, Any]) -> Fault:
    """Builds a fault from its control-API JSON form (``{"type": "notification_lost", ...}``).

    Raises:
        ValueError: an unknown type or a bad field (the message names it).
    """
    kind = str(obj.get("type"))
    cls = _TYPES.get(kind)
    if cls is None:
        raise ValueError(f"type: unknown fault {kind!r}; expected one of {sorted(_TYPES)}")
    args = {k: v for k, v in obj.items() if k != "type"}
    if "operations" in args:
        ops = args["operations"]
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            raise ValueError("operations: must be a list of strings")
        args["operations"] = frozenset(ops)
    try:
        fault: Fault = cls(**args)
    except TypeError as err:
        raise ValueError(f"{kind}: bad fields: {err}") from None
    validate(fault)
    return fault


def validate(fault: Fault) -> None:
    """Checks a fault's fields.

    Raises:
        ValueError: naming the field.
    """
    times = getattr(fault, "times", 1)
    if not isinstance(times, int) or times < 1:
        raise ValueError("times: must be an integer >= 1")
    event = getattr(fault, "event", "any")
    if event not in _EVENTS:
        raise ValueError(f"event: must be one of {sorted(_EVENTS)}")
    if isinstance(fault, NotificationDuplicated) and not 2 <= fault.copies <= 20:
        raise ValueError("copies: must be within [2, 20]")
    seconds = getattr(fault, "seconds", None)
    if seconds is not None and not (isinstance(seconds, int | float) and seconds >= 0):
        raise ValueError("seconds: must be a number >= 0 or null")
    if isinstance(fault, TimeoutAfterCommit):
        if fault.mode not in ("drop", "hang"):
            raise ValueError("mode: must be 'drop' or 'hang'")
        if not fault.operations or not fault.operations <= COMMANDS:
            raise ValueError(f"operations: must be among {sorted(COMMANDS)}")
    if isinstance(fault, InvalidSignature) and fault.mode not in ("corrupt", "other-key"):
        raise ValueError("mode: must be 'corrupt' or 'other-key'")


def fault_to_json(fault: Fault) -> dict[str, Any]:
    """The control-API JSON form of a fault."""
    kind = next(k for k, v in _TYPES.items() if isinstance(fault, v))
    out: dict[str, Any] = {"type": kind}
    for f in dataclasses.fields(fault):
        value = getattr(fault, f.name)
        out[f.name] = sorted(value) if isinstance(value, frozenset) else value
    return out

"""Errors of the idempotency ledger, each with the contract's status code and reason.

::

    LedgerError                     (code, reason)
    ├── InvalidIdempotencyKey       INVALID_ARGUMENT     IDEMPOTENCY_KEY_INVALID
    ├── IdempotencyKeyReused        INVALID_ARGUMENT     IDEMPOTENCY_KEY_REUSED
    ├── IdempotencyKeyInProgress    ABORTED              IDEMPOTENCY_KEY_IN_PROGRESS
    ├── IdempotencyKeyFenced        FAILED_PRECONDITION  IDEMPOTENCY_KEY_FENCED
    ├── OperationUnknown            UNAVAILABLE          OPERATION_OUTCOME_UNKNOWN
    └── LedgerDamaged               DATA_LOSS            LEDGER_DAMAGED

    NoEffect        raised by a HIS call: provably nothing reached the HIS (key released)
    Refused         raised by a HIS call: a definitive refusal (recorded, replayed)

The servicer's single error-mapping table turns ``code`` into the gRPC status and
``reason`` into ``google.rpc.ErrorInfo{reason, domain: "hospital.hplus"}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = [
    "IdempotencyKeyFenced",
    "IdempotencyKeyInProgress",
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "LedgerDamaged",
    "LedgerError",
    "NoEffect",
    "OperationError",
    "OperationUnknown",
    "Refused",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperationError:
    """Why an operation failed, as recorded and replayed."""

    code: str
    """``google.rpc.Code`` name, e.g. ``"FAILED_PRECONDITION"``."""
    reason: str
    """``ErrorInfo.reason``, e.g. ``"SLOT_FULL"``; empty when there is none."""
    message: str
    """Human message, free of patient data."""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """``ErrorInfo.metadata``, e.g. the rule that refused and its text; empty when none."""
    violations: tuple[tuple[str, str], ...] = ()
    """``BadRequest`` field violations, e.g. the request field the HIS refused."""

    def __post_init__(self) -> None:
        # Recorded as JSON: lists come back where tuples went in.
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "violations", tuple((f, d) for f, d in self.violations))


class LedgerError(Exception):
    """Base of the ledger's errors.

    Attributes:
        code: ``google.rpc.Code`` name of the status the caller should get.
        reason: ``ErrorInfo.reason``.
        key: the idempotency key concerned.
    """

    code = "INTERNAL"
    reason = ""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class InvalidIdempotencyKey(LedgerError):
    """The key is empty, longer than 128 characters or not printable ASCII."""

    code = "INVALID_ARGUMENT"
    reason = "IDEMPOTENCY_KEY_INVALID"


class IdempotencyKeyReused(LedgerError):
    """The key was used before with other parameters or another method."""

    code = "INVALID_ARGUMENT"
    reason = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyKeyInProgress(LedgerError):
    """The key's operation is running or its outcome is not resolved yet: ask again later.

    Attributes:
        retry_after_seconds: suggested delay (for ``google.rpc.RetryInfo``).
    """

    code = "ABORTED"
    reason = "IDEMPOTENCY_KEY_IN_PROGRESS"

    def __init__(self, key: str, message: str, *, retry_after_seconds: float = 1.0) -> None:
        super().__init__(key, message)
        self.retry_after_seconds = retry_after_seconds


class IdempotencyKeyFenced(LedgerError):
    """A compensation fenced the key: a late copy of the write must not run."""

    code = "FAILED_PRECONDITION"
    reason = "IDEMPOTENCY_KEY_FENCED"


class OperationUnknown(LedgerError):
    """The HIS call may have had an effect but its answer was lost; the key is UNKNOWN."""

    code = "UNAVAILABLE"
    reason = "OPERATION_OUTCOME_UNKNOWN"


class OperationNotOpen(LedgerError):
    """An outcome came for an operation another path settled (or released) meanwhile.

    Still INTERNAL to a caller (as every unexpected ledger state); the resolver skips it.
    """

    reason = "OPERATION_NOT_OPEN"


class LedgerDamaged(LedgerError):
    """SQLite found the ledger's file damaged: no call can use the ledger until it is restored.

    Raised by the call that found the damage and by every later one (nothing more is
    written into a damaged ledger).
    """

    code = "DATA_LOSS"
    reason = "LEDGER_DAMAGED"

    def __init__(self, detail: str) -> None:
        super().__init__("", "this edge's ledger is damaged; its operator must restore it")
        self.detail = detail


class NoEffect(Exception):
    """Raised by a HIS call that provably did not reach the HIS.

    For example a refused connection, or the edge shutting down before sending. The ledger
    frees the key, so a retry runs afresh.
    """


class Refused(Exception):
    """Raised by a HIS call when the HIS (or a hospital rule) definitively refused.

    The refusal is recorded (state FAILED) and replayed unchanged to every retry.

    Args:
        error: what to record and replay.
    """

    def __init__(self, error: OperationError) -> None:
        super().__init__(f"{error.code} {error.reason}: {error.message}")
        self.error = error

"""What the ledger records about one idempotency key."""

from __future__ import annotations

import dataclasses
import enum
import hashlib

from frontend_server.ledger._errors import OperationError

__all__ = ["HisOutcome", "OperationRecord", "OperationState", "fingerprint"]


class OperationState(enum.StrEnum):
    """State of a key in the ledger (the contract's ``OperationState``, plus FENCED)."""

    IN_PROGRESS = "IN_PROGRESS"
    """Recorded before the HIS call; the call is running (or the process died during it,
    until :meth:`~frontend_server.ledger.Ledger.recover` makes it UNKNOWN)."""
    SUCCEEDED = "SUCCEEDED"
    """The HIS confirmed; receipt and result are recorded."""
    FAILED = "FAILED"
    """Definitively refused; the error is recorded."""
    UNKNOWN = "UNKNOWN"
    """The HIS may or may not have done it; to be resolved by querying the HIS."""
    FENCED = "FENCED"
    """Never received, and a compensation fenced it: a late copy is refused. Reported as
    the contract's ``OPERATION_STATE_NOT_RECEIVED``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HisOutcome:
    """What a successful HIS write returned."""

    receipt: str
    """The HIS's own id or receipt number for the write (挂号ID, 收据号, …)."""
    result: bytes = b""
    """The response to replay: the serialised response message."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OperationRecord:
    """The ledger's entry for one idempotency key."""

    idempotency_key: str
    """The key."""
    method: str
    """Full RPC name that first used the key."""
    fingerprint: str
    """Fingerprint of that request's parameters."""
    state: OperationState
    """What is known."""
    receive_time: float
    """When the edge first received the write (epoch seconds)."""
    update_time: float
    """When the entry last changed."""
    complete_time: float | None
    """When it became SUCCEEDED or FAILED."""
    his_attempts: int
    """HIS calls made for it, resolution queries included."""
    trace_id: str
    """W3C trace id of the first request."""
    receipt: str | None
    """HIS receipt, once SUCCEEDED."""
    result: bytes | None
    """Response to replay, once SUCCEEDED."""
    error: OperationError | None
    """Why it FAILED, or the last error while UNKNOWN."""
    request: bytes | None = None
    """The request as first received (serialized), when the caller kept it."""

    @property
    def is_evidence(self) -> bool:
        """Whether the record settles "did it happen?" (SUCCEEDED, FAILED or FENCED)."""
        return self.state in (
            OperationState.SUCCEEDED,
            OperationState.FAILED,
            OperationState.FENCED,
        )


def fingerprint(method: str, payload: bytes) -> str:
    """Fingerprint of a request: SHA-256 over the method and the request's parameters.

    Args:
        method: full RPC name.
        payload: the request serialised deterministically *without* its idempotency key
            (see :func:`~frontend_server.ledger.message_fingerprint`).
    """
    digest = hashlib.sha256()
    digest.update(method.encode("utf-8"))
    digest.update(b"\x00")
    digest.update(payload)
    return digest.hexdigest()

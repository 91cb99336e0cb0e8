"""The idempotency ledger: the cloud's keys → what the HIS did under each, in SQLite.

A servicer runs every write through :meth:`Ledger.execute` with the request's key and
:func:`message_fingerprint`; evidence reads answer from :meth:`Ledger.get` via
:func:`to_operation_record`; compensations call :meth:`Ledger.fence` first; a
:class:`Resolver` settles UNKNOWN operations by asking the HIS.
"""

from __future__ import annotations

from frontend_server.ledger._errors import (
    IdempotencyKeyFenced,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    LedgerDamaged,
    LedgerError,
    NoEffect,
    OperationError,
    OperationNotOpen,
    OperationUnknown,
    Refused,
)
from frontend_server.ledger._ledger import LEDGER_STORE, FenceResult, Ledger
from frontend_server.ledger._model import HisOutcome, OperationRecord, OperationState, fingerprint
from frontend_server.ledger._proto import message_fingerprint, not_received, to_operation_record
from frontend_server.ledger._resolver import Probe, Resolver

__all__ = [
    "LEDGER_STORE",
    "FenceResult",
    "HisOutcome",
    "IdempotencyKeyFenced",
    "IdempotencyKeyInProgress",
    "IdempotencyKeyReused",
    "InvalidIdempotencyKey",
    "Ledger",
    "LedgerDamaged",
    "LedgerError",
    "NoEffect",
    "OperationError",
    "OperationNotOpen",
    "OperationRecord",
    "OperationState",
    "OperationUnknown",
    "Probe",
    "Refused",
    "Resolver",
    "fingerprint",
    "message_fingerprint",
    "not_received",
    "to_operation_record",
]

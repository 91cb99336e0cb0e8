"""Conversions between ledger records and the contract's messages."""

from __future__ import annotations

from google.protobuf import message as pb_message
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, status_pb2

from frontend_server.ledger._model import OperationRecord, OperationState, fingerprint
from hplus.hospital.v1 import common_pb2

__all__ = ["message_fingerprint", "not_received", "to_operation_record"]

_STATES = {
    OperationState.IN_PROGRESS: common_pb2.OPERATION_STATE_IN_PROGRESS,
    OperationState.SUCCEEDED: common_pb2.OPERATION_STATE_SUCCEEDED,
    OperationState.FAILED: common_pb2.OPERATION_STATE_FAILED,
    OperationState.UNKNOWN: common_pb2.OPERATION_STATE_UNKNOWN,
    OperationState.FENCED: common_pb2.OPERATION_STATE_NOT_RECEIVED,
}


def message_fingerprint(method: str, request: pb_message.Message) -> str:
    """Fingerprint of a write request: its fields, deterministically, minus the key.

    Args:
        method: full RPC name, e.g. ``"hplus.hospital.v1.AppointmentService/HoldSlot"``.
        request: the request message.
    """
    copy = type(request)()
    copy.CopyFrom(request)
    if "idempotency_key" in copy.DESCRIPTOR.fields_by_name:
        copy.ClearField("idempotency_key")
    return fingerprint(method, copy.SerializeToString(deterministic=True))


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def to_operation_record(record: OperationRecord) -> common_pb2.OperationRecord:
    """The contract's ``OperationRecord`` for a ledger entry."""
    out = common_pb2.OperationRecord(
        idempotency_key=record.idempotency_key,
        method=record.method,
        state=_STATES[record.state],
        his_attempts=record.his_attempts,
        trace_id=record.trace_id,
    )
    if record.state is not OperationState.FENCED:
        out.receive_time.CopyFrom(_timestamp(record.receive_time))
    if record.complete_time is not None:
        out.complete_time.CopyFrom(_timestamp(record.complete_time))
    if record.error is not None:
        out.error.CopyFrom(
            status_pb2.Status(
                code=code_pb2.Code.Value(record.error.code), message=record.error.message
            )
        )
    return out


def not_received(key: str) -> common_pb2.OperationRecord:
    """The contract's record for a key the edge never received."""
    return common_pb2.OperationRecord(
        idempotency_key=key, state=common_pb2.OPERATION_STATE_NOT_RECEIVED
    )

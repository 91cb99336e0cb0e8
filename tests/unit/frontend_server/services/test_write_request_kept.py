"""An UNKNOWN write keeps its request in the ledger, so a restarted edge can probe it.

Found by the chaos run: an edge SIGKILLed during a HoldSlot at the SOAP hospital (a HIS
that cannot be asked by the caller's key: the probe lists the patient's holds by the
request's slot) came back without the request, and the hold stayed UNKNOWN for good.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend_server.ledger import (
    HisOutcome,
    Ledger,
    OperationError,
    OperationState,
    OperationUnknown,
)
from frontend_server.services import WriteRunner
from hplus.hospital.v1 import appointment_pb2, common_pb2

HOLD = "hplus.hospital.v1.AppointmentService/HoldSlot"


async def test_a_restarted_edge_probes_an_unknown_write_with_its_request(tmp_path: Path) -> None:
    request = appointment_pb2.HoldSlotRequest(
        idempotency_key="k1", slot_id="H0000373", patient=common_pb2.PatientRef(patient_id="P9")
    )

    async def lost() -> appointment_pb2.HoldSlotResponse:
        raise TimeoutError  # the HIS took the hold; its answer never came

    async with Ledger.open(tmp_path / "ledger.db") as ledger:
        with pytest.raises(OperationUnknown):
            await WriteRunner(ledger).run(
                HOLD, request, appointment_pb2.HoldSlotResponse, lost, lambda r: ""
            )

    seen: list[object] = []

    async def probe(key: str, asked: object) -> HisOutcome | OperationError | None:
        seen.append(asked)
        return HisOutcome(receipt="SD1", result=b"")

    async with Ledger.open(tmp_path / "ledger.db") as ledger:  # the edge started again
        runner = WriteRunner(ledger)
        runner.register_probe(HOLD, probe)
        assert await runner.settle("k1")
        record = await ledger.get("k1")
        assert record is not None
        assert record.state is OperationState.SUCCEEDED
    assert seen == [request]


async def test_a_ledger_of_the_last_release_gains_the_request_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the operations table as the last release made it
        old.execute(
            "CREATE TABLE operations (idempotency_key VARCHAR(128) PRIMARY KEY, method TEXT NOT "
            "NULL, fingerprint TEXT NOT NULL, state VARCHAR(16) NOT NULL, receive_time FLOAT NOT "
            "NULL, update_time FLOAT NOT NULL, complete_time FLOAT, his_attempts INTEGER NOT "
            "NULL, trace_id TEXT NOT NULL, receipt TEXT, result BLOB, error TEXT)"
        )
        old.execute(
            "INSERT INTO operations VALUES ('old', 'm', 'f', 'SUCCEEDED', 1, 1, 1, 1, '', 'R', "
            "NULL, NULL)"
        )
    async with Ledger.open(path) as ledger:
        record = await ledger.get("old")
        assert record is not None
        assert (record.receipt, record.request) == ("R", None)


async def test_a_duplicate_key_answer_is_evidence_to_read_not_a_refusal(tmp_path: Path) -> None:
    # Found by the chaos run: a resent BookAppointment met "this key already holds a write"
    # at the SOAP HIS; recorded as FAILED, it made the cloud refund a booking the hospital
    # kept. Now the key stays UNKNOWN and the probe finds the booking.
    from frontend_server.adapters import HisRejected, RejectReason

    request = appointment_pb2.HoldSlotRequest(idempotency_key="k2", slot_id="H1")

    async def duplicate() -> appointment_pb2.HoldSlotResponse:
        raise HisRejected(RejectReason.DUPLICATE_KEY, "1003", "duplicate")

    async def probe(key: str, asked: object) -> HisOutcome | OperationError | None:
        return HisOutcome(receipt="SD2", result=b"")

    async with Ledger.open(tmp_path / "ledger.db") as ledger:
        runner = WriteRunner(ledger)
        runner.register_probe(HOLD, probe)
        with pytest.raises(OperationUnknown):
            await runner.run(HOLD, request, appointment_pb2.HoldSlotResponse, duplicate, str)
        record = await ledger.get("k2")
        assert record is not None
        assert record.state is OperationState.UNKNOWN
        assert await runner.settle("k2")
        settled = await ledger.get("k2")
        assert settled is not None
        assert (settled.state, settled.receipt) == (OperationState.SUCCEEDED, "SD2")

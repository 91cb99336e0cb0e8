from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from frontend_server.ledger import (
    HisOutcome,
    IdempotencyKeyFenced,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    Ledger,
    NoEffect,
    OperationError,
    OperationState,
    OperationUnknown,
    Refused,
    message_fingerprint,
    not_received,
    to_operation_record,
)
from hplus.hospital.v1 import appointment_pb2, common_pb2

BOOK = "hplus.hospital.v1.AppointmentService/BookAppointment"
HOLD = "hplus.hospital.v1.AppointmentService/HoldSlot"


class FakeHis:
    """A HIS that books: counts calls and holds the bookings it committed."""

    def __init__(self) -> None:
        self.calls = 0
        self.bookings: list[str] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.fail_after_commit: BaseException | None = None
        self.refuse: OperationError | None = None
        self.unreachable = False

    async def book(self) -> HisOutcome:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        if self.unreachable:
            raise NoEffect("connection refused")
        if self.refuse is not None:
            raise Refused(self.refuse)
        receipt = f"REG{len(self.bookings) + 1:04d}"
        self.bookings.append(receipt)
        if self.fail_after_commit is not None:
            raise self.fail_after_commit  # the write happened; the answer is lost
        return HisOutcome(receipt=receipt, result=receipt.encode())


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    async with Ledger.open(tmp_path / "ledger.db") as opened:
        yield opened


async def test_retry_returns_the_original_receipt(ledger: Ledger, tmp_path: Path) -> None:
    his = FakeHis()
    first = await ledger.execute("order-1:book", method=BOOK, fingerprint="f1", call=his.book)
    again = await ledger.execute("order-1:book", method=BOOK, fingerprint="f1", call=his.book)
    assert first.state is OperationState.SUCCEEDED
    assert first.receipt == "REG0001"
    assert (again.receipt, again.result, again.receive_time) == (
        "REG0001",
        b"REG0001",
        first.receive_time,
    )
    assert his.calls == 1
    assert his.bookings == ["REG0001"]
    await ledger.aclose()
    async with Ledger.open(tmp_path / "ledger.db") as reopened:  # durable
        replay = await reopened.execute(
            "order-1:book", method=BOOK, fingerprint="f1", call=his.book
        )
    assert replay.receipt == "REG0001"
    assert his.calls == 1


async def test_timeout_after_commit_leaves_unknown_and_never_books_twice(ledger: Ledger) -> None:
    his = FakeHis()
    his.fail_after_commit = TimeoutError()
    with pytest.raises(OperationUnknown):
        await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    record = await ledger.get("k")
    assert record is not None
    assert record.state is OperationState.UNKNOWN
    assert not record.is_evidence
    his.fail_after_commit = None
    with pytest.raises(IdempotencyKeyInProgress) as info:
        await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    assert info.value.reason == "IDEMPOTENCY_KEY_IN_PROGRESS"
    assert info.value.code == "ABORTED"
    assert his.bookings == ["REG0001"]
    assert his.calls == 1
    # The resolver asks the HIS (here: it has the booking) and settles the key.
    assert [r.idempotency_key for r in await ledger.unresolved()] == ["k"]
    await ledger.note_attempt("k")
    resolved = await ledger.resolve("k", HisOutcome(receipt="REG0001", result=b"REG0001"))
    assert resolved is not None
    assert resolved.state is OperationState.SUCCEEDED
    assert resolved.his_attempts == 2
    replay = await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    assert replay.receipt == "REG0001"
    assert his.calls == 1


async def test_concurrent_calls_with_one_key_make_one_his_call(ledger: Ledger) -> None:
    his = FakeHis()
    his.release.clear()
    first = asyncio.create_task(ledger.execute("k", method=BOOK, fingerprint="f", call=his.book))
    await his.entered.wait()
    others = await asyncio.gather(
        *(ledger.execute("k", method=BOOK, fingerprint="f", call=his.book) for _ in range(20)),
        return_exceptions=True,
    )
    assert all(isinstance(o, IdempotencyKeyInProgress) for o in others)
    his.release.set()
    original = await first
    assert his.calls == 1
    assert his.bookings == ["REG0001"]
    assert (await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)) == original


async def test_a_burst_of_same_key_calls_reaches_the_his_once(ledger: Ledger) -> None:
    his = FakeHis()
    results = await asyncio.gather(
        *(ledger.execute("k", method=BOOK, fingerprint="f", call=his.book) for _ in range(50)),
        return_exceptions=True,
    )
    receipts = {r.receipt for r in results if not isinstance(r, BaseException)}
    assert receipts == {"REG0001"}
    assert all(
        isinstance(r, IdempotencyKeyInProgress) for r in results if isinstance(r, BaseException)
    )
    assert his.calls == 1


async def test_reused_key_with_other_parameters_is_refused(ledger: Ledger) -> None:
    his = FakeHis()
    await ledger.execute("k", method=BOOK, fingerprint="f1", call=his.book)
    with pytest.raises(IdempotencyKeyReused) as info:
        await ledger.execute("k", method=BOOK, fingerprint="f2", call=his.book)
    assert (info.value.code, info.value.reason) == ("INVALID_ARGUMENT", "IDEMPOTENCY_KEY_REUSED")
    with pytest.raises(IdempotencyKeyReused):
        await ledger.execute("k", method=HOLD, fingerprint="f1", call=his.book)
    assert his.calls == 1


async def test_fence_a_key_never_received(ledger: Ledger) -> None:
    his = FakeHis()
    fenced = await ledger.fence("late", method=BOOK)
    assert fenced.empty
    assert fenced.record.state is OperationState.FENCED
    assert (await ledger.fence("late", method=BOOK)).empty  # idempotent
    with pytest.raises(IdempotencyKeyFenced) as info:
        await ledger.execute("late", method=BOOK, fingerprint="f", call=his.book)
    assert info.value.reason == "IDEMPOTENCY_KEY_FENCED"
    assert his.calls == 0
    record = await ledger.get("late")
    assert record is not None
    assert record.is_evidence
    assert to_operation_record(record).state == common_pb2.OPERATION_STATE_NOT_RECEIVED


async def test_fence_of_a_done_key_returns_what_to_undo(ledger: Ledger) -> None:
    his = FakeHis()
    await ledger.execute("done", method=BOOK, fingerprint="f", call=his.book)
    found = await ledger.fence("done", method=BOOK)
    assert not found.empty
    assert found.record.receipt == "REG0001"
    his.refuse = OperationError(code="RESOURCE_EXHAUSTED", reason="SLOT_FULL", message="full")
    await ledger.execute("refused", method=BOOK, fingerprint="f", call=his.book)
    assert (await ledger.fence("refused", method=BOOK)).empty
    his.refuse, his.fail_after_commit = None, ConnectionResetError()
    with pytest.raises(OperationUnknown):
        await ledger.execute("unknown", method=BOOK, fingerprint="f", call=his.book)
    with pytest.raises(IdempotencyKeyInProgress):
        await ledger.fence("unknown", method=BOOK)


async def test_definitive_refusal_is_recorded_and_replayed(ledger: Ledger) -> None:
    his = FakeHis()
    his.refuse = OperationError(code="RESOURCE_EXHAUSTED", reason="SLOT_FULL", message="full")
    first = await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    his.refuse = None
    again = await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    assert first.state is again.state is OperationState.FAILED
    assert again.error == OperationError(
        code="RESOURCE_EXHAUSTED", reason="SLOT_FULL", message="full"
    )
    assert his.calls == 1
    assert his.bookings == []
    status = to_operation_record(again).error
    assert status.code == 8
    assert status.message == "full"


async def test_no_effect_frees_the_key(ledger: Ledger) -> None:
    his = FakeHis()
    his.unreachable = True
    with pytest.raises(NoEffect):
        await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    assert await ledger.get("k") is None
    assert not_received("k").state == common_pb2.OPERATION_STATE_NOT_RECEIVED
    his.unreachable = False
    record = await ledger.execute("k", method=BOOK, fingerprint="f", call=his.book)
    assert record.state is OperationState.SUCCEEDED
    assert his.bookings == ["REG0001"]


async def test_cancelled_call_leaves_unknown(ledger: Ledger) -> None:
    his = FakeHis()
    his.release.clear()
    call = asyncio.create_task(ledger.execute("k", method=BOOK, fingerprint="f", call=his.book))
    await his.entered.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    record = await ledger.get("k")
    assert record is not None
    assert record.state is OperationState.UNKNOWN


async def test_crash_between_his_done_and_ledger_update_leaves_unknown(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with Ledger.open(path) as ledger:
        record, fresh = await ledger.begin("k", method=BOOK, fingerprint="f", his_attempts=1)
        assert fresh
        assert record.state is OperationState.IN_PROGRESS
        # ... the HIS books, then the process dies before the outcome is recorded.
    his = FakeHis()
    async with Ledger.open(path) as restarted:
        record_after = await restarted.get("k")
        assert record_after is not None
        assert record_after.state is OperationState.UNKNOWN
        with pytest.raises(IdempotencyKeyInProgress):
            await restarted.execute("k", method=BOOK, fingerprint="f", call=his.book)
    assert his.calls == 0


@pytest.mark.parametrize("key", ["", "x" * 129, "naïve", "has space"])
async def test_malformed_keys_are_refused(ledger: Ledger, key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        await ledger.execute(key, method=BOOK, fingerprint="f", call=FakeHis().book)


async def test_operation_record_for_the_contract(ledger: Ledger) -> None:
    his = FakeHis()
    record = await ledger.execute(
        "k", method=BOOK, fingerprint="f", call=his.book, trace_id="ab" * 16
    )
    proto = to_operation_record(record)
    assert proto.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert proto.method == BOOK
    assert proto.his_attempts == 1
    assert proto.trace_id == "ab" * 16
    assert proto.HasField("receive_time")
    assert proto.HasField("complete_time")


def test_message_fingerprint_ignores_the_key_only() -> None:
    a = appointment_pb2.HoldSlotRequest(idempotency_key="k1", slot_id="S1")
    b = appointment_pb2.HoldSlotRequest(idempotency_key="k2", slot_id="S1")
    c = appointment_pb2.HoldSlotRequest(idempotency_key="k1", slot_id="S2")
    assert message_fingerprint(HOLD, a) == message_fingerprint(HOLD, b)
    assert message_fingerprint(HOLD, a) != message_fingerprint(HOLD, c)
    assert message_fingerprint(HOLD, a) != message_fingerprint(BOOK, a)
    assert a.idempotency_key == "k1"  # the request itself is untouched


async def test_purge_keeps_open_and_recent_entries(tmp_path: Path) -> None:
    now = [1000.0]
    async with Ledger.open(tmp_path / "l.db", clock=lambda: now[0]) as ledger:
        his = FakeHis()
        await ledger.execute("old", method=BOOK, fingerprint="f", call=his.book)
        his.fail_after_commit = TimeoutError()
        with pytest.raises(OperationUnknown):
            await ledger.execute("open", method=BOOK, fingerprint="f", call=his.book)
        now[0] = 5000.0
        assert await ledger.purge(older_than=4000.0) == 1
        assert await ledger.get("old") is None
        assert await ledger.get("open") is not None

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from frontend_server.ledger import (
    HisOutcome,
    Ledger,
    OperationError,
    OperationNotOpen,
    OperationRecord,
    OperationState,
    OperationUnknown,
    Resolver,
)

BOOK = "hplus.hospital.v1.AppointmentService/BookAppointment"


async def _lost_answer() -> HisOutcome:
    raise TimeoutError


async def unknown(ledger: Ledger, key: str) -> None:
    with pytest.raises(OperationUnknown):
        await ledger.execute(key, method=BOOK, fingerprint="f", call=_lost_answer)


async def test_one_round_settles_what_the_his_can_tell(tmp_path: Path) -> None:
    his_has = {"done": HisOutcome(receipt="REG7", result=b"r")}
    his_refused = {
        "refused": OperationError(code="RESOURCE_EXHAUSTED", reason="SLOT_FULL", message="full")
    }

    async def probe(record: OperationRecord) -> HisOutcome | OperationError | None:
        key = record.idempotency_key
        if key == "his-down":
            raise ConnectionRefusedError
        return his_has.get(key) or his_refused.get(key)

    async with Ledger.open(tmp_path / "l.db") as ledger:
        for key in ("done", "refused", "never", "his-down"):
            await unknown(ledger, key)
        assert await Resolver(ledger, probe).resolve_once() == 3
        done = await ledger.get("done")
        assert done is not None
        assert (done.state, done.receipt, done.his_attempts) == (
            OperationState.SUCCEEDED,
            "REG7",
            2,
        )
        refused = await ledger.get("refused")
        assert refused is not None
        assert refused.state is OperationState.FAILED
        assert await ledger.get("never") is None  # not done: the key is free again
        down = await ledger.get("his-down")
        assert down is not None
        assert down.state is OperationState.UNKNOWN
        assert down.error is not None
        assert down.error.message == "resolving failed: ConnectionRefusedError"


async def test_runs_in_the_background_until_shut_down(tmp_path: Path) -> None:
    probed = asyncio.Event()

    async def probe(record: OperationRecord) -> HisOutcome | None:
        probed.set()
        return HisOutcome(receipt="R1")

    async with Ledger.open(tmp_path / "l.db") as ledger:
        await unknown(ledger, "k")
        async with Resolver(ledger, probe, interval_seconds=3600):
            await probed.wait()
        record = await ledger.get("k")
        assert record is not None
        assert record.state is OperationState.SUCCEEDED


async def test_an_operation_settled_while_the_his_was_asked_is_skipped(tmp_path: Path) -> None:
    # Found by the chaos run: the write's own path settled a key while the resolver's probe
    # was out; recording the probe's outcome failed "not open", which ended the resolver
    # (and the edge with it). The round now goes on.
    async with Ledger.open(tmp_path / "l.db") as ledger:
        await unknown(ledger, "raced")
        await unknown(ledger, "next")

        async def probe(record: OperationRecord) -> HisOutcome | OperationError | None:
            if record.idempotency_key == "raced":
                await ledger.resolve("raced", HisOutcome(receipt="REG1", result=b"r"))
            return HisOutcome(receipt="REG2", result=b"r")

        assert await Resolver(ledger, probe).resolve_once() == 1
        raced = await ledger.get("raced")
        assert raced is not None
        assert (raced.state, raced.receipt) == (OperationState.SUCCEEDED, "REG1")
        settled = await ledger.get("next")
        assert settled is not None
        assert settled.state is OperationState.SUCCEEDED
        with pytest.raises(OperationNotOpen):
            await ledger.resolve("raced", HisOutcome(receipt="REG3", result=b"r"))


@pytest.mark.parametrize("his_says", ["no trace", "refused", "cannot tell"])
async def test_an_answer_about_an_old_attempt_leaves_the_write_sent_again_alone(
    tmp_path: Path, his_says: str
) -> None:
    # Found by the chaos run: while the resolver asked the HIS about an UNKNOWN write, the
    # write's own path released the key and sent it again; the HIS's "no trace" (about the
    # first attempt) then released the second one in flight, whose success could no longer
    # be recorded, and a third sending met "this key already holds a write".
    resent: list[tuple[OperationRecord, bool]] = []

    async def probe(record: OperationRecord) -> HisOutcome | OperationError | None:
        assert await ledger.release(record.idempotency_key)  # the retry found no trace
        resent.append(
            await ledger.begin(record.idempotency_key, method=BOOK, fingerprint="f")
        )  # ... and sends again: IN_PROGRESS, on its way to the HIS
        if his_says == "cannot tell":
            raise ConnectionRefusedError
        if his_says == "refused":
            return OperationError(code="FAILED_PRECONDITION", reason="X", message="no")
        return None

    async with Ledger.open(tmp_path / "l.db") as ledger:
        await unknown(ledger, "k")
        assert await Resolver(ledger, probe).resolve_once() == 0
        [(second, fresh)] = resent
        assert fresh
        now = await ledger.get("k")
        assert now is not None
        assert (now.state, now.receive_time) == (OperationState.IN_PROGRESS, second.receive_time)
        # The second attempt's answer is recorded as it comes.
        done = await ledger.succeed("k", HisOutcome(receipt="REG9", result=b"r"))
        assert (done.state, done.receipt) == (OperationState.SUCCEEDED, "REG9")


async def test_resolving_the_attempt_it_probed_still_settles_it(tmp_path: Path) -> None:
    async with Ledger.open(tmp_path / "l.db") as ledger:
        await unknown(ledger, "k")
        record = await ledger.get("k")
        assert record is not None
        settled = await ledger.resolve("k", HisOutcome(receipt="R", result=b""), attempt=record)
        assert settled is not None
        assert settled.state is OperationState.SUCCEEDED
        with pytest.raises(OperationNotOpen):  # settled: no second answer
            await ledger.resolve("k", None, attempt=record)
        assert (await ledger.get("k")) is not None

"""Orders through a real node, a real tunnel and a simulated HIS, with the HIS's faults.

The patient API's write side (`cloud.orders.OrderApi`) is called as the servicer calls it,
with the `Caller` the real authentication gives a signed-in account that bound a patient
through the hospital. Payments go through the in-memory channel (a seam we own) with its
fault switches; the hospital is the REST simulator behind a real edge (the database
dialect's hospital, which cannot hold places, for the pay-first journey).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cloud.accounts import Caller
from cloud.config import OrdersConfig
from cloud.orders import (
    OrderApi,
    OrderCoordinator,
    OrderRow,
    Step,
    fen_of,
    key_for,
    money,
)
from cloud.orders.testing import InMemoryChannel
from cloud.readstore import HospitalRecord
from hplus.cloud.v1 import account_pb2, patient_pb2
from hplus.hospital.v1 import appointment_pb2, common_pb2, directory_pb2
from mesh import errors
from tests.integration.hospital_env import Env, hospital
from tests.integration.test_accounts import App, connect
from tools.cli import main as cli
from tools.his_sim import Outage, TimeoutAfterCommit

T = 15.0
PATIENT = "P00000010"


def rid() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass
class Journey:
    env: Env
    api: OrderApi
    coordinator: OrderCoordinator
    channel: InMemoryChannel
    caller: Caller
    who: patient_pb2.PatientIdentity
    loops: list[tuple[OrderCoordinator, asyncio.Task[None]]] = dataclasses.field(
        default_factory=list
    )

    async def slot(self, skip: int = 0) -> str:
        slot = self.env.his.core.bookable_slot(patient_id=PATIENT, min_days_ahead=2, skip=skip)
        await self.env.directory.ListSlots(
            directory_pb2.ListSlotsRequest(schedule_id=slot.schedule_id), timeout=T
        )
        return str(slot.slot_id)

    async def book(self, slot_id: str, expected_fen: int | None = None) -> patient_pb2.Order:
        request = patient_pb2.BookAppointmentRequest(
            request_id=rid(), hospital_id=self.env.hospital_id, slot_id=slot_id, patient=self.who
        )
        if expected_fen is not None:
            request.expected_fee.CopyFrom(money(expected_fen))
        reply = await self.api.book_appointment(request, self.caller)
        return reply.order

    async def pay(self, order: patient_pb2.Order, *, notify: bool = True) -> str:
        reply = await self.api.pay_order(
            patient_pb2.PayOrderRequest(
                request_id=rid(),
                order_id=order.order_id,
                channel=patient_pb2.PAYMENT_CHANNEL_WECHAT_PAY,
                amount=order.amount_due,
            ),
            self.caller,
        )
        if notify:
            assert await self.channel.pay(reply.payment.payment_id)
        return reply.payment.payment_id

    async def row(self, order_id: str) -> OrderRow:
        row = await self.coordinator.store.get(order_id)
        assert row is not None
        return row

    async def until(
        self, order_id: str, done: Callable[[OrderRow], bool], within: float = 30.0
    ) -> OrderRow:
        """Wait (on the coordinator's condition, woken by every change) until ``done``."""
        async with asyncio.timeout(within):
            while True:
                row = await self.row(order_id)
                if done(row):
                    return row
                self.coordinator.wake()
                async with self.coordinator.settled:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.coordinator.settled.wait(), 0.5)

    async def kinds(self, order_id: str) -> list[str]:
        return [h.kind for h in await self.coordinator.store.history(order_id)]

    async def pause(self) -> None:
        """Stop the node's coordinator loop (its API still works, inline)."""
        await self.coordinator.shutdown()

    def restart(self, config: OrdersConfig | None = None) -> None:
        """A new coordinator over the same databases, its loop running: a restarted node."""
        fresh = OrderCoordinator(
            self.coordinator.store, self.coordinator.hospital, self.channel, config=config
        )
        task = asyncio.get_running_loop().create_task(fresh.run())
        self.loops.append((fresh, task))
        self.coordinator = fresh
        self.api = OrderApi(fresh, self.api._patients)


@contextlib.asynccontextmanager
async def journey(
    tmp_path: Path,
    *,
    config: OrdersConfig | None = None,
    dialect: str = "rest",
    extra: str = "",
) -> AsyncIterator[Journey]:
    async with hospital(dialect, tmp_path, extra=extra) as env:
        node = env.node
        assert node.order_parts is not None
        assert node.orders is not None
        assert node.accounts is not None
        coordinator = node.order_parts.coordinator
        if config is not None:
            coordinator.config = config
        channel = InMemoryChannel()
        coordinator.attach(channel)
        grpc_channel, key = await connect(node)
        async with grpc_channel:
            app = App(node, grpc_channel, key)
            await app.sign_in("+8613800138000")
            known = env.his.core.patient(PATIENT)
            who = patient_pb2.PatientIdentity(
                name=known.name,
                id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
                id_card_number=known.id_number,
                phone="+8613800138000",
            )
            await app.stub.BindPatient(
                account_pb2.BindPatientRequest(
                    request_id=rid(), hospital_id=env.hospital_id, patient=who
                ),
                metadata=app.md(),
                timeout=T,
            )
            caller = await node.accounts.auth.authenticate_account(app.md())
            j = Journey(env, node.orders, coordinator, channel, caller, who)
            try:
                yield j
            finally:
                for loop, task in j.loops:
                    await loop.shutdown()
                    await task


def booked_at_his(j: Journey, slot_id: str) -> int:
    return len(j.env.his.core.bookings(patient_id=PATIENT, slot_id=slot_id))


async def test_book_pay_confirm_and_read(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        order = await j.book(slot)
        assert order.status == patient_pb2.ORDER_STATUS_AWAITING_PAYMENT
        assert order.amount_due.units > 0
        assert order.payment_deadline.seconds > 0
        assert order.patient.id_card_number != j.who.id_card_number  # masked
        await j.pay(order)
        row = await j.until(order.order_id, lambda r: r.step is Step.CONFIRMED)
        assert row.receipt_number
        assert row.appointment_id
        assert booked_at_his(j, slot) == 1
        got = await j.api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller)
        assert got.order.status == patient_pb2.ORDER_STATUS_CONFIRMED
        assert not got.HasField("poll_after")
        assert got.order.payments[0].status == patient_pb2.PAYMENT_STATUS_SUCCEEDED
        assert got.order.appointment.hospital_appointment_number == row.appointment_id
        listed = await j.api.list_orders(patient_pb2.ListOrdersRequest(), j.caller)
        assert [o.order_id for o in listed.orders] == [order.order_id]
        kinds = await j.kinds(order.order_id)
        assert kinds[0] == "created"
        assert kinds.count("intent") >= 3
        assert "payment" in kinds
        # Not the account's order, or an id that routes elsewhere: NOT_FOUND.
        for other in ("11-0000000000000000", order.order_id[:3] + "ffffffffffffffff"):
            with pytest.raises(errors.NotFound):
                await j.api.get_order(patient_pb2.GetOrderRequest(order_id=other), j.caller)


async def test_a_retried_booking_returns_its_order_and_books_once(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        request = patient_pb2.BookAppointmentRequest(
            request_id=rid(), hospital_id=j.env.hospital_id, slot_id=slot, patient=j.who
        )
        first = await j.api.book_appointment(request, j.caller)
        again = await j.api.book_appointment(request, j.caller)
        assert first.order.order_id == again.order.order_id
        assert len([r for r in j.env.his.request_log if r.operation == "hold"]) == 1
        request.slot_id = await j.slot(skip=1)
        with pytest.raises(errors.InvalidArgument) as reused:
            await j.api.book_appointment(request, j.caller)
        assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize("operation", ["hold", "book"])
async def test_a_lost_hospital_answer_is_resolved_by_its_key(
    tmp_path: Path, operation: str
) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        await j.env.his.inject(TimeoutAfterCommit(frozenset({operation}), mode="drop"))
        order = await j.book(slot)
        if operation == "hold":
            assert order.status in (
                patient_pb2.ORDER_STATUS_OUTCOME_UNKNOWN,
                patient_pb2.ORDER_STATUS_AWAITING_PAYMENT,
            )
            row = await j.until(order.order_id, lambda r: r.step is Step.AWAITING_PAYMENT)
            order = (
                await j.api.get_order(
                    patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller
                )
            ).order
        await j.pay(order)
        row = await j.until(order.order_id, lambda r: r.step is Step.CONFIRMED)
        kinds = await j.kinds(order.order_id)
        assert "lost" in kinds
        assert "probe" in kinds
        assert booked_at_his(j, slot) == 1
        assert j.env.his.core.counts().bookings == 1
        assert not j.channel.refunds
        assert row.refunded_fen == 0


async def test_cancel_then_refund_with_a_lost_cancel_answer(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        order = await j.book(slot)
        await j.pay(order)
        await j.until(order.order_id, lambda r: r.step is Step.CONFIRMED)
        await j.env.his.inject(TimeoutAfterCommit(frozenset({"cancel"}), mode="drop"))
        j.channel.lose("refund")  # and the channel's first refund answer too
        reply = await j.api.cancel_appointment(
            patient_pb2.CancelAppointmentRequest(request_id=rid(), order_id=order.order_id),
            j.caller,
        )
        assert reply.order.status in (
            patient_pb2.ORDER_STATUS_OUTCOME_UNKNOWN,
            patient_pb2.ORDER_STATUS_CANCELLED,
        )
        row = await j.until(order.order_id, lambda r: r.step is Step.CANCELLED)
        assert row.refund_state == "SUCCESS"
        assert row.refunded_fen == row.paid_fen > 0
        assert len(j.channel.refunds) == 1
        assert booked_at_his(j, slot) == 0
        kinds = await j.kinds(order.order_id)
        assert "lost" in kinds
        got = await j.api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller)
        assert got.order.status == patient_pb2.ORDER_STATUS_CANCELLED
        assert got.order.refunds[0].status == patient_pb2.REFUND_STATUS_SUCCEEDED
        # Cancelling again returns it unchanged.
        again = await j.api.cancel_appointment(
            patient_pb2.CancelAppointmentRequest(request_id=rid(), order_id=order.order_id),
            j.caller,
        )
        assert again.order.status == patient_pb2.ORDER_STATUS_CANCELLED
        assert len(j.channel.refunds) == 1


async def test_a_hospital_refusal_is_confirmed_twice_before_the_refund(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        order = await j.book(slot)
        row = await j.row(order.order_id)
        # The hold lapses at the hospital before the payment arrives.
        await j.env.appointments.ReleaseHold(
            appointment_pb2.ReleaseHoldRequest(idempotency_key="test:release", hold_id=row.hold_id),
            timeout=T,
        )
        await j.pay(order)
        row = await j.until(order.order_id, lambda r: r.step is Step.FAILED)
        history = await j.coordinator.store.history(order.order_id)
        refused = [
            h
            for h in history
            if (h.kind in ("refused", "probe") and "failed" in h.detail) or h.kind == "refused"
        ]
        assert len(refused) >= 2
        first_refund = next(
            i for i, h in enumerate(history) if h.kind == "intent" and "refund" in h.detail
        )
        assert all(h.seq <= history[first_refund].seq for h in refused)
        assert row.refunded_fen == row.paid_fen > 0
        assert len(j.channel.refunds) == 1
        assert booked_at_his(j, slot) == 0
        got = await j.api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller)
        assert got.order.status == patient_pb2.ORDER_STATUS_FAILED
        assert got.order.status_reason.code != 0


async def test_a_write_the_edge_refuses_before_the_his_fails_the_order_at_once(
    tmp_path: Path,
) -> None:
    # Found by the chaos run: a hospital that does not offer HoldSlot refused it at its
    # edge (no record of the key), the reads found the key absent, and the coordinator sent
    # the same write again, in a loop, until manual review 10 minutes later.
    extra = "[capabilities.appointment]\nhold = false\n"
    async with journey(tmp_path, extra=extra) as j:
        order = await j.book(await j.slot())
        row = await j.until(order.order_id, lambda r: r.settled)
        assert row.step is Step.FAILED
        assert not row.review
        kinds = await j.kinds(order.order_id)
        assert kinds.count("intent") == 1, kinds
        assert "resend" not in kinds
        got = await j.api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller)
        assert got.order.status == patient_pb2.ORDER_STATUS_FAILED
        assert got.order.status_reason.code == 12  # UNIMPLEMENTED: not offered
        assert "hold_slot" in got.order.status_reason.message


async def test_no_evidence_goes_to_manual_review_never_to_a_refund(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        order = await j.book(slot)
        await j.pause()
        await j.pay(order)
        # The booking commits at the HIS and its answer is lost ...
        await j.env.his.inject(TimeoutAfterCommit(frozenset({"book"}), mode="drop"))
        row = await j.coordinator.drive(order.order_id)
        assert row is not None
        assert row.unknown
        assert row.step is Step.CONFIRMING
        assert booked_at_his(j, slot) == 1
        # ... and the HIS goes down: no read can find out.
        await j.env.his.inject(Outage(mode="503", duration=None))
        j.restart(OrdersConfig(review_after=1.0))
        row = await j.until(order.order_id, lambda r: r.review, within=60)
        assert row.step is Step.CONFIRMING
        assert row.unknown
        assert not j.channel.refunds
        assert [h.kind for h in await j.coordinator.store.history(order.order_id)].count(
            "probe"
        ) >= 2
        got = await j.api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller)
        assert got.order.status == patient_pb2.ORDER_STATUS_OUTCOME_UNKNOWN
        assert got.order.unresolved_operation == patient_pb2.ORDER_OPERATION_CONFIRM_PAYMENT
        queue = await j.coordinator.store.reviews()
        assert [r.order_id for r in queue] == [order.order_id]
        # What an operator sees: the queue, and the order's history of probes.
        data_dir = str(j.env.node.config.data_dir)
        capsys.readouterr()
        assert await asyncio.to_thread(cli, ["orders", "review", "--data-dir", data_dir]) == 0
        listed = capsys.readouterr().out
        assert order.order_id in listed
        assert "no evidence" in listed
        shown = ["orders", "show", order.order_id, "--data-dir", data_dir]
        assert await asyncio.to_thread(cli, shown) == 0
        history = capsys.readouterr().out
        assert "lost" in history
        assert history.count(" probe ") >= 2
        assert "review" in history
        assert f"[{key_for(order.order_id, Step.CONFIRMING)}]" in history
        half = ["orders", "review", "--resolve", order.order_id, "--data-dir", data_dir]
        assert await asyncio.to_thread(cli, half) == 2
        # An operator, with the hospital back, says it happened: confirmed, no refund.
        await j.env.his.clear_faults()
        resolved = await j.coordinator.resolve(order.order_id, happened=True, note="HIS shows it")
        assert resolved.step is Step.CONFIRMED
        assert resolved.appointment_id
        assert not j.channel.refunds
        assert await j.coordinator.store.reviews() == []


async def test_unpaid_past_the_deadline_closes_the_payment_and_releases(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        order = await j.book(slot)
        trade = await j.pay(order, notify=False)
        row = await j.row(order.order_id)
        await j.coordinator.store.update(
            row,
            {"payment_deadline": dt.datetime.now(dt.UTC), "next_attempt_at": None},
            [("test", "deadline moved to now")],
        )
        row = await j.until(order.order_id, lambda r: r.step is Step.EXPIRED)
        assert j.channel.trades[trade].state.value == "CLOSED"
        assert not await j.channel.pay(trade)  # too late: closed
        assert j.env.his.core.counts().holds == 0 or booked_at_his(j, slot) == 0
        assert not j.channel.refunds


class Crash(BaseException):
    """The process dies (nothing after it runs in this coordinator)."""


class Dying:
    """The hospital client of a coordinator that dies before or after one write's call."""

    def __init__(self, real: Any, method: str, when: str) -> None:
        self._real, self._method, self._when = real, method, when

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self._when == "before":
                raise Crash
            await attr(*args, **kwargs)
            raise Crash

        return call


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("method", ["hold", "book", "cancel"])
async def test_a_node_killed_at_an_intent_resumes_the_order(
    tmp_path: Path, method: str, when: str
) -> None:
    async with journey(tmp_path) as j:
        slot = await j.slot()
        await j.pause()
        dying = OrderCoordinator(
            j.coordinator.store,
            Dying(j.coordinator.hospital, method, when),  # type: ignore[arg-type]
            None,
        )
        if method == "hold":
            with pytest.raises(Crash):
                await OrderApi(dying, j.api._patients).book_appointment(
                    patient_pb2.BookAppointmentRequest(
                        request_id=rid(),
                        hospital_id=j.env.hospital_id,
                        slot_id=slot,
                        patient=j.who,
                    ),
                    j.caller,
                )
            (row,) = await j.coordinator.store.all_orders()
            order_id = row.order_id
        else:
            order = await j.book(slot)
            order_id = order.order_id
            await j.pay(order)  # the node's coordinator records it (its loop is stopped)
            if method == "cancel":
                row = await j.coordinator.drive(order_id)  # type: ignore[assignment]
                assert row.step is Step.CONFIRMED
                await dying.request_cancel(row, 0)
            with pytest.raises(Crash):
                await dying.drive(order_id)
        row = await j.row(order_id)
        assert row.in_flight
        assert row.step_key == key_for(order_id, row.step)
        # The node restarts: a new coordinator over the same databases finishes the order.
        j.restart()
        target = {"hold": Step.AWAITING_PAYMENT, "book": Step.CONFIRMED, "cancel": Step.CANCELLED}
        row = await j.until(order_id, lambda r: r.step is target[method])
        assert "resumed" in await j.kinds(order_id)
        assert booked_at_his(j, slot) == (1 if method == "book" else 0)
        assert len(j.channel.refunds) == (1 if method == "cancel" else 0)
        if method == "hold":
            held = [r for r in j.env.his.request_log if r.operation == "hold" and r.outcome == "ok"]
            assert len(held) == 1  # sent once, whether or not the dying node had sent it


async def test_duplicated_and_lost_notifications(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        first, second = await j.slot(), await j.slot(skip=3)
        dup = await j.book(first)
        j.channel.duplicate_notifications = 1
        await j.pay(dup)
        lost = await j.book(second)
        j.channel.drop_notifications = 1
        await j.pay(lost)  # nobody is told: the coordinator's query finds it
        j.coordinator.config = dataclasses.replace(j.coordinator.config, payment_poll=0.2)
        for order in (dup, lost):
            await j.until(order.order_id, lambda r: r.step is Step.CONFIRMED)
        payments = [
            h for h in await j.coordinator.store.history(dup.order_id) if h.kind == "payment"
        ]
        assert len([p for p in payments if p.detail.startswith("paid")]) == 1
        assert j.env.his.core.counts().bookings == 2
        assert common_pb2.OPERATION_STATE_SUCCEEDED  # the evidence enum is the contract's


async def test_bad_input_is_named_and_lists_page_newest_first(tmp_path: Path) -> None:
    async with journey(tmp_path) as j:
        bad = patient_pb2.BookAppointmentRequest(
            request_id="not-a-uuid", hospital_id=j.env.hospital_id, slot_id="", patient=j.who
        )
        with pytest.raises(errors.InvalidArgument) as refused:
            await j.api.book_appointment(bad, j.caller)
        assert {v.field for v in refused.value.field_violations} == {"request_id", "slot_id"}
        stranger = patient_pb2.PatientIdentity(
            name="王五",
            id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
            id_card_number="440305199001011213",
        )
        with pytest.raises(errors.FailedPrecondition) as unbound:
            await j.api.book_appointment(
                patient_pb2.BookAppointmentRequest(
                    request_id=rid(), hospital_id=j.env.hospital_id, slot_id="S1", patient=stranger
                ),
                j.caller,
            )
        assert unbound.value.reason == "PATIENT_NOT_BOUND"
        made = [await j.book(await j.slot(skip=k * 3)) for k in range(3)]
        first = await j.api.list_orders(patient_pb2.ListOrdersRequest(page_size=2), j.caller)
        assert [o.order_id for o in first.orders] == [made[2].order_id, made[1].order_id]
        assert first.next_page_token
        rest = await j.api.list_orders(
            patient_pb2.ListOrdersRequest(page_size=2, page_token=first.next_page_token), j.caller
        )
        assert [o.order_id for o in rest.orders] == [made[0].order_id]
        assert not rest.next_page_token
        with pytest.raises(errors.InvalidArgument):  # a token of another filter
            await j.api.list_orders(
                patient_pb2.ListOrdersRequest(
                    page_size=2, page_token=first.next_page_token, hospital_id="x"
                ),
                j.caller,
            )
        awaiting = await j.api.list_orders(
            patient_pb2.ListOrdersRequest(statuses=[patient_pb2.ORDER_STATUS_CONFIRMED]), j.caller
        )
        assert list(awaiting.orders) == []
        with pytest.raises(errors.InvalidArgument) as amount:
            await j.api.pay_order(
                patient_pb2.PayOrderRequest(
                    request_id=rid(),
                    order_id=made[0].order_id,
                    channel=patient_pb2.PAYMENT_CHANNEL_WECHAT_PAY,
                    amount=patient_pb2.Order().amount_due,
                ),
                j.caller,
            )
        assert amount.value.reason == "AMOUNT_MISMATCH"


async def _directory_synced(j: Journey) -> None:
    """The node's public read store holds the hospital's slots (the fees patients see)."""
    node = j.env.node
    assert node.readstore is not None
    assert node.directory_sync is not None
    await node.readstore.put_hospitals(
        [HospitalRecord(hospital_id=j.env.hospital_id, name="Lakeside")]
    )
    await node.directory_sync.run_round(wait=True)


async def test_a_hospital_that_cannot_hold_is_paid_first_then_booked_by_slot(
    tmp_path: Path,
) -> None:
    async with journey(tmp_path, dialect="db") as j:
        assert not j.env.can_hold
        await _directory_synced(j)
        slot = await j.slot()
        fee = await j.env.node.readstore.queries.slot_fee(j.env.hospital_id, slot)  # type: ignore[union-attr]
        assert fee is not None
        assert fee > 0
        order = await j.book(slot)
        # Nothing is held at the HIS: the patient is asked for the fee the directory shows.
        assert order.status == patient_pb2.ORDER_STATUS_AWAITING_PAYMENT
        assert order.amount_due.units * 100 + order.amount_due.nanos // 10_000_000 == fee
        assert booked_at_his(j, slot) == 0
        history = await j.coordinator.store.history(order.order_id)
        assert any("cannot hold" in h.detail for h in history)
        await j.pay(order)
        row = await j.until(order.order_id, lambda r: r.step is Step.CONFIRMED)
        assert row.hold_id == ""
        assert row.appointment_id
        assert row.receipt_number
        assert booked_at_his(j, slot) == 1
        assert row.paid_fen == fee
        assert not j.channel.refunds
        # Cancelled after the booking: the hospital cancels it and the money is returned.
        await j.api.cancel_appointment(
            patient_pb2.CancelAppointmentRequest(request_id=rid(), order_id=order.order_id),
            j.caller,
        )
        row = await j.until(order.order_id, lambda r: r.step is Step.CANCELLED)
        assert booked_at_his(j, slot) == 0
        assert row.refunded_fen == fee
        assert len(j.channel.refunds) == 1


async def test_cannot_hold_cancel_before_paying_and_unknown_fee(tmp_path: Path) -> None:
    async with journey(tmp_path, dialect="db") as j:
        # The directory not synced yet: the slot's fee is unknown, so nothing is booked or
        # charged and the order fails with the reason.
        slot = await j.slot()
        order = await j.book(slot)
        row = await j.until(order.order_id, lambda r: r.settled)
        assert row.step is Step.FAILED
        assert "fee" in row.status_message
        assert booked_at_his(j, slot) == 0
        assert not j.channel.trades
        # Synced: booked, then cancelled before paying: nothing to give up at the hospital.
        await _directory_synced(j)
        order = await j.book(await j.slot(skip=1))
        assert order.status == patient_pb2.ORDER_STATUS_AWAITING_PAYMENT
        await j.api.cancel_appointment(
            patient_pb2.CancelAppointmentRequest(request_id=rid(), order_id=order.order_id),
            j.caller,
        )
        row = await j.until(order.order_id, lambda r: r.step is Step.CANCELLED)
        history = await j.coordinator.store.history(order.order_id)
        assert any("nothing is held" in h.detail for h in history), "; ".join(
            f"{h.kind}: {h.detail}" for h in history
        )
        assert not j.env.his.core.bookings(patient_id=PATIENT)
        assert not j.channel.refunds


async def test_a_booking_at_another_fee_than_the_app_showed_charges_nothing(
    tmp_path: Path,
) -> None:
    async with journey(tmp_path) as j:
        # The directory not synced: the hospital's quote at the hold is the only check.
        slot = await j.slot()
        order = await j.book(slot, expected_fen=1)
        row = await j.until(order.order_id, lambda r: r.settled)
        assert row.step is Step.CANCELLED
        assert "not the 0.01 the app showed" in row.status_message
        held = [a for a in j.env.his.core.appointments.values() if a.slot_id == slot]
        assert [a.status for a in held] == ["RELEASED"]  # the place was given back
        assert not j.channel.trades
        got = await j.api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), j.caller)
        assert got.order.status == patient_pb2.ORDER_STATUS_CANCELLED
        assert got.order.status_reason.code == errors.FailedPrecondition.code.value[0]
        # Synced: the fee the directory shows is checked before anything reaches the hospital.
        await _directory_synced(j)
        slot = await j.slot(skip=1)
        fee = await j.env.node.readstore.queries.slot_fee(j.env.hospital_id, slot)  # type: ignore[union-attr]
        assert fee is not None
        with pytest.raises(errors.FailedPrecondition) as refused:
            await j.book(slot, expected_fen=fee + 100)
        assert refused.value.reason == "FEE_CHANGED"
        assert not [a for a in j.env.his.core.appointments.values() if a.slot_id == slot]
        # The fee it showed: booked as usual.
        order = await j.book(slot, expected_fen=fee)
        assert order.status == patient_pb2.ORDER_STATUS_AWAITING_PAYMENT
        assert fen_of(order.amount_due) == fee
        # A fee in another currency is named.
        bad = patient_pb2.BookAppointmentRequest(
            request_id=rid(), hospital_id=j.env.hospital_id, slot_id=slot, patient=j.who
        )
        bad.expected_fee.currency_code = "USD"
        with pytest.raises(errors.InvalidArgument) as invalid:
            await j.api.book_appointment(bad, j.caller)
        assert "expected_fee.currency_code" in str(invalid.value.field_violations)

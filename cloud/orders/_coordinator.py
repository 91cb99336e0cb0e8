"""The order coordinator: moves every order on evidence, and never refunds blindly.

For each step that writes to the hospital the coordinator first writes the **intent** (the
step, its idempotency key, ``in_flight``) and only then calls. The answer is recorded with
the transition it leads to. A node killed anywhere in between leaves ``in_flight`` set: the
resume loop (`OrderCoordinator.run`, supervised by the node) finds the order, marks it
OUTCOME_UNKNOWN and reads the key at the hospital.

Evidence, read by key (``AppointmentService/GetAppointment``, the edge's ledger):

* SUCCEEDED: the write happened; the order moves on as if the answer had arrived.
* FAILED: the hospital refused. Acted on only once ``confirmations`` reads in a row say
  so (a direct refusal is read back the same way): then the order fails, or, if money was
  taken, is refunded through the channel.
* NOT_RECEIVED: the edge never got the write; after ``confirmations`` reads in a row the
  write is sent again with the same key (the edge runs it at most once).
* IN_PROGRESS, UNKNOWN, or the read failing: no evidence. The coordinator reads again with
  backoff (`mesh.retry.RetryPolicy`); after ``review_after`` seconds without evidence the
  order goes to the manual-review queue. Never an automatic refund.

The payment channel's notifications and queries are the same evidence (`on_payment`,
`on_refund`), applied once: a duplicate changes nothing.

A hospital that cannot hold places (its edge answers HoldSlot with UNIMPLEMENTED, before any
HIS call) gets the other journey: the patient pays the fee the public directory shows, then
the slot is booked directly (BookAppointment by ``slot_id``); a refusal then (the place was
taken, the fee changed) is confirmed and refunded like any other.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from cloud.config import OrdersConfig
from cloud.orders._hospital import (
    Evidence,
    HospitalAppointments,
    Lost,
    NotSent,
    Refused,
    describe_error,
    fen_of,
    money,
)
from cloud.orders._machine import FINAL, Event, Step, advance
from cloud.orders._store import Conflict, OrderRow, OrderStore
from cloud.payments import (
    PaymentChannel,
    PaymentEvidence,
    RefundEvidence,
    RefundState,
    TradeState,
)
from hplus.hospital.v1 import appointment_pb2
from mesh import errors
from mesh.retry import RetryPolicy

__all__ = ["OrderCoordinator", "key_for"]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

SlotFees = Callable[[str, str], Awaitable[int | None]]
"""The fee (fen) patients are shown for ``(hospital_id, slot_id)``, ``None`` if unknown
(``cloud.readstore.ReadQueries.slot_fee``)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fee_changed(fee: int, expected: int) -> str:
    return f"the hospital's fee is {fee / 100:.2f} CNY, not the {expected / 100:.2f} the app showed"


def key_for(order_id: str, step: Step) -> str:
    """The idempotency key of an order's hospital write at ``step`` (``<order id>:<step>``)."""
    return f"{order_id}:{step.value}"


_HOSPITAL_STEPS = frozenset({Step.HOLDING, Step.CONFIRMING, Step.CANCELLING, Step.EXPIRING})


class OrderCoordinator:
    """Moves orders through the state machine.

    Args:
        store: the orders.
        hospital: the hospital calls.
        channel: the payment channel (``None``: payments are not configured).
        config: timings and thresholds.
        clock: the current time (tests pass their own).
        rng: the random source of the backoff's jitter.
        fees: the slot fees patients are shown, for hospitals that cannot hold places
            (``None``: orders at such hospitals fail, nothing booked or charged).
    """

    def __init__(
        self,
        store: OrderStore,
        hospital: HospitalAppointments,
        channel: PaymentChannel | None,
        *,
        config: OrdersConfig | None = None,
        clock: Clock = _utcnow,
        rng: random.Random | None = None,
        fees: SlotFees | None = None,
    ) -> None:
        self.store = store
        self._fees = fees
        self.hospital = hospital
        self.channel = channel
        self.config = config or OrdersConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self._backoff = RetryPolicy(
            initial=self.config.backoff_initial, maximum=self.config.backoff_max, deadline=None
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(self.config.concurrency)
        self._started = False
        self._last: collections.OrderedDict[str, OrderRow] = collections.OrderedDict()
        """The row each order's last piece of work here ended with (bounded)."""
        self._fresh: set[tuple[str, int]] = set()
        """(order, version) of intents this process wrote and has not sent yet; any other
        order found with ``in_flight`` was left by a node that stopped."""
        self.settled = asyncio.Condition()
        """Notified after every change an order's work made (tests and benchmarks wait on it)."""
        if channel is not None:
            channel.add_listener(self._listen)

    async def slot_fee(self, hospital_id: str, slot_id: str) -> int | None:
        """The fee (fen) patients are shown for the slot, ``None`` when unknown."""
        return None if self._fees is None else await self._fees(hospital_id, slot_id)

    def attach(self, channel: PaymentChannel) -> None:
        """Use ``channel`` for payments from now on (and hear its notifications)."""
        self.channel = channel
        channel.add_listener(self._listen)

    # -- the loop ----------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due orders now."""
        self._wake.set()

    async def run(self) -> None:
        """Resume every non-final order, then keep acting on due ones until `shutdown`.

        The node runs this among its supervised background loops.
        """
        self._started = True
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                due = await self.store.due(self._clock(), limit=self.config.concurrency * 4)
            except Exception as err:  # a partition unreachable: log, try again next tick
                log.warning("orders: cannot scan for due orders: %s", err)
                due = []
            for row in due:
                self._spawn(row.order_id, row)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.tick):
                    await self._first(self._wake.wait(), self._stopping.wait())

    @staticmethod
    async def _first(*waits: Awaitable[Any]) -> None:
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()

    def _spawn(self, order_id: str, row: OrderRow | None = None) -> None:
        """Work on one order in the background (once at a time), while the loop runs."""
        if not self._started or self._stopping.is_set() or order_id in self._running:
            return
        self._running.add(order_id)
        task = asyncio.create_task(self._work(order_id, row), name="order")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _work(self, order_id: str, row: OrderRow | None = None) -> None:
        try:
            async with self._limit:
                await self.drive(order_id, row)
        except Exception:
            log.exception("orders: order %s: unexpected error (it will be resumed)", order_id)
        finally:
            self._running.discard(order_id)

    async def shutdown(self) -> None:
        """Stop the loop and the work in progress (what was in flight resumes at the next start)."""
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- one order ---------------------------------------------------------------------------

    def _lock(self, order_id: str) -> asyncio.Lock:
        lock = self._locks.get(order_id)
        if lock is None:
            if len(self._locks) > 10_000:  # drop idle locks: bounded whatever the load
                for k in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[k]
            lock = self._locks[order_id] = asyncio.Lock()
        return lock

    async def drive(self, order_id: str, row: OrderRow | None = None) -> OrderRow | None:
        """Act on one order until it waits (for the patient, the channel, time or evidence).

        ``row``: the order as the caller just wrote or read it (saves a read; a stale one is
        caught by the version guard and read again).
        """
        async with self._lock(order_id):
            if row is None or row.order_id != order_id:
                row = await self.store.get(order_id)
            for _ in range(50):  # every round writes; a bound against a bug's endless loop
                if row is None:
                    return None
                try:
                    nxt = await self._act(row)
                except Conflict:
                    nxt = await self.store.get(order_id)
                    if nxt is not None and nxt.version != row.version:
                        row = nxt
                        continue
                    return nxt
                if nxt is None:
                    break
                row = nxt
            if row is not None:
                self._last[order_id] = row
                self._last.move_to_end(order_id)
                while len(self._last) > 1000:
                    self._last.popitem(last=False)
            async with self.settled:
                self.settled.notify_all()
            return row

    async def wait_for(
        self, order_id: str, done: Callable[[OrderRow], bool], *, poll: float = 1.0
    ) -> OrderRow:
        """Wait until the order satisfies ``done`` (tests, benchmarks, tools).

        Woken by every piece of work this coordinator finishes; the store is read again
        every ``poll`` seconds (work done elsewhere). Bound it with ``asyncio.timeout``.
        """
        row = await self.store.get(order_id)
        while True:
            if row is not None and done(row):
                return row
            async with self.settled:
                try:
                    await asyncio.wait_for(self.settled.wait(), poll)
                except TimeoutError:
                    row = await self.store.get(order_id)
                    continue
            row = self._last.get(order_id) or await self.store.get(order_id)

    async def _act(self, row: OrderRow) -> OrderRow | None:
        """One move of ``row``; ``None`` when it has to wait."""
        now = self._clock()
        if row.review:
            return None
        if row.next_attempt_at is not None and row.next_attempt_at > now:
            return None
        if row.step in _HOSPITAL_STEPS:
            if row.step is Step.EXPIRING and not row.step_key:
                return await self._close_payment(row)
            if row.step is Step.CANCELLING and not row.step_key:
                return await self._close_payment(row)
            return await self._hospital_step(row)
        if row.step is Step.AWAITING_PAYMENT:
            return await self._awaiting(row)
        if row.step is Step.REFUNDING:
            return await self._refund(row)
        return None

    # -- hospital writes ---------------------------------------------------------------------

    async def _send(self, row: OrderRow) -> appointment_pb2.Appointment:
        h, key = self.hospital, row.step_key
        if row.step is Step.HOLDING:
            return await h.hold(
                row.hospital_id,
                key,
                slot_id=row.slot_id,
                patient_id=row.hospital_patient_id,
                phone="",
                minutes=self.config.payment_minutes,
            )
        if row.step is Step.CONFIRMING:
            return await h.book(
                row.hospital_id,
                key,
                hold_id=row.hold_id,
                slot_id=row.slot_id,
                patient_id=row.hospital_patient_id,
                paid_fen=row.paid_fen,
                transaction_id=row.transaction_id,
                out_trade_no=row.out_trade_no,
                paid_at=row.paid_at,
            )
        if row.step is Step.CANCELLING:
            return await h.cancel(
                row.hospital_id,
                key,
                appointment_id=row.appointment_id or row.hold_id,
                patient_id=row.hospital_patient_id,
                reason="cancelled by the patient",
            )
        assert row.step is Step.EXPIRING
        return await h.release(row.hospital_id, key, hold_id=row.hold_id)

    async def _hospital_step(self, row: OrderRow) -> OrderRow | None:
        if row.step in (Step.CANCELLING, Step.EXPIRING) and not (row.hold_id or row.appointment_id):
            # A hospital that cannot hold, before the booking: nothing there to give up.
            return await self._succeeded(
                row, appointment_pb2.Appointment(), "nothing is held at the hospital"
            )
        if row.in_flight and not row.unknown:
            if (row.order_id, row.version) in self._fresh:
                # Our own intent, written with the move into this step: send now.
                self._fresh.discard((row.order_id, row.version))
                sending = row
            else:
                # The intent was written and the node stopped (or the call was cut) before
                # the answer was recorded: whether the write happened is unknown.
                return await self.store.update(
                    row,
                    {"unknown": True, "in_flight": False, "unknown_since": self._clock()},
                    [("resumed", "the answer to this write was never recorded: reading its key")],
                )
        elif row.unknown or row.refusals or row.absences:
            return await self._probe(row)
        else:
            # Send (again) under the same key: the intent first.
            sending = await self.store.update(
                row,
                # A refusal's code is kept only until the write is sent again: an absence of
                # the key after a refusal of *this* sending confirms the refusal (below).
                {"in_flight": True, "status_code": 0, "status_message": ""},
                [("intent", f"send {row.step.value} write")],
            )
        try:
            answer = await self._send(sending)
        except NotSent as err:
            if sending.unknown_since is not None:  # a resend: the review deadline runs
                return await self._no_evidence(
                    sending, f"not sent: {describe_error(err.error)}", {"in_flight": False}
                )
            return await self._later(
                sending, {"in_flight": False}, ("not_sent", describe_error(err.error))
            )
        except Refused as err:
            if sending.step is Step.HOLDING and isinstance(err.error, errors.Unimplemented):
                return await self._cannot_hold(sending, err.error)
            return await self.store.update(
                sending,
                {
                    "in_flight": False,
                    # Not acted on yet: the refusal is confirmed by reading the key (twice)
                    # before it moves the order, like any other evidence.
                    "unknown": True,
                    "refusals": 0,
                    "status_code": err.error.code.value[0],
                    "status_message": err.error.message[:500],
                    "unknown_since": sending.unknown_since or self._clock(),
                    "next_attempt_at": None,
                },
                [("refused", describe_error(err.error) + "; confirming by its key")],
            )
        except Lost as err:
            return await self.store.update(
                sending,
                {
                    "in_flight": False,
                    "unknown": True,
                    "unknown_since": sending.unknown_since or self._clock(),
                    "next_attempt_at": None,
                    "status_code": 0,
                    "status_message": "",
                },
                [("lost", f"answer lost ({describe_error(err.error)}): outcome unknown")],
            )
        return await self._succeeded(sending, answer, "answer")

    async def _cannot_hold(self, row: OrderRow, error: errors.StatusError) -> OrderRow:
        """HoldSlot is not offered by this hospital: pay first, then book the slot.

        The slot is booked directly (BookAppointment by ``slot_id``) once the patient has
        paid; a refusal then is confirmed and refunded like any other.

        UNIMPLEMENTED comes from the edge before any HIS call (the profile offers no
        ``hold_slot``), so nothing happened at the hospital and no probe is needed. The
        amount due is the fee the patient was shown (the public read store); a slot whose
        fee is not known there fails the order (nothing was booked or charged).
        """
        changes = self._settle_changes()
        refusal = describe_error(error)
        fee = await self.slot_fee(row.hospital_id, row.slot_id)
        if fee is not None and row.expected_fee_fen is not None and fee != row.expected_fee_fen:
            changes.update(
                status_code=errors.FailedPrecondition.code.value[0],
                status_message=_fee_changed(fee, row.expected_fee_fen),
            )
            return await self._move(
                row,
                Event.REFUSED,
                changes,
                [("refused", f"{refusal}; {_fee_changed(fee, row.expected_fee_fen)}")],
            )
        if fee is None:
            changes.update(
                status_code=error.code.value[0],
                status_message=f"{error.message[:300]}; the slot's fee is not in the public "
                "directory, so it cannot be paid first either",
            )
            return await self._move(
                row,
                Event.REFUSED,
                changes,
                [("refused", f"{refusal}; the slot's fee is unknown: nothing was booked")],
            )
        deadline = self._clock() + dt.timedelta(minutes=self.config.payment_minutes)
        shown = appointment_pb2.Appointment(slot_id=row.slot_id)
        shown.fee.cash_amount.CopyFrom(money(fee))
        changes.update(
            hold_id="",
            appointment=shown.SerializeToString(),
            amount_due_fen=fee,
            payment_deadline=deadline if fee > 0 else None,
            next_attempt_at=deadline if fee > 0 else None,
        )
        line = (
            "answer",
            f"{refusal}: the hospital cannot hold places; pay first, then the slot is booked",
        )
        return await self._move(row, Event.HELD if fee > 0 else Event.HELD_FREE, changes, [line])

    async def _probe(self, row: OrderRow) -> OrderRow | None:
        refresh = row.failures >= 1  # the last read found no evidence: ask the HIS
        try:
            evidence = await self.hospital.evidence(row.hospital_id, row.step_key, refresh=refresh)
        except (Lost, NotSent) as err:
            return await self._no_evidence(row, f"read failed: {describe_error(err.error)}")
        if evidence.succeeded:
            if evidence.appointment is None:
                return await self._no_evidence(row, "succeeded without a record")
            return await self._succeeded(row, evidence.appointment, f"probe: {evidence.describe()}")
        if evidence.failed:
            seen = row.refusals + 1
            changes: dict[str, Any] = {"refusals": seen, "absences": 0, "next_attempt_at": None}
            if evidence.error is not None:
                changes["status_code"] = evidence.error.code.value[0]
                changes["status_message"] = evidence.error.message[:500]
            line = ("probe", f"{evidence.describe()} ({seen} of {self.config.confirmations})")
            if seen < self.config.confirmations:
                return await self.store.update(row, changes, [line])
            return await self._refused(row, changes, line)
        if evidence.absent:
            seen = row.absences + 1
            line = ("probe", f"{evidence.describe()} ({seen} of {self.config.confirmations})")
            if seen < self.config.confirmations:
                return await self.store.update(
                    row, {"absences": seen, "refusals": 0, "next_attempt_at": None}, [line]
                )
            if row.status_code:
                # The hospital's answer was a refusal and its edge has no record of the key:
                # the edge refused before calling the HIS (an operation the hospital does not
                # offer, a request it cannot take), so nothing happened and sending the same
                # write again gets the same refusal. The refusal stands (found by the chaos
                # run: such orders were resent in a loop until manual review).
                return await self._refused(row, {}, line)
            # Not received, twice: send the write again under the same key (after a backoff,
            # so a write the edge keeps refusing to record is not sent in a tight loop), until
            # the review deadline.
            if row.unknown_since is not None and (
                (self._clock() - row.unknown_since).total_seconds() >= self.config.review_after
            ):
                return await self._no_evidence(row, line[1])
            failures = row.failures + 1
            delay = self._backoff.delay(failures, self._rng) if row.failures else 0.0
            return await self.store.update(
                row,
                {
                    "absences": 0,
                    "refusals": 0,
                    "unknown": False,
                    "failures": failures,
                    "unknown_since": row.unknown_since or self._clock(),
                    "next_attempt_at": self._clock() + dt.timedelta(seconds=delay),
                },
                [line, ("resend", "the hospital never received the write: sending it again")],
            )
        return await self._no_evidence(row, f"probe: {evidence.describe()}")

    async def _no_evidence(
        self, row: OrderRow, why: str, changes: dict[str, Any] | None = None
    ) -> OrderRow | None:
        since = row.unknown_since or self._clock()
        waited = (self._clock() - since).total_seconds()
        if waited >= self.config.review_after:
            return await self.store.update(
                row,
                {
                    **(changes or {}),
                    "review": True,
                    "review_reason": f"no evidence after {waited:.0f}s: {why}"[:200],
                },
                [
                    ("probe", why),
                    ("review", f"no evidence for {waited:.0f}s: manual review (no refund)"),
                ],
            )
        return await self._later(row, {**(changes or {}), "unknown_since": since}, ("probe", why))

    async def _later(
        self, row: OrderRow, changes: dict[str, Any], line: tuple[str, str]
    ) -> OrderRow | None:
        failures = row.failures + 1
        delay = self._backoff.delay(failures, self._rng)
        changes = {
            **changes,
            "failures": failures,
            "next_attempt_at": self._clock() + dt.timedelta(seconds=delay),
        }
        await self.store.update(row, changes, [(line[0], f"{line[1]}; again in {delay:.2f}s")])
        return None

    def _settle_changes(self) -> dict[str, Any]:
        return {
            "unknown": False,
            "in_flight": False,
            "unknown_since": None,
            "refusals": 0,
            "absences": 0,
            "failures": 0,
            "next_attempt_at": None,
        }

    def fresh(self, row: OrderRow) -> None:
        """``row``'s ``in_flight`` intent is this process's own, to be sent now."""
        if len(self._fresh) > 10_000:
            self._fresh.clear()  # bounded: a forgotten one is only probed before it is sent
        self._fresh.add((row.order_id, row.version))

    async def _move(
        self,
        row: OrderRow,
        event: Event,
        changes: dict[str, Any],
        lines: list[tuple[str, str]],
        *,
        request: tuple[str, str, str] | None = None,
    ) -> OrderRow:
        target = advance(
            row.step,
            event,
            paid=row.paid or bool(changes.get("paid_at")),
            cancel_from=row.cancel_from,
            refund_for=row.refund_for,
        )
        # A new step acts at once unless the move says when (a hold waits for its deadline).
        changes = {"next_attempt_at": None, **changes, "step": target}
        if target in _HOSPITAL_STEPS:
            closing = target in (Step.CANCELLING, Step.EXPIRING) and (
                row.out_trade_no
                and not row.paid
                and not changes.get("paid_at")
                and row.payment_state != TradeState.CLOSED.value
            )
            # A pending payment is closed at the channel before the place is given up.
            changes["step_key"] = "" if closing else key_for(row.order_id, target)
            # Nothing held or booked (a hospital that cannot hold): no write to send.
            nothing_there = target in (Step.CANCELLING, Step.EXPIRING) and not (
                row.hold_id or row.appointment_id
            )
            if not closing and not nothing_there:
                # The intent of the step's write goes with the move: sent right after it.
                changes["in_flight"] = True
        elif target is not row.step:
            changes.setdefault("step_key", "")
        if target is Step.REFUNDING and not row.refund_for and "refund_for" not in changes:
            plain = advance(row.step, event, paid=False, cancel_from=row.cancel_from)
            changes["refund_for"] = (plain if plain in FINAL else Step.FAILED).value
        key = row.step_key
        written: list[tuple[str, str, str]] = [(kind, detail, key) for kind, detail in lines]
        written.append(("transition", f"{row.step.value} -> {target.value} ({event.value})", key))
        if changes.get("in_flight"):
            written.append(("intent", f"send {target.value} write", str(changes["step_key"])))
        moved = await self.store.update(row, changes, written, request=request)
        if moved.in_flight and changes.get("in_flight"):
            self.fresh(moved)
        return moved

    async def _succeeded(
        self, row: OrderRow, appointment: appointment_pb2.Appointment, how: str
    ) -> OrderRow:
        changes = self._settle_changes()
        line = ("probe", how) if how.startswith("probe") else ("answer", how)
        if how == "answer":
            line = ("answer", "ok")
        if row.step is Step.HOLDING:
            fee = fen_of(appointment.fee.cash_amount)
            deadline = self._clock() + dt.timedelta(minutes=self.config.payment_minutes)
            if appointment.HasField("hold_expire_time"):
                deadline = min(deadline, appointment.hold_expire_time.ToDatetime(dt.UTC))
            changes.update(
                hold_id=appointment.hold_id or appointment.appointment_id,
                appointment=appointment.SerializeToString(),
                amount_due_fen=fee,
                payment_deadline=deadline if fee > 0 else None,
                next_attempt_at=deadline if fee > 0 else None,
            )
            event = Event.HELD if fee > 0 else Event.HELD_FREE
            if row.expected_fee_fen is not None and fee != row.expected_fee_fen:
                # Not the fee the patient was shown: nothing is charged, the place is given
                # back (the hold cancelled) and the order says why.
                held = await self._move(row, event, changes, [line])
                why = _fee_changed(fee, row.expected_fee_fen)
                return await self._move(
                    held,
                    Event.CANCEL,
                    {
                        "status_code": errors.FailedPrecondition.code.value[0],
                        "status_message": why,
                        "cancel_from": held.step.value,
                    },
                    [("cancel", f"{why}: giving the place back")],
                )
        elif row.step is Step.CONFIRMING:
            changes.update(
                appointment_id=appointment.appointment_id,
                receipt_number=appointment.receipt_number,
                appointment=appointment.SerializeToString(),
                payment_deadline=None,
            )
            event = Event.CONFIRMED
        elif row.step is Step.CANCELLING:
            refund = fen_of(appointment.cancellation.refund.cash_amount)
            changes.update(appointment=_merged(row.appointment, appointment))
            if row.paid:
                changes["refund_fen"] = refund if 0 < refund <= row.paid_fen else row.paid_fen
            event = Event.CANCELLED
        else:
            assert row.step is Step.EXPIRING
            changes.update(payment_deadline=None)
            event = Event.RELEASED
        if row.paid and not row.refund_fen and "refund_fen" not in changes:
            changes["refund_fen"] = row.paid_fen
        return await self._move(row, event, changes, [line])

    async def _refused(
        self, row: OrderRow, changes: dict[str, Any], line: tuple[str, str]
    ) -> OrderRow:
        changes = {**self._settle_changes(), **changes}
        changes.update(self._settle_changes())
        if row.step is Step.EXPIRING:
            # ReleaseHold is not refused by a hospital; a refusal here needs a person.
            return await self.store.update(
                row,
                {**changes, "review": True, "review_reason": "the hospital refused the release"},
                [line, ("review", "release refused: manual review")],
            )
        if row.step is Step.CONFIRMING and row.paid:
            changes["refund_fen"] = row.paid_fen
        if row.step is Step.CANCELLING:
            changes["cancel_from"] = ""
        return await self._move(row, Event.REFUSED, changes, [line])

    # -- payments ----------------------------------------------------------------------------

    async def _awaiting(self, row: OrderRow) -> OrderRow | None:
        now = self._clock()
        if row.paid:
            return await self._move(row, Event.PAID, {}, [("payment", "paid: confirming")])
        if row.out_trade_no and self.channel is not None:
            try:
                async with asyncio.timeout(self.config.channel_timeout):
                    evidence = await self.channel.query_payment(row.out_trade_no)
            except (errors.StatusError, TimeoutError, OSError) as err:
                log.info("orders: %s: payment query failed: %s", row.order_id, err)
            else:
                moved = await self._apply_payment(row, evidence)
                if moved is not None:
                    return moved
                row = await self.store.get(row.order_id) or row
        deadline = row.payment_deadline
        if deadline is not None and deadline <= now:
            if row.out_trade_no and row.payment_state != TradeState.CLOSED.value:
                return await self._close_payment(row)
            return await self._move(
                row, Event.DEADLINE, {"payment_deadline": None}, [("deadline", "unpaid in time")]
            )
        wait = deadline if deadline is not None else now + dt.timedelta(hours=1)
        if row.out_trade_no:
            wait = min(wait, now + dt.timedelta(seconds=self.config.payment_poll))
        if row.next_attempt_at != wait:
            await self.store.update(row, {"next_attempt_at": wait}, [])
        return None

    async def _close_payment(self, row: OrderRow) -> OrderRow | None:
        """Close an unpaid payment before giving the place up; a payment found paid wins."""
        if (
            not row.out_trade_no
            or row.paid
            or self.channel is None
            or (row.payment_state == TradeState.CLOSED.value)
        ):
            if row.step is Step.AWAITING_PAYMENT:
                if row.paid:
                    return await self._move(row, Event.PAID, {}, [])
                return await self._move(
                    row,
                    Event.DEADLINE,
                    {"payment_deadline": None},
                    [("deadline", "unpaid in time")],
                )
            sending = await self.store.update(
                row,
                {"step_key": key_for(row.order_id, row.step), "in_flight": True},
                [("intent", f"send {row.step.value} write (the payment is settled)")],
            )
            self.fresh(sending)
            return sending
        try:
            async with asyncio.timeout(self.config.channel_timeout):
                await self.channel.close_payment(row.out_trade_no)
                evidence = await self.channel.query_payment(row.out_trade_no)
        except (errors.StatusError, TimeoutError, OSError) as err:
            return await self._later(row, {}, ("payment", f"closing failed: {describe_error(err)}"))
        moved = await self._apply_payment(row, evidence)
        if moved is not None:
            return moved
        fresh = await self.store.get(row.order_id)
        assert fresh is not None
        if fresh.paid:
            return fresh
        if fresh.payment_state != TradeState.CLOSED.value:
            return await self.store.update(
                fresh,
                {"payment_state": TradeState.CLOSED.value},
                [("payment", f"closed at the channel ({evidence.state.value})")],
            )
        return fresh

    async def _listen(self, evidence: PaymentEvidence | RefundEvidence) -> None:
        if isinstance(evidence, PaymentEvidence):
            await self.on_payment(evidence)
        else:
            await self.on_refund(evidence)

    async def on_payment(self, evidence: PaymentEvidence) -> None:
        """A verified notification or a query's answer about a payment (idempotent)."""
        order_id = evidence.out_trade_no.rpartition("-p")[0]
        moved: OrderRow | None = None
        async with self._lock(order_id or "-"):
            for _ in range(5):
                fresh = await self.store.get(order_id) if order_id else None
                if fresh is None or fresh.out_trade_no != evidence.out_trade_no:
                    log.warning(
                        "orders: payment evidence for unknown out_trade_no %s",
                        evidence.out_trade_no,
                    )
                    return
                try:
                    moved = await self._apply_payment(fresh, evidence)
                    break
                except Conflict:
                    continue
        self._spawn(order_id, moved)

    async def _apply_payment(self, row: OrderRow, evidence: PaymentEvidence) -> OrderRow | None:
        """Record what the channel says of the order's payment; move on a first success."""
        state = evidence.state
        if state in (TradeState.SUCCESS, TradeState.REFUND):
            if row.paid:
                return None  # a duplicate: already applied
            changes: dict[str, Any] = {
                "paid_fen": evidence.amount_fen,
                "transaction_id": evidence.transaction_id,
                "paid_at": evidence.paid_at or self._clock(),
                "payment_state": TradeState.SUCCESS.value,
                "next_attempt_at": None,
            }
            line = (
                "payment",
                f"paid {evidence.amount_fen} fen ({evidence.source}, {evidence.transaction_id})",
            )
            if evidence.amount_fen != row.amount_due_fen:
                return await self.store.update(
                    row,
                    {
                        **changes,
                        "review": True,
                        "review_reason": f"paid {evidence.amount_fen} fen, "
                        f"{row.amount_due_fen} fen due",
                    },
                    [line, ("review", "amount paid differs from the amount due")],
                )
            if row.step is Step.AWAITING_PAYMENT:
                return await self._move(row, Event.PAID, changes, [line])
            if row.step in FINAL:
                changes["refund_fen"] = evidence.amount_fen
                return await self._move(
                    row,
                    Event.LATE_PAYMENT,
                    {**changes, "refund_for": row.step.value},
                    [line, ("payment", "money arrived for an order that will not be booked")],
                )
            return await self.store.update(row, changes, [line])
        if state.value != row.payment_state and not row.paid:
            return await self.store.update(
                row,
                {"payment_state": state.value},
                [("payment", f"{state.value.lower()} ({evidence.source})")],
            )
        return None

    # -- refunds -----------------------------------------------------------------------------

    async def _refund(self, row: OrderRow) -> OrderRow | None:
        if self.channel is None:
            return await self._later(row, {}, ("refund", "no payment channel configured"))
        if row.refund_fen <= 0 or not row.paid:
            return await self._move(row, Event.REFUNDED, {}, [("refund", "nothing to return")])
        if not row.refund_no:
            # The intent, before the channel hears of it.
            return await self.store.update(
                row,
                {
                    "refund_no": f"{row.order_id}-r1",
                    "refund_state": RefundState.PROCESSING.value,
                    "refund_created_at": self._clock(),
                },
                [("intent", f"refund {row.refund_fen} fen through the channel")],
            )
        try:
            async with asyncio.timeout(self.config.channel_timeout):
                if row.refund_state == RefundState.NOT_FOUND.value or row.failures == 0:
                    evidence = await self.channel.refund(
                        row.out_trade_no,
                        row.refund_no,
                        row.refund_fen,
                        row.paid_fen,
                        "booking cancelled or refused by the hospital",
                    )
                else:
                    evidence = await self.channel.query_refund(row.refund_no)
        except (errors.StatusError, TimeoutError, OSError) as err:
            return await self._later(
                row,
                {"refund_state": RefundState.PROCESSING.value},
                ("refund", f"answer lost ({describe_error(err)}): querying the refund"),
            )
        return await self._apply_refund(row, evidence)

    async def on_refund(self, evidence: RefundEvidence) -> None:
        """A verified notification or a query's answer about a refund (idempotent)."""
        order_id = evidence.out_refund_no.rpartition("-r")[0]
        row = await self.store.get(order_id) if order_id else None
        if row is None or row.refund_no != evidence.out_refund_no:
            log.warning("orders: refund evidence for unknown refund %s", evidence.out_refund_no)
            return
        async with self._lock(row.order_id):
            for _ in range(5):
                fresh = await self.store.get(row.order_id)
                if fresh is None:
                    return
                try:
                    await self._apply_refund(fresh, evidence)
                    break
                except Conflict:
                    continue
        self.wake()

    async def _apply_refund(self, row: OrderRow, evidence: RefundEvidence) -> OrderRow | None:
        line = ("refund", f"{evidence.state.value.lower()} ({evidence.source})")
        if evidence.state is RefundState.SUCCESS:
            if row.step is not Step.REFUNDING:
                return None  # a duplicate
            return await self._move(
                row,
                Event.REFUNDED,
                {
                    "refund_state": RefundState.SUCCESS.value,
                    "refunded_fen": evidence.amount_fen,
                    "refund_completed_at": evidence.succeeded_at or self._clock(),
                    **self._settle_changes(),
                },
                [line],
            )
        if evidence.state in (RefundState.CLOSED, RefundState.ABNORMAL):
            if row.review:
                return None
            return await self.store.update(
                row,
                {
                    "refund_state": evidence.state.value,
                    "review": True,
                    "review_reason": f"the channel's refund is {evidence.state.value}",
                },
                [line, ("review", "refund not completed by the channel: manual review")],
            )
        if row.step is not Step.REFUNDING:
            return None
        return await self._later(row, {"refund_state": evidence.state.value}, line)

    # -- the patient -------------------------------------------------------------------------

    async def request_cancel(
        self, row: OrderRow, reason: int, request: tuple[str, str, str] | None = None
    ) -> None:
        """Record the patient's cancellation (the intent) of ``row`` as read.

        Raises:
            mesh.errors.Aborted: the order changed since ``row`` was read.
        """
        async with self._lock(row.order_id):
            fresh = await self.store.get(row.order_id)
            if fresh is None or fresh.version != row.version:
                raise errors.Aborted(
                    "the order changed meanwhile; retry",
                    reason="ORDER_CHANGED",
                    domain="cloud.hplus",
                    retry_delay=0.2,
                )
            await self._move(
                fresh,
                Event.CANCEL,
                {"cancel_from": fresh.step.value, "status_code": 0, "status_message": ""},
                [("cancel", f"cancel requested (reason {reason})")],
                request=request,
            )

    # -- operators ---------------------------------------------------------------------------

    async def resolve(self, order_id: str, *, happened: bool, note: str) -> OrderRow:
        """An operator's decision on an order under review: the write happened, or not.

        ``happened`` feeds the step's success (the order moves on as if the hospital had
        answered); otherwise its refusal (a paid order is then refunded).

        Raises:
            LookupError: no such order, or it is not under review.
        """
        async with self._lock(order_id):
            row = await self.store.get(order_id)
            if row is None or not row.review:
                raise LookupError(f"order {order_id} is not in the review queue")
            line = ("resolved", f"operator: {'confirmed' if happened else 'failed'}: {note}"[:500])
            base = {**self._settle_changes(), "review": False, "review_reason": ""}
            if row.step is Step.REFUNDING:
                if happened:
                    moved = await self._move(
                        row,
                        Event.REFUNDED,
                        {
                            **base,
                            "refund_state": RefundState.SUCCESS.value,
                            "refunded_fen": row.refund_fen,
                        },
                        [line],
                    )
                else:
                    moved = await self.store.update(
                        row, {**base, "refund_no": "", "refund_state": ""}, [line]
                    )
            elif row.step in _HOSPITAL_STEPS:
                if happened:
                    evidence = await self._record_of(row)
                    moved = await self._succeeded(
                        await self.store.update(row, base, [line]), evidence, "answer"
                    )
                else:
                    moved = await self._refused(
                        await self.store.update(row, base, [line]), {}, ("resolved", "refusal")
                    )
            else:  # an amount mismatch and the like: clear the flag and let the order move
                moved = await self.store.update(row, base, [line])
        self.wake()
        return moved

    async def _record_of(self, row: OrderRow) -> appointment_pb2.Appointment:
        """The hospital's record of the write, when it can be read; else what we know."""
        with contextlib.suppress(Lost, NotSent):
            evidence: Evidence = await self.hospital.evidence(
                row.hospital_id, row.step_key, refresh=True
            )
            if evidence.appointment is not None:
                return evidence.appointment
        return appointment_pb2.Appointment.FromString(row.appointment)


def _merged(old: bytes, new: appointment_pb2.Appointment) -> bytes:
    """The snapshot kept on the order, updated with the hospital's newer record."""
    kept = appointment_pb2.Appointment.FromString(old)
    kept.MergeFrom(new)
    return kept.SerializeToString()

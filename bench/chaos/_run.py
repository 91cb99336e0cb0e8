"""The chaos run: patient journeys under a seeded fault schedule, then the invariants.

N journeys (book; pay; some cancel after confirmation, some never pay) go through the order
API of a real node, with a real edge and the REST HIS simulator (the orders benchmark's
platform), while faults from a schedule drawn from ``seed`` hit them:

* ``his_lost_<op>``: the HIS commits the hold, booking or cancellation and loses the answer;
* ``notification_lost`` / ``notification_duplicated``: the channel's notification of a
  payment never comes, or comes twice;
* ``refund_answer_lost``: the channel refunds and loses its answer;
* ``node_restart``: the node's coordinator stops mid-work and a new one over the same
  databases takes over (the kill-and-resume path).

At the end it waits for every order to settle and checks, against the simulator's own
records and the channel's: no booking held twice at the HIS, no booking at the HIS without
a confirmed order, no money taken without an order that is confirmed or refunded, no refund
of a booking the hospital kept. Each must be 0.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import tempfile
from pathlib import Path
from typing import Any

FAULTS = (
    "his_lost_hold",
    "his_lost_book",
    "his_lost_cancel",
    "notification_lost",
    "notification_duplicated",
    "refund_answer_lost",
    "node_restart",
)


@dataclasses.dataclass
class Report:
    """What a chaos run found."""

    orders: int
    faults: collections.Counter[str]
    states: collections.Counter[str]
    reviews: list[tuple[str, str]]
    invariants: dict[str, int]

    @property
    def ok(self) -> bool:
        return not any(self.invariants.values())

    def lines(self) -> list[str]:
        out = [f"{self.orders} journeys, {sum(self.faults.values())} faults injected"]
        out += [f"  fault {name:<26} {n:>5}" for name, n in sorted(self.faults.items())]
        out.append("final states:")
        out += [f"  {name:<30} {n:>5}" for name, n in sorted(self.states.items())]
        out.append(f"manual reviews: {len(self.reviews)}")
        out += [f"  {order_id}: {reason}" for order_id, reason in self.reviews]
        out.append("invariants (each must be 0):")
        out += [f"  {name:<44} {n:>5}" for name, n in self.invariants.items()]
        out.append("OK" if self.ok else "VIOLATED")
        return out


async def _journey(bench: Any, rng: random.Random, faults: collections.Counter[str]) -> str:
    """One patient: book, pay (or not), maybe cancel. Returns the order id."""
    from bench.orders import rid
    from hplus.cloud.v1 import patient_pb2
    from tools.his_sim import TimeoutAfterCommit

    caller, who, patient_id = bench.who()
    slot = await bench.slot(patient_id)
    api = bench.node.orders
    if rng.random() < 0.15:
        faults["his_lost_hold"] += 1
        await bench.his.inject(TimeoutAfterCommit(frozenset({"hold"}), mode="drop"))
    order = (
        await api.book_appointment(
            patient_pb2.BookAppointmentRequest(
                request_id=rid(), hospital_id=bench.hospital_id, slot_id=slot, patient=who
            ),
            caller,
        )
    ).order
    coordinator = bench.node.order_parts.coordinator
    async with asyncio.timeout(120):
        row = await coordinator.wait_for(order.order_id, lambda r: r.step.value != "holding")
    if row.step.value != "awaiting_payment":
        return str(order.order_id)  # refused (or under review)
    if rng.random() < 0.1:  # the patient changes their mind before paying
        await api.cancel_appointment(
            patient_pb2.CancelAppointmentRequest(request_id=rid(), order_id=order.order_id),
            caller,
        )
        return str(order.order_id)
    # The app polls GetOrder: the amount due is known once the hospital held the place.
    order = (
        await api.get_order(patient_pb2.GetOrderRequest(order_id=order.order_id), caller)
    ).order
    paying = await api.pay_order(
        patient_pb2.PayOrderRequest(
            request_id=rid(),
            order_id=order.order_id,
            channel=patient_pb2.PAYMENT_CHANNEL_WECHAT_PAY,
            amount=order.amount_due,
        ),
        caller,
    )
    roll = rng.random()
    if roll < 0.15:
        faults["notification_lost"] += 1
        bench.channel.drop_notifications += 1
    elif roll < 0.3:
        faults["notification_duplicated"] += 1
        bench.channel.duplicate_notifications += 1
    if rng.random() < 0.2:
        faults["his_lost_book"] += 1
        await bench.his.inject(TimeoutAfterCommit(frozenset({"book"}), mode="drop"))
    await bench.channel.pay(paying.payment.payment_id)
    async with asyncio.timeout(120):
        row = await coordinator.wait_for(
            order.order_id, lambda r: r.settled or r.step.value == "confirmed"
        )
    if row.step.value == "confirmed" and rng.random() < 0.3:
        if rng.random() < 0.4:
            faults["his_lost_cancel"] += 1
            await bench.his.inject(TimeoutAfterCommit(frozenset({"cancel"}), mode="drop"))
        if rng.random() < 0.4:
            faults["refund_answer_lost"] += 1
            bench.channel.lose("refund")
        await api.cancel_appointment(
            patient_pb2.CancelAppointmentRequest(request_id=rid(), order_id=order.order_id),
            caller,
        )
    return str(order.order_id)


async def _main(orders: int, seed: int, concurrency: int, settle_seconds: float = 120.0) -> Report:
    from bench.orders import platform
    from cloud.orders import OrderApi, OrderCoordinator

    rng = random.Random(seed)
    faults: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        async with platform(Path(tmp), 20) as bench:
            node = bench.node
            pending = list(range(orders))
            ids: list[str] = []
            restarts: list[tuple[Any, asyncio.Task[None]]] = []
            while pending:
                batch, pending = pending[:concurrency], pending[concurrency:]
                results = await asyncio.gather(
                    *(_journey(bench, random.Random(rng.random()), faults) for _ in batch),
                    return_exceptions=True,
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
                    ids.append(str(result))
                if pending and rng.random() < 0.3:
                    # The node's coordinator dies mid-work; a new one takes over.
                    faults["node_restart"] += 1
                    old = node.order_parts.coordinator
                    await old.shutdown()
                    fresh = OrderCoordinator(old.store, old.hospital, None, config=old.config)
                    fresh.attach(bench.channel)
                    node.order_parts.coordinator = fresh
                    node.orders = node.order_parts.api = OrderApi(fresh, node.orders._patients)
                    restarts.append((fresh, asyncio.create_task(fresh.run())))
            coordinator = node.order_parts.coordinator
            await bench.his.clear_faults()
            try:
                async with asyncio.timeout(settle_seconds):
                    for order_id in ids:
                        await coordinator.wait_for(order_id, lambda r: r.settled)
            except TimeoutError:
                for row in await coordinator.store.unsettled():
                    print(f"unsettled after {settle_seconds:.0f}s: {row.order_id} {row.step.value}")
                    for h in (await coordinator.store.history(row.order_id))[-6:]:
                        print(f"    {h.kind} {h.step_from}->{h.step_to} {h.detail}")
            rows = {r.order_id: r for r in await coordinator.store.all_orders()}
            report = _check(bench, rows, faults)
            report.invariants["orders not settled in time"] = sum(
                1 for r in rows.values() if not r.settled
            )
            for loop, task in restarts:
                await loop.shutdown()
                await task
    return report


def _check(bench: Any, rows: dict[str, Any], faults: collections.Counter[str]) -> Report:
    states: collections.Counter[str] = collections.Counter(
        ("review:" if r.review else "") + r.step.value for r in rows.values()
    )
    booked = [a for a in bench.his.core.appointments.values() if a.status == "BOOKED"]
    by_order: collections.Counter[tuple[str, str]] = collections.Counter(
        (a.patient_id, a.slot_id) for a in booked
    )
    confirmed = {
        (r.hospital_patient_id, r.slot_id): r for r in rows.values() if r.step.value == "confirmed"
    }
    trades = bench.channel.trades
    paid_orders = {
        t.out_trade_no.rpartition("-p")[0]
        for t in trades.values()
        if t.state.value in ("SUCCESS", "REFUND")
    }
    refunded_orders = {r.out_trade_no.rpartition("-p")[0] for r in bench.channel.refunds.values()}
    invariants = {
        "duplicated bookings at the HIS": sum(n - 1 for n in by_order.values() if n > 1),
        "bookings at the HIS without a confirmed order": sum(
            1 for key in by_order if key not in confirmed
        ),
        "charges without an order": sum(1 for o in paid_orders if o not in rows),
        "money kept without a booking or refund": sum(
            1
            for o in paid_orders
            if o in rows
            and rows[o].step.value != "confirmed"
            and o not in refunded_orders
            and not rows[o].review
        ),
        "refunds of bookings the hospital kept": sum(
            1
            for o in refunded_orders
            if o in rows and (rows[o].hospital_patient_id, rows[o].slot_id) in by_order
        ),
    }
    reviews = [(r.order_id, r.review_reason) for r in rows.values() if r.review]
    return Report(len(rows), faults, states, reviews, invariants)


def run(*, orders: int, seed: int, concurrency: int) -> Report:
    """Run the chaos journeys and print the report."""
    report = asyncio.run(_main(orders, seed, concurrency))
    for line in report.lines():
        print(line)
    return report

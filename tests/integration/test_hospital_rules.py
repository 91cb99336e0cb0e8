"""Every appointment rule variant, enforced by the edge before the HIS is asked to write.

Each test runs a simulated HIS, a cloud node and an edge whose profile overrides the
``[appointment]`` table with one variant, and drives hold → book → cancel through the
tunnel. The simulator and the edge share one controllable clock (their ``clock=`` seams),
so moving time is an assignment, never a sleep. A refusal must carry the contract's code
and reason, be recorded in the edge's ledger (FAILED, replayed), and never reach the HIS
(counted in the simulator's request log).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.rpc import code_pb2

from frontend_server.app import EdgeApp
from frontend_server.profile import load_profile
from hplus.hospital.v1 import appointment_pb2, common_pb2, directory_pb2
from tests.integration.hospital_env import (
    SEED,
    Env,
    cloud_node,
    edge_config,
    error_reason,
    his_url,
    write_profile,
)
from tools.his_sim import DbHis, RestHis, SimBase, SoapHis

CST = ZoneInfo("Asia/Shanghai")
TODAY = dt.date(2026, 12, 1)
T = 15.0
WRITES = {"hold", "book", "cancel", "release_hold"}
P1, P2, P3 = "P00000010", "P00000011", "P00000012"
EXPIRED = "FAILED_PRECONDITION"


class Clock:
    """The shared clock of the simulator and the edge (aware, hospital time)."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at

    def set(self, day: dt.date, hhmm: str) -> None:
        self.at = dt.datetime.combine(day, dt.time.fromisoformat(hhmm), CST)


@dataclasses.dataclass
class RulesEnv:
    env: Env
    clock: Clock

    @property
    def his(self) -> SimBase:
        return self.env.his


def _simulator(dialect: str, clock: Clock) -> SimBase:
    if dialect == "rest":
        return RestHis(seed=SEED, today=TODAY, clock=clock)
    if dialect == "soap":
        return SoapHis(seed=SEED, today=TODAY, clock=clock)
    return DbHis(seed=SEED, today=TODAY, clock=clock, poll_interval=0.005)


def _rules(variant: str, *, table: str = "", **common: object) -> str:
    values: dict[str, object] = {
        "booking_window_days": 7,
        "release_time": '"00:00"',
        "same_day_booking": "true",
        "same_day_cutoff_minutes": 0,
        "cancel_cutoff_minutes": 0,
        "real_name": "false",
        "hold_minutes": 10,
        "max_hold_minutes": 15,
    }
    values.update(common)
    lines = [f'variant = "{variant}"', *(f"{k} = {v}" for k, v in values.items())]
    body = "\n".join(lines)
    return f"[appointment]\n{body}\n\n{table}\n"


@asynccontextmanager
async def rules_hospital(
    tmp_path: Path, appointment: str, *, dialect: str = "rest"
) -> AsyncIterator[RulesEnv]:
    clock = Clock(dt.datetime.combine(TODAY, dt.time(9, 0), CST))
    async with _simulator(dialect, clock) as his, cloud_node(tmp_path / "cloud") as node:
        profile = load_profile(write_profile(tmp_path, dialect, his_url(his), extra=appointment))
        assert node.credentials is not None
        assert node.router is not None
        token = (await node.credentials.issue(profile.hospital_id)).token
        config = dataclasses.replace(
            edge_config(node, profile, token, tmp_path / "edge", his), clock=clock
        )
        async with EdgeApp(config) as app:
            assert app.dialer is not None
            await asyncio.wait_for(app.dialer.connected.wait(), 10)
            channel = await node.router.channel_for(profile.hospital_id)
            env = Env(dialect=dialect, his=his, app=app, node=node, channel=channel)
            yield RulesEnv(env=env, clock=clock)


# -- picking HIS data -----------------------------------------------------------------------


def schedules(r: RulesEnv, *, day: dt.date, mode: str, doctor: bool | None = None) -> list:  # type: ignore[type-arg]
    """Sessions without age/gender limits of one slot mode on ``day``, in a stable order."""
    return [
        s
        for s in r.his.core.list_schedules(start=day, end=day)
        if s.date == day
        and s.slot_mode == mode
        and not (s.min_age or s.max_age or s.required_gender or s.suspended)
        and (doctor is None or bool(s.doctor_id) == doctor)
    ]


async def slots_of(r: RulesEnv, schedule_id: str) -> list[directory_pb2.Slot]:
    """The session's slots, listed through the edge (as a client does before holding)."""
    listed = await r.env.directory.ListSlots(
        directory_pb2.ListSlotsRequest(schedule_id=schedule_id), timeout=T
    )
    return list(listed.slots)


def his_writes(r: RulesEnv) -> int:
    return sum(1 for x in r.his.request_log if x.operation in WRITES)


def ref(patient_id: str) -> common_pb2.PatientRef:
    return common_pb2.PatientRef(patient_id=patient_id)


async def hold(r: RulesEnv, key: str, slot_id: str, patient: str) -> appointment_pb2.Appointment:
    got = await r.env.appointments.HoldSlot(
        appointment_pb2.HoldSlotRequest(idempotency_key=key, slot_id=slot_id, patient=ref(patient)),
        timeout=T,
    )
    assert got.appointment.status == appointment_pb2.APPOINTMENT_STATUS_HELD
    return got.appointment


async def book(r: RulesEnv, key: str, held: appointment_pb2.Appointment, patient: str):  # type: ignore[no-untyped-def]
    payment = common_pb2.Payment(
        method=common_pb2.PAYMENT_METHOD_WECHAT_PAY, transaction_id=key, merchant_order_id=key
    )
    payment.amount.CopyFrom(held.fee.cash_amount)
    got = await r.env.appointments.BookAppointment(
        appointment_pb2.BookAppointmentRequest(
            idempotency_key=key, hold_id=held.hold_id, patient=ref(patient), payment=payment
        ),
        timeout=T,
    )
    assert got.appointment.status == appointment_pb2.APPOINTMENT_STATUS_BOOKED
    return got.appointment


async def cancel(r: RulesEnv, key: str, appointment_id: str, patient: str):  # type: ignore[no-untyped-def]
    return await r.env.appointments.CancelAppointment(
        appointment_pb2.CancelAppointmentRequest(
            idempotency_key=key, appointment_id=appointment_id, patient=ref(patient)
        ),
        timeout=T,
    )


async def refused(r: RulesEnv, call, code: str, reason: str, key: str) -> str:  # type: ignore[no-untyped-def]
    """Asserts the edge refused without writing to the HIS and recorded the refusal."""
    before = his_writes(r)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call()
    assert (info.value.code().name, error_reason(info.value)) == (code, reason)
    assert his_writes(r) == before, "a rule refusal must not reach the HIS"
    got = await r.env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(idempotency_key=key), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_FAILED
    # The evidence record keeps the code and message (the ledger's proto form has no reason).
    assert got.operation.error.code == code_pb2.Code.Value(code)
    assert got.operation.error.message == info.value.details()
    return info.value.details() or ""


def hold_call(r: RulesEnv, key: str, slot_id: str, patient: str):  # type: ignore[no-untyped-def]
    return lambda: hold(r, key, slot_id, patient)


# -- the variants ---------------------------------------------------------------------------


async def test_unlimited_takes_everyone_and_halves_cap_each_half(tmp_path: Path) -> None:
    day = TODAY + dt.timedelta(days=1)
    table = "[appointment.halves]\nhalf_capacity = 2\n"
    async with rules_hospital(tmp_path / "u", _rules("unlimited")) as r:
        session = schedules(r, day=day, mode="SESSION")[0]
        (slot,) = await slots_of(r, session.schedule_id)
        for n, patient in enumerate((P1, P2, P3)):
            held = await hold(r, f"u:{n}", slot.slot_id, patient)
            await book(r, f"u:{n}:book", held, patient)
        assert len(r.his.core.bookings(slot_id=slot.slot_id)) == 3
        assert his_writes(r) == 6  # the log counts writes (what `refused` relies on)
    async with rules_hospital(tmp_path / "h", _rules("halves", table=table)) as r:
        morning = next(s for s in schedules(r, day=day, mode="SESSION") if s.period == "AM")
        (slot,) = await slots_of(r, morning.schedule_id)
        for n, patient in enumerate((P1, P2)):
            held = await hold(r, f"h:{n}", slot.slot_id, patient)
            await book(r, f"h:{n}:book", held, patient)
        await refused(
            r, hold_call(r, "h:3", slot.slot_id, P3), "RESOURCE_EXHAUSTED", "SLOT_FULL", "h:3"
        )
        assert r.his.core.bookings(patient_id=P3, status="") == []
        # The afternoon half has its own capacity.
        afternoon = next(
            s
            for mode in ("SESSION", "UNLIMITED")
            for s in schedules(r, day=day, mode=mode)
            if s.period == "PM" and s.dept_id == morning.dept_id and not s.doctor_id
        )
        (pm,) = await slots_of(r, afternoon.schedule_id)
        await hold(r, "h:pm", pm.slot_id, P3)


@pytest.mark.parametrize("minutes", [5, 10, 15, 30])
async def test_fixed_slots_cap_each_slot(tmp_path: Path, minutes: int) -> None:
    day = TODAY + dt.timedelta(days=1)
    table = f"[appointment.fixed_slots]\nslot_minutes = {minutes}\nslot_capacity = 1\n"
    async with rules_hospital(tmp_path, _rules("fixed_slots", table=table)) as r:
        session = schedules(r, day=day, mode="TIMED")[0]
        first, second = (await slots_of(r, session.schedule_id))[:2]
        assert first.capacity > 1  # the HIS alone would take more than the rules allow
        held = await hold(r, "f:1", first.slot_id, P1)
        await book(r, "f:1:book", held, P1)
        await refused(
            r, hold_call(r, "f:2", first.slot_id, P2), "RESOURCE_EXHAUSTED", "SLOT_FULL", "f:2"
        )
        await hold(r, "f:3", second.slot_id, P2)  # the next slot is another place


async def test_numbered_tickets_respect_the_doctors_quota(tmp_path: Path) -> None:
    day = TODAY + dt.timedelta(days=1)
    table = "[appointment.numbered]\nticket_quota = 2\nminutes_per_ticket = 10\n"
    async with rules_hospital(tmp_path, _rules("numbered", table=table)) as r:
        session = schedules(r, day=day, mode="NUMBERED")[0]
        tickets = await slots_of(r, session.schedule_id)
        assert len(tickets) > 2
        first = await book(r, "n:1:book", await hold(r, "n:1", tickets[0].slot_id, P1), P1)
        await hold(r, "n:2", tickets[1].slot_id, P2)
        await refused(
            r, hold_call(r, "n:3", tickets[2].slot_id, P3), "RESOURCE_EXHAUSTED", "SLOT_FULL", "n:3"
        )
        await cancel(r, "n:1:cancel", first.appointment_id, P1)  # frees a ticket
        await hold(r, "n:4", tickets[2].slot_id, P3)


async def test_booking_window_opens_n_days_ahead_at_the_release_time(tmp_path: Path) -> None:
    rules = _rules("unlimited", booking_window_days=2, release_time='"08:00"')
    async with rules_hospital(tmp_path, rules) as r:
        r.clock.set(TODAY, "07:59")
        near = schedules(r, day=TODAY + dt.timedelta(days=1), mode="SESSION")[0]
        far = schedules(r, day=TODAY + dt.timedelta(days=2), mode="SESSION")[0]
        (near_slot,) = await slots_of(r, near.schedule_id)
        (far_slot,) = await slots_of(r, far.schedule_id)
        await hold(r, "w:near", near_slot.slot_id, P1)
        message = await refused(
            r,
            hold_call(r, "w:early", far_slot.slot_id, P2),
            EXPIRED,
            "BOOKING_RULE_VIOLATED",
            "w:early",
        )
        assert "booking_window" in message
        r.clock.set(TODAY, "08:00")  # released, inclusive
        await hold(r, "w:open", far_slot.slot_id, P2)
        # The early refusal was recorded: its key replays it even now the window is open.
        await refused(
            r,
            hold_call(r, "w:early", far_slot.slot_id, P2),
            EXPIRED,
            "BOOKING_RULE_VIOLATED",
            "w:early",
        )


async def test_same_day_booking_closes_at_the_cutoff(tmp_path: Path) -> None:
    rules = _rules("unlimited", same_day_cutoff_minutes=60)
    async with rules_hospital(tmp_path, rules) as r:
        morning = next(s for s in schedules(r, day=TODAY, mode="SESSION") if s.period == "AM")
        (slot,) = await slots_of(r, morning.schedule_id)
        cutoff = dt.datetime.combine(TODAY, morning.end) - dt.timedelta(minutes=60)
        r.clock.set(TODAY, f"{cutoff - dt.timedelta(minutes=1):%H:%M}")
        await hold(r, "s:before", slot.slot_id, P1)
        r.clock.set(TODAY, f"{cutoff:%H:%M}")
        message = await refused(
            r,
            hold_call(r, "s:after", slot.slot_id, P2),
            EXPIRED,
            "BOOKING_RULE_VIOLATED",
            "s:after",
        )
        assert "same_day_cutoff" in message
    async with rules_hospital(
        tmp_path / "none", _rules("unlimited", same_day_booking="false")
    ) as r:
        afternoon = next(s for s in schedules(r, day=TODAY, mode="SESSION") if s.period == "PM")
        (slot,) = await slots_of(r, afternoon.schedule_id)
        await refused(
            r, hold_call(r, "s:none", slot.slot_id, P1), EXPIRED, "BOOKING_RULE_VIOLATED", "s:none"
        )


async def test_cancelling_closes_at_the_cancel_cutoff(tmp_path: Path) -> None:
    rules = _rules("unlimited", cancel_cutoff_minutes=120)
    day = TODAY + dt.timedelta(days=1)
    async with rules_hospital(tmp_path, rules) as r:
        session = next(s for s in schedules(r, day=day, mode="SESSION") if s.period == "AM")
        (slot,) = await slots_of(r, session.schedule_id)
        a = await book(r, "c:1:book", await hold(r, "c:1", slot.slot_id, P1), P1)
        b = await book(r, "c:2:book", await hold(r, "c:2", slot.slot_id, P2), P2)
        deadline = dt.datetime.combine(day, session.start) - dt.timedelta(minutes=120)
        r.clock.set(day, f"{deadline:%H:%M}")  # the deadline itself is still allowed
        done = await cancel(r, "c:1:cancel", a.appointment_id, P1)
        assert done.appointment.status == appointment_pb2.APPOINTMENT_STATUS_CANCELLED
        r.clock.set(day, f"{deadline + dt.timedelta(minutes=1):%H:%M}")
        await refused(
            r,
            lambda: cancel(r, "c:2:cancel", b.appointment_id, P2),
            EXPIRED,
            "CANCEL_DEADLINE_PASSED",
            "c:2:cancel",
        )
        assert len(r.his.core.bookings(patient_id=P2)) == 1


async def test_real_name_one_booking_per_patient_per_doctor_per_day(tmp_path: Path) -> None:
    day = TODAY + dt.timedelta(days=1)
    table = "[appointment.fixed_slots]\nslot_minutes = 30\nslot_capacity = 3\n"
    async with rules_hospital(tmp_path, _rules("fixed_slots", table=table, real_name="true")) as r:
        first, second = schedules(r, day=day, mode="TIMED", doctor=True)[:2]
        assert first.doctor_id != second.doctor_id
        slots = await slots_of(r, first.schedule_id)
        other = await slots_of(r, second.schedule_id)
        held = await hold(r, "r:1", slots[0].slot_id, P1)
        await book(r, "r:1:book", held, P1)
        message = await refused(
            r, hold_call(r, "r:2", slots[1].slot_id, P1), EXPIRED, "BOOKING_RULE_VIOLATED", "r:2"
        )
        assert "real_name" in message
        await hold(r, "r:3", slots[1].slot_id, P2)  # another patient, same doctor
        await hold(r, "r:4", other[0].slot_id, P1)  # same patient, another doctor


async def test_a_lapsed_hold_cannot_be_booked(tmp_path: Path) -> None:
    day = TODAY + dt.timedelta(days=1)
    async with rules_hospital(tmp_path, _rules("unlimited", hold_minutes=10)) as r:
        session = schedules(r, day=day, mode="SESSION")[0]
        (slot,) = await slots_of(r, session.schedule_id)
        kept = await hold(r, "e:1", slot.slot_id, P1)
        lapsed = await hold(r, "e:2", slot.slot_id, P2)
        r.clock.set(TODAY, "09:09")
        await book(r, "e:1:book", kept, P1)
        r.clock.set(TODAY, "09:10")  # held at 09:00 for 10 minutes
        await refused(
            r, lambda: book(r, "e:2:book", lapsed, P2), EXPIRED, "HOLD_EXPIRED", "e:2:book"
        )


@pytest.mark.parametrize("dialect", ["rest", "soap", "db"])
async def test_a_rule_refusal_looks_the_same_on_every_dialect(tmp_path: Path, dialect: str) -> None:
    rules = _rules("unlimited", booking_window_days=1)
    async with rules_hospital(tmp_path, rules, dialect=dialect) as r:
        far = schedules(r, day=TODAY + dt.timedelta(days=3), mode="SESSION")
        far = far or schedules(r, day=TODAY + dt.timedelta(days=3), mode="UNLIMITED")
        slot = (await slots_of(r, far[0].schedule_id))[0]
        direct = appointment_pb2.BookAppointmentRequest(  # every dialect books directly
            idempotency_key="x:1", slot_id=slot.slot_id, patient=ref(P1)
        )
        message = await refused(
            r,
            lambda: r.env.appointments.BookAppointment(direct, timeout=T),
            EXPIRED,
            "BOOKING_RULE_VIOLATED",
            "x:1",
        )
        opens = (TODAY + dt.timedelta(days=2)).isoformat()  # one day's window, at midnight
        assert message == (
            f"a hospital rule refuses this booking: booking opens at {opens} 00:00 "
            "(rule booking_window)"
        )

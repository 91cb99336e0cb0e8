"""The labelled fault set: each case injects one real fault and makes the call it breaks.

A case's label (the owner who must act) is known by construction: it is the owner of the
fault the case injects. Its prediction is read back from what the node recorded (the
``call_failures`` rows its recorder wrote), never from the case itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.attribution._platform import Hospital, Platform, rid

__all__ = ["KINDS", "Case", "Kind", "Outcome", "build_cases", "run_case"]


@dataclasses.dataclass(frozen=True)
class Case:
    """One fault to inject, drawn from ``seed``."""

    kind: str
    owner: str
    dialect: str
    seed: int


@dataclasses.dataclass
class Outcome:
    """What the node recorded for a case."""

    case: Case
    predicted: str
    """The recorded owner ("" when nothing was recorded)."""
    reason: str
    """The recorded reason code."""
    detail: str
    """Status code, error reason and cause as recorded (for the misattributed list)."""
    seconds: float

    @property
    def correct(self) -> bool:
        return self.predicted == self.case.owner

    @property
    def reason_named(self) -> bool:
        """Whether the recorded reason code is one that names the injected fault."""
        return self.reason in KINDS[self.case.kind].reasons


@dataclasses.dataclass(frozen=True)
class Call:
    """The public call a case made: its request id, and whether it failed."""

    request_id: str
    failed: bool
    hospital_id: str


Action = Callable[[Platform, Hospital, random.Random], Awaitable[Call]]


@dataclasses.dataclass(frozen=True)
class Kind:
    """A kind of fault: its owner, the dialects it applies to, and how it is made."""

    owner: str
    dialects: tuple[str, ...]
    action: Action
    reasons: tuple[str, ...] = ()
    """The table's reason codes that name this fault (reported beside the owner)."""
    background: bool = False
    """The fault breaks a call the node makes on its own (after the app's call returned):
    the case waits for the node's failed call to that hospital."""


ALL = ("rest", "soap", "db")
HTTP = ("rest", "soap")


async def _public(call: Any, hospital_id: str) -> Call:
    """Awaits one patient API / account call; returns its request id and whether it failed."""
    import grpc

    try:
        await call
    except grpc.aio.AioRpcError as err:
        request_id = next(
            (str(v) for k, v in (err.initial_metadata() or ()) if k == "x-request-id"), ""
        )
        return Call(request_id, True, hospital_id)
    request_id = next(
        (str(v) for k, v in (await call.initial_metadata() or ()) if k == "x-request-id"), ""
    )
    return Call(request_id, False, hospital_id)


def _identity(h: Hospital, **override: Any) -> Any:
    from hplus.cloud.v1 import patient_pb2

    values: dict[str, Any] = {
        "name": h.patient.name,
        "id_card_type": patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
        "id_card_number": h.patient.id_number,
    }
    values.update(override)
    return patient_pb2.PatientIdentity(**values)


async def _bind(p: Platform, h: Hospital, *, md: Any = None, **override: Any) -> Call:
    """BindPatient: the node asks the hospital's edge (FindPatient), which asks the HIS."""
    from hplus.cloud.v1 import account_pb2

    request = account_pb2.BindPatientRequest(
        request_id=rid(), hospital_id=h.hospital_id, patient=_identity(h, **override)
    )
    call = p.account_stub.BindPatient(request, metadata=md or p.md(), timeout=15)
    return await _public(call, h.hospital_id)


# -- patient input ---------------------------------------------------------------------------


async def bad_field(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """A malformed identity: a wrong check digit, a short number, or no name."""
    choice = rng.randrange(3)
    if choice == 0:
        good = h.patient.id_number
        wrong = "0" if good[-1] != "0" else "1"
        return await _bind(p, h, id_card_number=good[:-1] + wrong)
    if choice == 1:
        return await _bind(p, h, id_card_number=h.patient.id_number[: rng.randrange(5, 15)])
    return await _bind(p, h, name="")


async def no_such_order(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """GetOrder of an order that does not exist."""
    from hplus.cloud.v1 import patient_pb2

    call = p.patient_stub.GetOrder(
        patient_pb2.GetOrderRequest(order_id=f"o-{rng.getrandbits(64):016x}"),
        metadata=p.md(),
        timeout=15,
    )
    return await _public(call, "")


async def unknown_patient(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """BindPatient of a well-formed identity the hospital has no record of."""
    from tools.his_sim import id_card_check_digit

    first = f"110101{rng.randrange(1950, 2000)}0{rng.randrange(1, 10)}1{rng.randrange(0, 10)}"
    first += f"{rng.randrange(100, 999)}"
    return await _bind(
        p, h, name="Unknown Person", id_card_number=first + id_card_check_digit(first)
    )


# -- the app ---------------------------------------------------------------------------------


async def bad_app_key(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """A call with an app key that was never issued."""
    return await _bind(p, h, md=p.md(app_key=f"ak-{rng.getrandbits(80):020x}"))


async def bad_token(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """A call with no account token, or a forged one."""
    token = "" if rng.random() < 0.5 else f"forged-{rng.getrandbits(64):016x}"
    return await _bind(p, h, md=p.md(token=token))


# -- the HIS and the hospital network ---------------------------------------------------------


async def his_503(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The HIS answers that it is failing (its outage answer)."""
    from tools.his_sim import Outage

    await h.his.inject(Outage(mode="503"))
    try:
        return await _bind(p, h)
    finally:
        await h.his.clear_faults()


async def his_down(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The HIS program is down: its port refuses connections."""
    from tools.his_sim import Outage

    await h.his.inject(Outage(mode="refuse"))
    if h.his_relay is not None:
        await h.his_relay.refuse()
    try:
        return await _bind(p, h)
    finally:
        if h.his_relay is not None:
            await h.his_relay.restore()
        await h.his.clear_faults()


async def his_slow(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The HIS answers later than the profile's read timeout."""
    from bench.attribution._platform import HIS_TIMEOUT_SECONDS
    from tools.his_sim import Latency

    await h.his.inject(Latency(seconds=HIS_TIMEOUT_SECONDS + 0.5 + rng.random()))
    try:
        return await _bind(p, h)
    finally:
        await h.his.clear_faults()


async def his_register_outage(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The HIS answers its outage code to a registration (a new patient bound)."""
    from google.type import date_pb2

    from hplus.cloud.v1 import account_pb2
    from tools.his_sim import Outage, id_card_check_digit

    year = rng.randrange(1950, 2000)
    first = f"110101{year}0{rng.randrange(1, 10)}1{rng.randrange(0, 10)}{rng.randrange(100, 999)}"
    who = _identity(h, name="New Patient", id_card_number=first + id_card_check_digit(first))
    await h.his.inject(Outage(mode="503"))
    try:
        call = p.account_stub.BindPatient(
            account_pb2.BindPatientRequest(
                request_id=rid(),
                hospital_id=h.hospital_id,
                patient=who,
                register_if_not_found=True,
                birth_date=date_pb2.Date(year=year, month=int(first[10:12]), day=int(first[12:14])),
            ),
            metadata=p.md(),
            timeout=15,
        )
        return await _public(call, h.hospital_id)
    finally:
        await h.his.clear_faults()


async def network_down(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The hospital network drops everything to the HIS host (connects get no answer)."""
    assert h.his_relay is not None
    await h.his_relay.blackhole()
    try:
        return await _bind(p, h)
    finally:
        await h.his_relay.restore()


async def _awaiting_payment(p: Platform, h: Hospital, rng: random.Random) -> Any:
    """Books a free slot through the patient API; returns the order once it awaits payment."""
    from hplus.cloud.v1 import account_pb2, patient_pb2

    bound = await p.account_stub.BindPatient(
        account_pb2.BindPatientRequest(
            request_id=rid(), hospital_id=h.hospital_id, patient=_identity(h)
        ),
        metadata=p.md(),
        timeout=15,
    )
    del bound
    slot = h.his.core.bookable_slot(
        patient_id=h.patient.patient_id, min_days_ahead=1, skip=rng.randrange(0, 40)
    )
    call = p.patient_stub.BookAppointment(
        patient_pb2.BookAppointmentRequest(
            request_id=rid(), hospital_id=h.hospital_id, slot_id=slot.slot_id, patient=_identity(h)
        ),
        metadata=p.md(),
        timeout=15,
    )
    booked = await call
    return booked.order


async def his_lost_answer(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The HIS commits the hold of a booking and loses its answer (the node's own call)."""
    from hplus.cloud.v1 import account_pb2
    from tools.his_sim import TimeoutAfterCommit

    await p.account_stub.BindPatient(
        account_pb2.BindPatientRequest(
            request_id=rid(), hospital_id=h.hospital_id, patient=_identity(h)
        ),
        metadata=p.md(),
        timeout=15,
    )
    await h.his.inject(TimeoutAfterCommit(frozenset({"hold"}), mode="drop"))
    try:
        from hplus.cloud.v1 import patient_pb2

        slot = h.his.core.bookable_slot(
            patient_id=h.patient.patient_id, min_days_ahead=1, skip=rng.randrange(0, 40)
        )
        call = p.patient_stub.BookAppointment(
            patient_pb2.BookAppointmentRequest(
                request_id=rid(),
                hospital_id=h.hospital_id,
                slot_id=slot.slot_id,
                patient=_identity(h),
            ),
            metadata=p.md(),
            timeout=15,
        )
        return await _public(call, h.hospital_id)
    finally:
        # The hold's answer is lost once (later); run_case clears the fault once the
        # node's failed HoldSlot is recorded.
        pass


# -- the edge and the tunnel -----------------------------------------------------------------


async def edge_stopped(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The hospital's edge is stopped (its operator stops it: it drains its tunnel)."""
    await p.stop_edge(h)
    try:
        return await _bind(p, h)
    finally:
        await p.start_edge(h)


async def hostile_edge(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """A misbehaving edge holds the hospital's tunnel and breaks the protocol on a call
    (a stream's credit overflowed, or bytes that are not a tunnel message)."""
    from hplus.tunnel.v1 import tunnel_pb2
    from tools.hostile import dial, hello

    sessions = p.node.gateway.sessions(h.hospital_id)
    real = sessions[0].hello
    await p.stop_edge(h)
    peer, channel = await dial(f"localhost:{p.node.port}", credential=h.token, ca=p.ca)
    try:
        await peer.send(
            [
                hello(
                    h.hospital_id,
                    edge_id="hostile-edge",
                    revisions=list(real.revisions),
                    software_version=real.software_version,
                    contract_release=real.contract_release,
                    services=list(real.services),
                )
            ]
        )
        peer.start_reading()
        await peer.next_frame("welcome", timeout=10)
        await p.wait_tunnel(h, up=True, limit=10)
        call = asyncio.ensure_future(_bind(p, h))
        opened = await peer.next_frame("open", timeout=10)
        if rng.random() < 0.5:  # the stream's credit overflows
            overflow = tunnel_pb2.WindowUpdate(increment=2**31 - 1)
            await peer.send(
                [
                    tunnel_pb2.Frame(stream_id=opened.stream_id, window_update=overflow),
                    tunnel_pb2.Frame(stream_id=opened.stream_id, window_update=overflow),
                ]
            )
        else:  # bytes that are not a tunnel message
            await peer.send_raw(b"\xff\xff\xff\xff\x0f not a tunnel message " * 40)
        return await call
    finally:
        await peer.stop()
        await channel.close()
        await p.wait_tunnel(h, up=False)
        await p.start_edge(h)


async def tunnel_cut(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The internet between the hospital and the cloud drops the tunnel's connection."""
    await h.tunnel.refuse()
    try:
        await p.wait_tunnel(h, up=False)
        return await _bind(p, h)
    finally:
        await h.tunnel.restore()
        await p.wait_tunnel(h, up=True)


# -- the payment channel and the cloud ---------------------------------------------------------


async def channel_down(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The payment channel takes the prepay and loses its answer, or cannot be reached."""
    from hplus.cloud.v1 import patient_pb2
    from tools.pay_sim import TimeoutAfterCommit as PayTimeoutAfterCommit

    order = await _awaiting_payment(p, h, rng)
    async with asyncio.timeout(30):
        while True:
            got = await p.patient_stub.GetOrder(
                patient_pb2.GetOrderRequest(order_id=order.order_id), metadata=p.md(), timeout=15
            )
            if got.order.status == patient_pb2.ORDER_STATUS_AWAITING_PAYMENT:
                break
            if got.order.status not in (
                patient_pb2.ORDER_STATUS_UNSPECIFIED,
                patient_pb2.ORDER_STATUS_BOOKING,
            ):
                raise RuntimeError(f"order {order.order_id} ended {got.order.status}")
            await asyncio.sleep(0.02)
    lost = rng.random() < 0.5
    if lost:
        # More than the channel client retries: the answer stays lost.
        await p.pay.inject(PayTimeoutAfterCommit(frozenset({"prepay"}), mode="drop", times=20))
    else:
        await p.pay_relay.refuse()
    try:
        call = p.patient_stub.PayOrder(
            patient_pb2.PayOrderRequest(
                request_id=rid(),
                order_id=order.order_id,
                channel=patient_pb2.PAYMENT_CHANNEL_WECHAT_PAY,
                amount=got.order.amount_due,
            ),
            metadata=p.md(),
            timeout=15,
        )
        return await _public(call, h.hospital_id)
    finally:
        await p.pay_relay.restore()
        await p.pay.clear_faults()


async def cloud_store_down(p: Platform, h: Hospital, rng: random.Random) -> Call:
    """The node's partition database (PostgreSQL) is unreachable: its connections cut and
    new ones refused. (A Redis cut is no longer a failure: the node counts rate limits
    itself until Redis is back.)"""
    await p.postgres.refuse()
    try:
        return await _bind(p, h)
    finally:
        await p.postgres.restore()


KINDS: dict[str, Kind] = {
    "bad_field": Kind("patient_input", ALL, bad_field, reasons=("INVALID_FIELD",)),
    "no_such_order": Kind("patient_input", ("rest",), no_such_order, reasons=("NO_SUCH_RECORD",)),
    "unknown_patient": Kind("patient_input", ALL, unknown_patient, reasons=("NO_SUCH_RECORD",)),
    "bad_app_key": Kind("app", ALL, bad_app_key, reasons=("BAD_CREDENTIAL",)),
    "bad_token": Kind("app", ALL, bad_token, reasons=("BAD_CREDENTIAL",)),
    # The database HIS serves patient reads from its views, which its simulator's faults
    # (request-table outages and delays) do not reach: these run against the HTTP dialects,
    # and the database HIS's own is an outage answer to a registration.
    "his_503": Kind("his_vendor", HTTP, his_503, reasons=("HIS_ERROR",)),
    "his_down": Kind("his_vendor", HTTP, his_down, reasons=("HIS_DOWN",)),
    "his_slow": Kind("his_vendor", HTTP, his_slow, reasons=("HIS_SLOW",)),
    "his_register_outage": Kind("his_vendor", ("db",), his_register_outage, reasons=("HIS_ERROR",)),
    "his_lost_answer": Kind(
        "his_vendor", ("rest",), his_lost_answer, reasons=("HIS_ANSWER_LOST",), background=True
    ),
    "network_down": Kind("hospital_network", HTTP, network_down, reasons=("HIS_UNREACHABLE",)),
    "edge_stopped": Kind("frontend_server", ALL, edge_stopped, reasons=("EDGE_STOPPED",)),
    "hostile_edge": Kind(
        "frontend_server", ALL, hostile_edge, reasons=("EDGE_PROTOCOL_VIOLATION",)
    ),
    "tunnel_cut": Kind("tunnel_network", ALL, tunnel_cut, reasons=("TUNNEL_LOST",)),
    "channel_down": Kind(
        "payment_channel", ("rest",), channel_down, reasons=("CHANNEL_DOWN", "CHANNEL_ANSWER_LOST")
    ),
    "cloud_store_down": Kind(
        "cloud_platform", ALL, cloud_store_down, reasons=("NODE_DEPENDENCY_DOWN",)
    ),
}
"""Every kind of fault the set injects, by name."""


def build_cases(seed: int, per_kind: int) -> list[Case]:
    """``per_kind`` cases of every kind, dialects and order drawn from ``seed``."""
    rng = random.Random(seed)
    cases = [
        Case(name, kind.owner, rng.choice(kind.dialects), rng.getrandbits(32))
        for name, kind in KINDS.items()
        for _ in range(per_kind)
    ]
    rng.shuffle(cases)
    return cases


async def run_case(p: Platform, case: Case) -> Outcome:
    """Injects the case's fault, makes its call, and reads what the node recorded."""
    recorder = p.node.failures
    assert recorder is not None
    kind = KINDS[case.kind]
    h = p.hospitals[case.dialect]
    await recorder.flush()
    mark = time.time()
    started = time.perf_counter()
    call = await kind.action(p, h, random.Random(case.seed))
    row = None
    async with asyncio.timeout(30):
        while row is None:
            await recorder.flush()
            rows = await recorder.store.rows(since=mark)
            if call.failed and call.request_id:
                row = next(
                    (r for r in rows if r.side == "api" and r.request_id == call.request_id),
                    None,
                )
            elif kind.background:
                mine = [
                    r
                    for r in reversed(rows)
                    if r.side == "hospital" and r.hospital_id == h.hospital_id
                ]
                row = mine[0] if mine else None
            else:
                break  # the call did not fail: nothing to attribute
            if row is None:
                await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    await h.his.clear_faults()
    if row is None:
        return Outcome(case, "", "", "the call did not fail" if not call.failed else "", seconds)
    detail = f"{row.code} {row.error_reason or '-'} {row.cause or ''}".strip()
    return Outcome(case, row.owner, row.reason, detail, seconds)

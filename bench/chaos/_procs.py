"""The chaos run over real processes (the default of ``python -m bench.chaos``).

Patient journeys go through the node's patient API over gRPC with TLS, as an app does: an
app key, accounts signed in with the code the node logged, patients bound at their
hospital, then ``BookAppointment``, ``GetOrder`` until the hospital held the place,
``PayOrder``, the payer paying at the payment simulator, ``GetOrder`` until the order is
confirmed, and for some ``CancelAppointment``. Every call is retried by the app (same
request id) while the node is away, as a real app's is.

Meanwhile faults from a schedule drawn from the seed hit the platform (see `FAULTS`). At
the end the run waits for every order to settle, then checks the simulators' own records,
and runs the three-way reconciliation (``hplus reconcile DATE --format json``) of the
business date.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bench.chaos._world import DEFAULT_REDIS, World, open_world
from tools.scratchdb import DEFAULT_POSTGRES

T = TypeVar("T")

FAULTS = (
    "his_timeout_after_commit",
    "tunnel_dropped",
    "edge_killed",
    "node_killed",
    "notification_lost",
    "notification_duplicated",
    "redis_cut",
    "postgres_dropped",
)
"""Every fault kind: a HIS commits a write and loses its answer (hold, booking or
cancellation, at the hospital of the journey); the TCP connections between an edge and the
node are closed while calls are in flight; an edge, or the node, is SIGKILLed and started
again; the payment channel's notification of a payment is lost, or sent twice; the node's
connections to Redis are closed and new ones refused for a few seconds; every connection of
the node to PostgreSQL is terminated (``pg_terminate_backend``)."""

JOURNEY_FAULTS = frozenset(
    {"his_timeout_after_commit", "notification_lost", "notification_duplicated"}
)
"""Faults drawn per journey (they hit that journey's hospital or payment)."""

_POLL = 0.25
_JOURNEY_SECONDS = 600.0


@dataclasses.dataclass
class Report:
    """What a chaos run found."""

    orders: int
    faults: collections.Counter[str]
    states: collections.Counter[str]
    reviews: list[tuple[str, str]]
    invariants: dict[str, int]
    unsettled: list[str] = dataclasses.field(default_factory=list)
    reconciliation: dict[str, int] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Every invariant is 0."""
        return not any(self.invariants.values())

    def lines(self) -> list[str]:
        """The table."""
        out = [
            f"{self.orders} journeys, {sum(self.faults.values())} faults injected, "
            f"{self.seconds:.0f} s"
        ]
        out.append("faults by kind:")
        out += [f"  {name:<44} {self.faults.get(name, 0):>6}" for name in FAULTS]
        out.append("orders by final state:")
        out += [f"  {name:<44} {n:>6}" for name, n in sorted(self.states.items())]
        out.append(f"manual reviews: {len(self.reviews)}")
        out += [f"  {order_id}: {reason}" for order_id, reason in self.reviews]
        if self.reconciliation:
            out.append("reconciliation (discrepancies by kind):")
            out += [f"  {k:<44} {n:>6}" for k, n in sorted(self.reconciliation.items())]
        out += self.unsettled
        out.append("invariants (each must be 0):")
        out += [f"  {name:<44} {n:>6}" for name, n in self.invariants.items()]
        out.append("OK" if self.ok else "VIOLATED")
        return out


def _transient(err: BaseException) -> bool:
    import grpc

    from mesh.retry import is_transient, status_code

    return is_transient(err, idempotent=True) or status_code(err) in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
    )


class App:
    """An app's client of the patient API: retries every call with the same request id."""

    def __init__(self, world: World) -> None:
        import grpc

        from hplus.cloud.v1 import account_pb2_grpc, patient_pb2_grpc
        from mesh.retry import RetryPolicy

        creds = grpc.ssl_channel_credentials((world.var / "tls" / "ca.pem").read_bytes())
        port = world.at.public.rpartition(":")[2]
        self.channel = grpc.aio.secure_channel(f"localhost:{port}", creds)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.channel)
        self.patients = patient_pb2_grpc.PatientApiServiceStub(self.channel)
        self.key = world.app_key
        self.var = world.var
        self.policy = RetryPolicy(initial=0.2, maximum=3.0, deadline=180.0)

    async def call(self, method: Callable[..., Awaitable[T]], request: Any, md: Any) -> T:
        """One call, retried while the node (or the network to it) is away."""
        async for attempt in self.policy.retrying(retry_on=_transient):
            with attempt:
                return await method(request, metadata=md, timeout=30)
        raise AssertionError("unreachable")  # pragma: no cover

    async def sign_in(self, phone: str) -> list[tuple[str, str]]:
        """An account signed in with the code the node logged; its call metadata."""
        from hplus.cloud.v1 import account_pb2

        md = [("x-hplus-app-key", self.key)]
        started = await self.call(
            self.accounts.StartSignIn,
            account_pb2.StartSignInRequest(request_id=_rid(), phone=phone),
            md,
        )
        code = ""
        for line in (self.var / "sign-in-codes.log").read_text().splitlines():
            entry = json.loads(line)
            if entry["challenge_id"] == started.challenge_id:
                code = entry["code"]
        done = await self.call(
            self.accounts.CompleteSignIn,
            account_pb2.CompleteSignInRequest(
                request_id=_rid(), challenge_id=started.challenge_id, code=code
            ),
            md,
        )
        return [*md, ("authorization", f"Bearer {done.access_token}")]


def _rid() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass
class Patient:
    """A patient of one hospital, bound to an account."""

    hospital_id: str
    patient_id: str
    identity: Any
    md: list[tuple[str, str]]


class Journeys:
    """The journeys' shared state: patients, slots claimed, faults counted."""

    def __init__(self, world: World, app: App, http: Any) -> None:
        self.world = world
        self.app = app
        self.http = http
        self.patients: list[Patient] = []
        self.faults: collections.Counter[str] = collections.Counter()
        self.kinds: frozenset[str] = frozenset(FAULTS)
        self.rate = 0.5
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._claimed: set[tuple[str, str]] = set()
        self.order_ids: list[str] = []
        self.refused_cancels = 0
        self.owed: set[str] = set()
        self.strike_failures: list[str] = []

    async def bind(self, per_hospital: int) -> None:
        """Sign in accounts and bind ``per_hospital`` adult patients of each hospital."""
        from hplus.cloud.v1 import account_pb2, patient_pb2
        from tools.demo import HOSPITALS

        n = 0
        for h in HOSPITALS:
            async with self.http.get(
                f"{self.world.at.his_admin[h.hospital_id]}/_admin/patients"
            ) as r:
                known = (await r.json())["patients"]
            adults = [
                p for p in known if p["id_type"] == "RESIDENT" and p["patient_id"] > "P00000003"
            ][:per_hospital]
            md: list[tuple[str, str]] = []
            for i, p in enumerate(adults):
                if i % 8 == 0:
                    n += 1
                    md = await self.app.sign_in(f"+861380013{8000 + n:04d}")
                who = patient_pb2.PatientIdentity(
                    name=p["name"],
                    id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
                    id_card_number=p["id_number"],
                )
                await self.app.call(
                    self.app.accounts.BindPatient,
                    account_pb2.BindPatientRequest(
                        request_id=_rid(), hospital_id=h.hospital_id, patient=who
                    ),
                    md,
                )
                self.patients.append(Patient(h.hospital_id, p["patient_id"], who, md))

    async def slot(self, patient: Patient) -> tuple[str, set[tuple[str, str]]]:
        """A free slot the patient may book that no journey in flight has picked.

        Returns the slot and the claims to `release` when the journey ends (from then on
        the hospital's own records keep it from being picked again).
        """
        admin = self.world.at.his_admin[patient.hospital_id]
        async with self._locks[patient.hospital_id]:
            skip = 0
            while True:
                async with self.http.get(
                    f"{admin}/_admin/bookable_slot",
                    # Two days ahead: tomorrow's clinics may be past their cancellation cutoff.
                    params={
                        "patient_id": patient.patient_id,
                        "skip": str(skip),
                        "min_days_ahead": "2",
                    },
                ) as r:
                    if r.status == 404:
                        raise LookupError(f"no bookable slot left for {patient.patient_id}")
                    found = await r.json()
                slot = (patient.hospital_id, found["slot_id"])
                day = (patient.hospital_id, f"{patient.patient_id}/{found['schedule_id']}")
                if slot not in self._claimed and day not in self._claimed:
                    self._claimed.update((slot, day))
                    return str(found["slot_id"]), {slot, day}
                skip += 1

    def release(self, claims: set[tuple[str, str]]) -> None:
        """The journey that picked these is over."""
        self._claimed -= claims

    async def his_fault(self, hospital_id: str, operation: str) -> None:
        """The hospital's next ``operation`` commits and loses its answer."""
        body = {"type": "timeout_after_commit", "operations": [operation], "mode": "drop"}
        admin = self.world.at.his_admin[hospital_id]
        async with self.http.post(f"{admin}/_admin/faults", json=body) as r:
            r.raise_for_status()
        self.faults["his_timeout_after_commit"] += 1

    async def pay_fault(self, kind: str) -> None:
        """The payment channel's next payment notification is lost or duplicated."""
        body = {"type": kind, "event": "payment"}
        async with self.http.post(f"{self.world.stack.pay_url}/_sim/faults", json=body) as r:
            r.raise_for_status()
        self.faults[kind] += 1

    def _roll(self, rng: random.Random, kind: str, p: float) -> bool:
        # Every chosen kind is injected at least once, however short the run.
        chance = rng.random() < p * self.rate * 2
        if kind in self.owed:
            self.owed.discard(kind)
            return True
        return kind in self.kinds and chance

    async def order(self, patient: Patient, order_id: str) -> Any:
        """GetOrder."""
        from hplus.cloud.v1 import patient_pb2

        reply = await self.app.call(
            self.app.patients.GetOrder, patient_pb2.GetOrderRequest(order_id=order_id), patient.md
        )
        return reply.order

    async def wait(self, patient: Patient, order_id: str, done: Callable[[Any], bool]) -> Any:
        """GetOrder until ``done`` (bounded); the last order read."""
        deadline = time.monotonic() + _JOURNEY_SECONDS
        while True:
            order = await self.order(patient, order_id)
            if done(order) or time.monotonic() > deadline:
                return order
            await asyncio.sleep(_POLL)  # the app's polling interval

    async def journey(self, patient: Patient, rng: random.Random) -> str:
        """One patient: book, pay (or cancel first), maybe cancel after confirmation."""
        slot, claims = await self.slot(patient)
        try:
            return await self._journey(patient, rng, slot)
        finally:
            self.release(claims)

    async def _journey(self, patient: Patient, rng: random.Random, slot: str) -> str:
        from hplus.cloud.v1 import patient_pb2

        s = patient_pb2
        if self._roll(rng, "his_timeout_after_commit", 0.12):
            await self.his_fault(patient.hospital_id, "hold")
        booked = await self.app.call(
            self.app.patients.BookAppointment,
            s.BookAppointmentRequest(
                request_id=_rid(),
                hospital_id=patient.hospital_id,
                slot_id=slot,
                patient=patient.identity,
            ),
            patient.md,
        )
        order_id = booked.order.order_id
        self.order_ids.append(order_id)
        order = await self.wait(
            patient,
            order_id,
            lambda o: o.status not in (s.ORDER_STATUS_BOOKING, s.ORDER_STATUS_OUTCOME_UNKNOWN),
        )
        if order.status != s.ORDER_STATUS_AWAITING_PAYMENT:
            return str(order_id)
        if rng.random() < 0.08:  # the patient changes their mind before paying
            await self.cancel(patient, order_id)
            return str(order_id)
        paying = await self.app.call(
            self.app.patients.PayOrder,
            s.PayOrderRequest(
                request_id=_rid(),
                order_id=order_id,
                channel=s.PAYMENT_CHANNEL_WECHAT_PAY,
                amount=order.amount_due,
            ),
            patient.md,
        )
        roll = rng.random()
        if "notification_lost" in self.owed or (
            "notification_lost" in self.kinds and roll < 0.12 * self.rate * 2
        ):
            self.owed.discard("notification_lost")
            await self.pay_fault("notification_lost")
        elif "notification_duplicated" in self.owed or (
            "notification_duplicated" in self.kinds and roll < 0.24 * self.rate * 2
        ):
            self.owed.discard("notification_duplicated")
            await self.pay_fault("notification_duplicated")
        if self._roll(rng, "his_timeout_after_commit", 0.15):
            await self.his_fault(patient.hospital_id, "book")
        async with self.http.post(
            f"{self.world.stack.pay_url}/_sim/pay",
            json={"out_trade_no": paying.payment.payment_id},
        ) as r:
            if r.status != 200:  # a payment the node closed meanwhile: nothing was taken
                return str(order_id)
        order = await self.wait(
            patient,
            order_id,
            lambda o: (
                o.status
                not in (
                    s.ORDER_STATUS_PAYING,
                    s.ORDER_STATUS_AWAITING_PAYMENT,
                    s.ORDER_STATUS_OUTCOME_UNKNOWN,
                )
            ),
        )
        if order.status == s.ORDER_STATUS_CONFIRMED and rng.random() < 0.3:
            if self._roll(rng, "his_timeout_after_commit", 0.3):
                await self.his_fault(patient.hospital_id, "cancel")
            await self.cancel(patient, order_id)
        return str(order_id)

    async def cancel(self, patient: Patient, order_id: str) -> None:
        """CancelAppointment; a refusal by the hospital's rules is an answer, not a failure."""
        import grpc

        from hplus.cloud.v1 import patient_pb2
        from mesh.retry import status_code

        try:
            await self.app.call(
                self.app.patients.CancelAppointment,
                patient_pb2.CancelAppointmentRequest(request_id=_rid(), order_id=order_id),
                patient.md,
            )
        except grpc.RpcError as err:
            if status_code(err) is not grpc.StatusCode.FAILED_PRECONDITION:
                raise
            self.refused_cancels += 1


@dataclasses.dataclass(frozen=True)
class Blow:
    """A platform fault the schedule places after a number of journeys started."""

    after: int
    kind: str
    hospital_id: str = ""


def schedule(seed: int, orders: int, kinds: frozenset[str], rate: float) -> list[Blow]:
    """The platform faults of a run: the same seed, orders, kinds and rate give the same list."""
    from tools.demo import HOSPITALS

    rng = random.Random(f"chaos-platform-{seed}")
    platform = [k for k in FAULTS if k in kinds and k not in JOURNEY_FAULTS]
    if not platform:
        return []
    # One platform fault per 10/rate journeys (each stops the platform, or part of it, for
    # a while: most faults are the journeys' own), and each kind at least once.
    count = max(len(platform), round(orders * rate * 0.1))
    kinds_drawn = list(platform) + [rng.choice(platform) for _ in range(count - len(platform))]
    rng.shuffle(kinds_drawn)
    blows = []
    for i, kind in enumerate(kinds_drawn):
        after = 1 + (i * max(1, orders - 2)) // len(kinds_drawn)
        hospital = rng.choice(HOSPITALS).hospital_id
        blows.append(Blow(after, kind, hospital))
    return blows


async def _strike(world: World, blow: Blow, faults: collections.Counter[str]) -> None:
    if blow.kind == "tunnel_dropped":
        await world.drop_tunnel(blow.hospital_id)
    elif blow.kind == "edge_killed":
        await world.kill_edge(blow.hospital_id)
    elif blow.kind == "node_killed":
        await world.kill_node()
    elif blow.kind == "redis_cut":
        await world.cut_redis(2.0)
    elif blow.kind == "postgres_dropped":
        await world.drop_postgres()
    faults[blow.kind] += 1


async def _settle(world: World, ids: list[str], seconds: float) -> tuple[dict[str, Any], list[str]]:
    """Wait (bounded) until every order settles; the orders, and lines on those that did not."""
    from cloud.orders import OrderStore
    from cloud.partitioned import SCHEMAS
    from cloud.partitions import PartitionSet

    parts = await PartitionSet.open(
        world.databases["control"],
        first_urls={"south": world.databases["south"], "north": world.databases["north"]},
        schemas=SCHEMAS,
    )
    try:
        store = OrderStore(parts, node_id="bench-chaos")
        deadline = time.monotonic() + seconds
        while True:
            try:
                left = await store.unsettled()
            except Exception:
                left = None
            if left == [] or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)  # the node's coordinator works in another process
        rows = {r.order_id: r for r in await store.all_orders()}
        lines = []
        for row in left or []:
            lines.append(f"unsettled after {seconds:.0f}s: {row.order_id} {row.step.value}")
            for h in (await store.history(row.order_id))[-8:]:
                lines.append(f"    {h.kind} {h.step_from}->{h.step_to} {h.detail}")
        return rows, lines
    finally:
        await parts.close()


async def _reconcile(world: World) -> dict[str, int]:
    """``hplus reconcile TODAY --format json``: discrepancies by kind."""
    from tools.demo import HPLUS, REPO

    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "gen"), str(REPO)])
    config = world.stack.node_argv[world.stack.node_argv.index("--config") + 1]
    proc = await asyncio.create_subprocess_exec(
        *HPLUS, "reconcile", today, "--format", "json",
        "--config", config, "--data-dir", str(world.var), "--node", world.at.internal,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode not in (0, 1):
        return {f"reconcile failed ({err.decode(errors='replace').strip()[:200]})": 1}
    (world.logs / "reconcile.json").write_bytes(out)
    doc = json.loads(out)
    found: collections.Counter[str] = collections.Counter(d["kind"] for d in doc["discrepancies"])
    for h in doc["hospitals"]:
        if not h["ledger_read"]:
            found[f"ledger of {h['hospital_id']} not read"] += 1
    return dict(found)


async def _check(world: World, http: Any, rows: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """The invariants, from the simulators' own records.

    A HIS booking belongs to the order whose hold or appointment id it carries; money is
    the channel's: what it collected for an order less what it returned.
    """
    from tools.demo import HOSPITALS

    owner: dict[tuple[str, str], str] = {}
    for oid, r in rows.items():
        for ref in (r.hold_id, r.appointment_id):
            if ref:
                owner[(r.hospital_id, ref)] = oid
    per_place: collections.Counter[tuple[str, str, str]] = collections.Counter()
    kept: dict[str, list[int]] = collections.defaultdict(list)  # order -> fees of its bookings
    orphans = 0
    culprits: list[str] = []
    for h in HOSPITALS:
        admin = world.at.his_admin[h.hospital_id]
        async with http.get(f"{admin}/_admin/appointments", params={"status": "BOOKED"}) as r:
            for a in (await r.json())["appointments"]:
                per_place[(h.hospital_id, a["patient_id"], a["slot_id"])] += 1
                found = owner.get((h.hospital_id, a["hold_id"]))
                found = found or owner.get((h.hospital_id, a["appt_id"]))
                if found is None or rows[found].step.value not in ("confirmed", "fulfilled"):
                    orphans += 1
                    culprits.append(f"{found or '-'}: booked at {h.hospital_id}: {a}")
                if found is not None:
                    kept[found].append(int(a["paid"]))
    async with http.get(f"{world.stack.pay_url}/_sim/ledger") as r:
        ledger = await r.json()
    taken: collections.Counter[str] = collections.Counter()
    for t in ledger["trades"]:
        if t["state"] in ("SUCCESS", "REFUND"):
            taken[t["out_trade_no"].rpartition("-p")[0]] += int(t["amount"])
    returned: collections.Counter[str] = collections.Counter()
    for f in ledger["refunds"]:
        if f["status"] in ("SUCCESS", "PROCESSING"):
            returned[f["out_trade_no"].rpartition("-p")[0]] += int(f["amount"])
    settled = [o for o in taken if o in rows and not rows[o].review]
    net = {o: taken[o] - returned.get(o, 0) for o in taken}
    no_order = [o for o in taken if o not in rows]
    kept_unbooked = [o for o in settled if not kept.get(o) and net[o] != 0]
    beyond = [o for o in settled if kept.get(o) and net[o] > sum(kept[o])]
    # A refund of a second payment is due; one that cuts into the fee of a booking the
    # hospital kept is not.
    cut = [o for o in returned if o in rows and kept.get(o) and net.get(o, 0) < sum(kept[o])]
    for name, ids in (
        ("charge without an order", no_order),
        ("money kept without a booking", kept_unbooked),
        ("money kept beyond the fee", beyond),
        ("refund of a kept booking", cut),
    ):
        culprits += [f"{o}: {name}: taken {taken[o]}, returned {returned.get(o, 0)}" for o in ids]
    invariants = {
        "duplicated bookings at any HIS": sum(n - 1 for n in per_place.values() if n > 1)
        + sum(len(fees) - 1 for fees in kept.values() if len(fees) > 1),
        "bookings at a HIS without a confirmed order": orphans,
        "charges without an order": len(no_order),
        "money kept without a booking or refund": len(kept_unbooked),
        "money kept beyond the booking's fee": len(beyond),
        "refunds of bookings the hospital kept": len(cut),
    }
    return invariants, culprits


async def _histories(world: World, lines: list[str]) -> list[str]:
    """Each culprit line, followed by its order's history."""
    from cloud.orders import OrderStore
    from cloud.partitioned import SCHEMAS
    from cloud.partitions import PartitionSet

    parts = await PartitionSet.open(
        world.databases["control"],
        first_urls={"south": world.databases["south"], "north": world.databases["north"]},
        schemas=SCHEMAS,
    )
    out: list[str] = []
    try:
        store = OrderStore(parts, node_id="bench-chaos")
        for line in lines:
            out.append(line)
            order_id = line.partition(":")[0]
            if order_id != "-":
                for h in await store.history(order_id):
                    out.append(f"    {h.at} {h.kind} {h.step_from}->{h.step_to} {h.detail}")
    finally:
        await parts.close()
    return out


async def main(
    *,
    orders: int,
    seed: int,
    concurrency: int,
    kinds: frozenset[str],
    rate: float = 0.5,
    settle_seconds: float = 300.0,
    postgres_url: str = DEFAULT_POSTGRES,
    redis_url: str = DEFAULT_REDIS,
    keep: Path | None = None,
    progress: bool = False,
    max_seconds: float | None = None,
) -> Report:
    """Launch, drive ``orders`` journeys under the seeded faults, settle, check."""
    import aiohttp

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        var = keep or Path(tmp) / "var"
        var.mkdir(parents=True, exist_ok=True)
        async with open_world(var, postgres_url=postgres_url, redis_url=redis_url) as world:
            app = App(world)
            async with aiohttp.ClientSession() as http, app.channel:
                journeys = Journeys(world, app, http)
                journeys.kinds = kinds
                journeys.owed = set(kinds & JOURNEY_FAULTS)
                journeys.rate = rate
                await journeys.bind(per_hospital=max(4, min(27, orders // 6 + 2)))
                supervisor = asyncio.ensure_future(world.supervise())
                try:
                    report = await _drive(
                        world, journeys, orders, seed, concurrency, progress, max_seconds
                    )
                    if progress:
                        print("journeys done; waiting for every order to settle", flush=True)
                    await _clear_faults(world, http)
                    rows, unsettled = await _settle(world, journeys.order_ids, settle_seconds)
                finally:
                    supervisor.cancel()
                    await asyncio.gather(supervisor, return_exceptions=True)
                invariants, culprits = await _check(world, http, rows)
                if culprits:
                    found = await _histories(world, culprits)
                    (world.logs / "violations.txt").write_text("\n".join(found) + "\n")
                    unsettled.append(f"violations, with histories: {world.logs / 'violations.txt'}")
                reconciliation = await _reconcile(world)
                crashes = list(world.crashes)
                unsettled += [f"exited unasked: {c}" for c in crashes]
    states: collections.Counter[str] = collections.Counter(
        ("review:" if r.review else "") + r.step.value for r in rows.values()
    )
    invariants["money differences in reconciliation"] = sum(reconciliation.values())
    invariants["orders not settled in time"] = sum(1 for r in rows.values() if not r.settled)
    invariants["journeys that failed"] = report
    invariants["processes that exited unasked"] = len(crashes)
    invariants["faults the run could not inject"] = len(journeys.strike_failures)
    return Report(
        orders=len(rows),
        faults=journeys.faults,
        states=states,
        reviews=[(r.order_id, r.review_reason) for r in rows.values() if r.review],
        invariants=invariants,
        unsettled=unsettled,
        reconciliation=reconciliation,
        seconds=time.monotonic() - started,
    )


async def _clear_faults(world: World, http: Any) -> None:
    """Faults not yet taken are cleared before the settle wait (none linger into the checks)."""
    for admin in world.at.his_admin.values():
        async with http.delete(f"{admin}/_admin/faults") as r:
            r.raise_for_status()
    async with http.delete(f"{world.stack.pay_url}/_sim/faults") as r:
        r.raise_for_status()


async def _drive(
    world: World,
    journeys: Journeys,
    orders: int,
    seed: int,
    concurrency: int,
    progress: bool,
    max_seconds: float | None = None,
) -> int:
    """Run the journeys, ``concurrency`` at once, and the platform faults among them.

    Returns how many journeys raised (each is printed).
    """
    rng = random.Random(seed)
    blows = schedule(seed, orders, journeys.kinds, journeys.rate)
    seeds = [rng.random() for _ in range(orders)]
    patients = [journeys.patients[i % len(journeys.patients)] for i in range(orders)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(orders):
        queue.put_nowait(i)
    started = 0
    stopped = False
    failed = 0
    strike_now = asyncio.Event()
    done_count = 0

    async def worker() -> None:
        nonlocal started, failed, done_count
        while True:
            try:
                if max_seconds is not None and time.monotonic() - began > max_seconds:
                    return  # out of time: no new journey (the report says how many ran)
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started += 1
            strike_now.set()
            try:
                await journeys.journey(patients[i], random.Random(seeds[i]))
            except Exception as err:
                failed += 1
                print(f"journey {i} failed: {type(err).__name__}: {err}", file=sys.stderr)
            done_count += 1
            if progress and done_count % 50 == 0:
                print(
                    f"{done_count}/{orders} journeys, {sum(journeys.faults.values())} faults",
                    flush=True,
                )

    async def striker() -> None:
        for blow in blows:
            while started < blow.after and not stopped:
                strike_now.clear()
                await strike_now.wait()
            if stopped:
                return
            try:
                await _strike(world, blow, journeys.faults)
            except Exception as err:
                # Reported (an invariant of the run's own validity); the run goes on.
                journeys.strike_failures.append(f"{blow.kind}: {type(err).__name__}: {err}")
                print(f"fault {blow.kind} failed: {type(err).__name__}: {err}", file=sys.stderr)

    began = time.monotonic()
    workers = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    strikes = asyncio.ensure_future(striker())
    await asyncio.gather(*workers)
    stopped = True
    strike_now.set()
    await strikes
    return failed

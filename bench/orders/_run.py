"""The orders benchmark: BookAppointment + PayOrder through the coordinator, against the same
hospital calls made directly through the tunnel, side by side in one run.

One process runs a cloud node (TLS, SQLite partitions, the node's defaults), the three HIS
simulators (REST, SOAP, database) and a real edge (``EdgeApp``) per hospital that dials the
node, as ``make run`` does. Accounts sign in and bind patients through the real
``AccountService``. The example profiles' HIS pacing (e.g. 15 calls/s) is lifted: it is the
hospital's limit, not the platform's cost, and would otherwise be all that is measured.

* **orders**: ``OrderApi.book_appointment`` (the order written, then HoldSlot through the
  tunnel), ``OrderApi.pay_order`` (prepay at the in-memory channel), the app pays (the
  channel's notification reaches the coordinator), and the coordinator's BookAppointment of
  the hold through the tunnel, until the order is CONFIRMED.
* **direct**: HoldSlot then BookAppointment with the payment, through the same tunnel.

Latency: one journey at a time, each hospital and each kind in turn, p50 per dialect and
over all three, and their ratio. Throughput: ``concurrency`` journeys in flight for
``seconds`` across the three hospitals, each kind in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

_PROFILE = Path(__file__).resolve().parents[2] / "frontend_server" / "profiles"


def rid() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class Site:
    """One simulated hospital of the bench: its simulator, dialect and example profile."""

    dialect: str
    profile: str
    seed: int


SITES = (
    Site("rest", "city-first-hospital.toml", 7),
    Site("soap", "river-county-hospital.toml", 8),
    Site("db", "lakeside-clinic.toml", 9),
)
"""The three dialects, as ``make run`` has them (REST first: the latency comparison's)."""


class Hospital:
    """One hospital as the journeys see it: its HIS, a tunnel stub to it, bound patients."""

    def __init__(self, hospital_id: str, his: Any, stub: Any, *, can_hold: bool = True) -> None:
        self.hospital_id = hospital_id
        self.his = his
        self.stub = stub
        self.can_hold = can_hold
        """Whether the hospital's profile offers HoldSlot (else: pay, then book the slot)."""
        self.callers: list[tuple[Any, Any, str]] = []  # (caller, identity, HIS patient id)
        self._next = 0
        self._lock = asyncio.Lock()
        self._claimed: set[tuple[str, str]] = set()

    async def slot(self, patient_id: str) -> str:
        from hplus.hospital.v1 import directory_pb2

        async with self._lock:  # a slot no journey in flight has picked (the HIS's rules)
            skip = 0
            while True:
                slot = self.his.core.bookable_slot(
                    patient_id=patient_id, min_days_ahead=1, skip=skip
                )
                if (slot.slot_id, patient_id) not in self._claimed and slot.slot_id not in {
                    s for s, _ in self._claimed
                }:
                    break
                skip += 1
            self._claimed.add((slot.slot_id, patient_id))
        await self.stub.directory.ListSlots(
            directory_pb2.ListSlotsRequest(schedule_id=slot.schedule_id), timeout=10
        )
        return str(slot.slot_id)

    def who(self) -> tuple[Any, Any, str]:
        caller, who, patient_id = self.callers[self._next % len(self.callers)]
        self._next += 1
        return caller, who, patient_id


class Bench:
    """The node, the payment channel and the hospitals; the first hospital is the default.

    ``his``, ``stub``, ``hospital_id``, ``slot`` and ``who`` are the first hospital's (the
    single-hospital view the chaos run and the latency comparison use).
    """

    def __init__(self, node: Any, channel: Any, hospitals: list[Hospital]) -> None:
        self.node = node
        self.channel = channel
        self.hospitals = hospitals
        self._turn = 0

    @property
    def first(self) -> Hospital:
        return self.hospitals[0]

    @property
    def his(self) -> Any:
        return self.first.his

    @property
    def stub(self) -> Any:
        return self.first.stub

    @property
    def hospital_id(self) -> str:
        return self.first.hospital_id

    async def slot(self, patient_id: str) -> str:
        return await self.first.slot(patient_id)

    def who(self) -> tuple[Any, Any, str]:
        return self.first.who()

    def next_hospital(self) -> Hospital:
        """The hospitals in turn (throughput across all of them)."""
        self._turn += 1
        return self.hospitals[self._turn % len(self.hospitals)]

    async def order(self, hospital: Hospital | None = None) -> float:
        """One patient journey through the order API; seconds until CONFIRMED."""
        from cloud.orders import Step
        from hplus.cloud.v1 import patient_pb2

        h = hospital or self.first
        caller, who, patient_id = h.who()
        slot = await h.slot(patient_id)
        api = self.node.orders
        coordinator = self.node.order_parts.coordinator
        started = time.perf_counter()
        booked = await api.book_appointment(
            patient_pb2.BookAppointmentRequest(
                request_id=rid(), hospital_id=h.hospital_id, slot_id=slot, patient=who
            ),
            caller,
        )
        order = booked.order
        if order.status != patient_pb2.ORDER_STATUS_AWAITING_PAYMENT:
            history = await coordinator.store.history(order.order_id)
            raise RuntimeError(
                f"{h.hospital_id}: booking ended {patient_pb2.OrderStatus.Name(order.status)}: "
                + "; ".join(f"{e.kind} {e.detail}" for e in history)
            )
        paying = await api.pay_order(
            patient_pb2.PayOrderRequest(
                request_id=rid(),
                order_id=order.order_id,
                channel=patient_pb2.PAYMENT_CHANNEL_WECHAT_PAY,
                amount=order.amount_due,
            ),
            caller,
        )
        await self.channel.pay(paying.payment.payment_id)
        async with asyncio.timeout(60):
            row = await coordinator.wait_for(
                order.order_id,
                lambda r: r.step not in (Step.CONFIRMING, Step.AWAITING_PAYMENT) or r.review,
            )
        if row.step is not Step.CONFIRMED:
            raise RuntimeError(f"order ended at {row.step.value}")
        return time.perf_counter() - started

    async def direct(self, hospital: Hospital | None = None) -> float:
        """The same hospital writes straight through the tunnel; seconds."""
        from cloud.orders import money
        from hplus.hospital.v1 import appointment_pb2, common_pb2

        h = hospital or self.first
        _, _, patient_id = h.who()
        slot = await h.slot(patient_id)
        key = rid()
        ref = common_pb2.PatientRef(patient_id=patient_id)
        payment = common_pb2.Payment(
            method=common_pb2.PAYMENT_METHOD_WECHAT_PAY, transaction_id=key, merchant_order_id=key
        )
        book = appointment_pb2.BookAppointmentRequest(idempotency_key=f"{key}:b", patient=ref)
        started = time.perf_counter()
        if h.can_hold:
            held = await h.stub.appointments.HoldSlot(
                appointment_pb2.HoldSlotRequest(
                    idempotency_key=f"{key}:h", slot_id=slot, patient=ref
                ),
                timeout=10,
            )
            payment.amount.CopyFrom(held.appointment.fee.cash_amount)
            book.hold_id = held.appointment.hold_id
        else:  # the fee the patient was shown (the read store), as the coordinator does
            assert self.node.readstore is not None
            fee = await self.node.readstore.queries.slot_fee(h.hospital_id, slot)
            assert fee is not None, f"slot {slot} is not in the read store"
            payment.amount.CopyFrom(money(fee))
            book.slot_id = slot
        book.payment.CopyFrom(payment)
        await h.stub.appointments.BookAppointment(book, timeout=10)
        return time.perf_counter() - started


class _Stubs:
    def __init__(self, channel: Any) -> None:
        from hplus.hospital.v1 import appointment_pb2_grpc, directory_pb2_grpc
        from mesh import errors

        self.appointments = errors.wrap(appointment_pb2_grpc.AppointmentServiceStub(channel))
        self.directory = errors.wrap(directory_pb2_grpc.DirectoryServiceStub(channel))


def _simulator(site: Site) -> Any:
    from tools.his_sim import DbHis, RestHis, SoapHis

    kind = {"rest": RestHis, "soap": SoapHis, "db": DbHis}[site.dialect]
    return kind(seed=site.seed)


def _profile_text(site: Site, his: Any) -> str:
    url = his.db_url if site.dialect == "db" else his.base_url
    return (
        f'extends = "{(_PROFILE / site.profile).as_posix()}"\n\n'
        f'[[his.endpoints]]\nname = "sim"\nurl = "{url}"\n\n'
        # The example profiles pace HIS calls (a real hospital's limit, e.g. 15/s): one
        # journey at a time would measure that pacing, not the platform. The simulators
        # are local, so the bench lifts it for both paths alike.
        "[his.limits]\nrate_per_second = 100000.0\nburst = 1000\nmax_concurrency = 64\n"
    )


@contextlib.asynccontextmanager
async def platform(
    root: Path,
    patients: int,
    sites: tuple[Site, ...] = SITES[:1],
    *,
    partition_urls: dict[str, str] | None = None,
) -> AsyncIterator[Bench]:
    """A node, the in-memory payment channel and one edge per site, each dialing the node.

    Args:
        root: where the node's and the edges' state goes.
        patients: patients bound per hospital (ten per account).
        sites: the hospitals (default: the REST one).
        partition_urls: the node's control and partition databases (``control``,
            ``south``, ``north``); default the node's SQLite files.
    """
    from cloud.config import NodeConfig, SyncConfig
    from cloud.node import CloudNode
    from cloud.orders.testing import InMemoryChannel
    from cloud.readstore import HospitalRecord

    urls = partition_urls or {}
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=root / "cloud",
        # One sync round fills the read store (the fees patients are shown); its loop
        # would compete for the HIS, so its intervals outlast any run.
        sync=SyncConfig(slot_interval=86400.0, directory_interval=86400.0, drift_interval=86400.0),
        partitions_database_url=urls.get("control"),
        partition_urls={k: urls[k] for k in ("south", "north")} if urls else None,
    )
    async with contextlib.AsyncExitStack() as stack:
        sims = [await stack.enter_async_context(_simulator(site)) for site in sites]
        node = await stack.enter_async_context(CloudNode(config))
        assert node.order_parts is not None
        pay = InMemoryChannel()
        node.order_parts.coordinator.attach(pay)
        hospitals = []
        for n, (site, his) in enumerate(zip(sites, sims, strict=True)):
            hospitals.append(await _hospital(stack, node, root / f"h{n}", site, his))
        bench = Bench(node, pay, hospitals)
        assert node.readstore is not None
        assert node.directory_sync is not None
        await node.readstore.put_hospitals(
            [HospitalRecord(hospital_id=h.hospital_id, name=h.hospital_id) for h in hospitals]
        )
        await node.directory_sync.run_round(wait=True)
        for n, hospital in enumerate(hospitals):
            await _bind_patients(node, hospital, patients, phone_base=3000 + 2000 * n)
        yield bench


async def _hospital(
    stack: contextlib.AsyncExitStack, node: Any, root: Path, site: Site, his: Any
) -> Hospital:
    from frontend_server.app import EdgeApp, EdgeConfig
    from frontend_server.dialer import DialerConfig
    from frontend_server.profile import OperationMode, load_profile

    assert node.credentials is not None
    assert node.tls is not None
    assert node.router is not None
    root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (set-up, before any timing)
    profile_path = root / "profile.toml"
    profile_path.write_text(_profile_text(site, his), encoding="utf-8")
    profile = load_profile(profile_path)
    token = (await node.credentials.issue(profile.hospital_id)).token
    edge = EdgeApp(
        EdgeConfig(
            profile=profile,
            data_dir=root / "edge",
            dialer=DialerConfig(
                gateways=(f"localhost:{node.port}",),
                hospital_id=profile.hospital_id,
                edge_id=f"bench-{site.dialect}",
                credential=token,
                ca_cert=node.tls.ca_cert.read_bytes(),
            ),
        )
    )
    await stack.enter_async_context(edge)
    assert edge.dialer is not None
    await asyncio.wait_for(edge.dialer.connected.wait(), 30)
    with contextlib.suppress(Exception):
        await edge.refresher.refresh()
    tunnel = await node.router.channel_for(profile.hospital_id)
    can_hold = profile.mode("hold_slot") is not OperationMode.UNSUPPORTED
    return Hospital(profile.hospital_id, his, _Stubs(tunnel), can_hold=can_hold)


async def _bind_patients(node: Any, hospital: Hospital, patients: int, *, phone_base: int) -> None:
    """Sign accounts in and bind ``patients`` of the hospital, ten per account."""
    import grpc

    from cloud.accounts import Channel, Rate
    from hplus.cloud.v1 import account_pb2, account_pb2_grpc, patient_pb2

    assert node.accounts is not None
    assert node.tls is not None
    issued = await node.accounts.apps.issue(
        f"bench-{hospital.hospital_id}", Channel.WEB, Rate(100000, 1.0)
    )
    creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{node.port}", creds) as grpc_channel:
        stub = account_pb2_grpc.AccountServiceStub(grpc_channel)
        adults = [
            p
            for p in hospital.his.core.patients.values()
            if p.id_type == "RESIDENT" and p.patient_id > "P00000003"
        ][:patients]
        for n in range(0, len(adults), 10):
            md: list[tuple[str, str]] = [("x-hplus-app-key", issued.key)]
            phone = f"+861380013{phone_base + n:04d}"
            started = await stub.StartSignIn(
                account_pb2.StartSignInRequest(request_id=rid(), phone=phone), metadata=md
            )
            lines = (node.config.data_dir / "sign-in-codes.log").read_text()
            code = next(
                json.loads(x)["code"]
                for x in lines.splitlines()
                if json.loads(x)["challenge_id"] == started.challenge_id
            )
            done = await stub.CompleteSignIn(
                account_pb2.CompleteSignInRequest(
                    request_id=rid(), challenge_id=started.challenge_id, code=code
                ),
                metadata=md,
            )
            md.append(("authorization", f"Bearer {done.access_token}"))
            caller = await node.accounts.auth.authenticate_account(md)
            for known in adults[n : n + 10]:
                who = patient_pb2.PatientIdentity(
                    name=known.name,
                    id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
                    id_card_number=known.id_number,
                )
                await stub.BindPatient(
                    account_pb2.BindPatientRequest(
                        request_id=rid(), hospital_id=hospital.hospital_id, patient=who
                    ),
                    metadata=md,
                )
                hospital.callers.append((caller, who, known.patient_id))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _throughput(
    journey: Callable[[], Awaitable[float]], seconds: float, concurrency: int
) -> tuple[int, float]:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await journey()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, done / (time.perf_counter() - started)


async def _main(
    journeys: int,
    seconds: float,
    concurrency: int,
    patients: int,
    postgres: str | None,
    his_latency: float,
) -> dict[str, Any]:
    from tools.his_sim import Latency
    from tools.scratchdb import postgres_databases

    async with contextlib.AsyncExitStack() as stack:
        urls = None
        if postgres is not None:
            made = postgres_databases(
                postgres, ("control", "south", "north"), prefix="bench_orders"
            )
            urls = await stack.enter_async_context(made)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-orders-"))
        async with platform(Path(tmp), patients, SITES, partition_urls=urls) as bench:
            if his_latency > 0:  # every HIS request answers that much later, on both paths
                for h in bench.hospitals:
                    await h.his.inject(Latency(his_latency / 1000))
            for h in bench.hospitals:
                for _ in range(3):  # warm up both paths
                    await bench.order(h)
                    await bench.direct(h)
            orders: dict[str, list[float]] = {s.dialect: [] for s in SITES}
            direct: dict[str, list[float]] = {s.dialect: [] for s in SITES}
            for _ in range(journeys):  # interleaved: each hospital, each path, in turn
                for site, h in zip(SITES, bench.hospitals, strict=True):
                    orders[site.dialect].append(await bench.order(h))
                    direct[site.dialect].append(await bench.direct(h))

            async def any_order() -> float:
                return await bench.order(bench.next_hospital())

            async def any_direct() -> float:
                return await bench.direct(bench.next_hospital())

            order_count, order_rate = await _throughput(any_order, seconds, concurrency)
            direct_count, direct_rate = await _throughput(any_direct, seconds, concurrency)
            bookings = sum(h.his.core.counts().bookings for h in bench.hospitals)
    every_order = [x for v in orders.values() for x in v]
    every_direct = [x for v in direct.values() for x in v]
    result: dict[str, Any] = {
        "partitions": "postgresql" if postgres else "sqlite",
        "his_latency_ms": his_latency,
        "journeys_per_hospital": journeys,
        "orders_p50_ms": round(statistics.median(every_order) * 1000, 2),
        "orders_p95_ms": round(_pct(every_order, 0.95) * 1000, 2),
        "direct_p50_ms": round(statistics.median(every_direct) * 1000, 2),
        "direct_p95_ms": round(_pct(every_direct, 0.95) * 1000, 2),
        "p50_ratio": round(statistics.median(every_order) / statistics.median(every_direct), 3),
        "by_dialect": {
            d: {
                "orders_p50_ms": round(statistics.median(orders[d]) * 1000, 2),
                "direct_p50_ms": round(statistics.median(direct[d]) * 1000, 2),
                "p50_ratio": round(statistics.median(orders[d]) / statistics.median(direct[d]), 3),
            }
            for d in orders
        },
        "concurrency": concurrency,
        "orders_per_second": round(order_rate, 1),
        "direct_per_second": round(direct_rate, 1),
        "orders_done": order_count,
        "direct_done": direct_count,
        "his_bookings": bookings,
    }
    return result


def run(
    *,
    journeys: int,
    seconds: float,
    concurrency: int,
    patients: int,
    postgres: str | None = None,
    his_latency: float = 0.0,
) -> None:
    """Run the benchmark and print the table, then the figures as JSON on the last line."""
    result = asyncio.run(_main(journeys, seconds, concurrency, patients, postgres, his_latency))
    print(f"{'p50 latency, one at a time (ms)':<34}{'orders API':>14}{'direct':>12}{'ratio':>9}")
    for dialect, figures in result["by_dialect"].items():
        print(
            f"{'  ' + dialect + ' hospital':<34}{figures['orders_p50_ms']:>14}"
            f"{figures['direct_p50_ms']:>12}{figures['p50_ratio']:>9}"
        )
    print(
        f"{'  all three':<34}{result['orders_p50_ms']:>14}"
        f"{result['direct_p50_ms']:>12}{result['p50_ratio']:>9}"
    )
    print(
        f"{'p95 latency, all three (ms)':<34}{result['orders_p95_ms']:>14}"
        f"{result['direct_p95_ms']:>12}"
    )
    print(
        f"{f'per second, {concurrency} in flight':<34}{result['orders_per_second']:>14}"
        f"{result['direct_per_second']:>12}"
    )
    print(json.dumps(result))

"""The orders benchmark: BookAppointment + PayOrder through the coordinator, against the same
hospital calls made directly through the tunnel, side by side in one run.

One process runs a cloud node (TLS, SQLite partitions, the node's defaults), the REST HIS
simulator and a real edge (``EdgeApp``) that dials the node, as ``make run`` does for one
hospital. Accounts sign in and bind patients through the real ``AccountService``.

* **orders**: ``OrderApi.book_appointment`` (the order written, then HoldSlot through the
  tunnel), ``OrderApi.pay_order`` (prepay at the in-memory channel), the app pays (the
  channel's notification reaches the coordinator), and the coordinator's BookAppointment of
  the hold through the tunnel, until the order is CONFIRMED.
* **direct**: HoldSlot then BookAppointment with the payment, through the same tunnel.

Latency: one journey at a time, the two kinds interleaved, p50 and p95 and their ratio.
Throughput: ``concurrency`` journeys in flight for ``seconds``, each kind in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class Bench:
    def __init__(self, node: Any, his: Any, channel: Any, hospital_stub: Any) -> None:
        self.node = node
        self.his = his
        self.channel = channel
        self.stub = hospital_stub
        self.callers: list[tuple[Any, Any, str]] = []  # (caller, identity, HIS patient id)
        self.hospital_id = ""
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

    async def order(self) -> float:
        """One patient journey through the order API; seconds until CONFIRMED."""
        from cloud.orders import Step
        from hplus.cloud.v1 import patient_pb2

        caller, who, patient_id = self.who()
        slot = await self.slot(patient_id)
        api = self.node.orders
        coordinator = self.node.order_parts.coordinator
        started = time.perf_counter()
        booked = await api.book_appointment(
            patient_pb2.BookAppointmentRequest(
                request_id=rid(), hospital_id=self.hospital_id, slot_id=slot, patient=who
            ),
            caller,
        )
        order = booked.order
        if order.status != patient_pb2.ORDER_STATUS_AWAITING_PAYMENT:
            raise RuntimeError(f"booking ended {patient_pb2.OrderStatus.Name(order.status)}")
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

    async def direct(self) -> float:
        """The same hospital writes straight through the tunnel; seconds."""
        from hplus.hospital.v1 import appointment_pb2, common_pb2

        _, _, patient_id = self.who()
        slot = await self.slot(patient_id)
        key = rid()
        ref = common_pb2.PatientRef(patient_id=patient_id)
        started = time.perf_counter()
        held = await self.stub.appointments.HoldSlot(
            appointment_pb2.HoldSlotRequest(idempotency_key=f"{key}:h", slot_id=slot, patient=ref),
            timeout=10,
        )
        payment = common_pb2.Payment(
            method=common_pb2.PAYMENT_METHOD_WECHAT_PAY, transaction_id=key, merchant_order_id=key
        )
        payment.amount.CopyFrom(held.appointment.fee.cash_amount)
        await self.stub.appointments.BookAppointment(
            appointment_pb2.BookAppointmentRequest(
                idempotency_key=f"{key}:b",
                hold_id=held.appointment.hold_id,
                patient=ref,
                payment=payment,
            ),
            timeout=10,
        )
        return time.perf_counter() - started


class _Stubs:
    def __init__(self, channel: Any) -> None:
        from hplus.hospital.v1 import appointment_pb2_grpc, directory_pb2_grpc
        from mesh import errors

        self.appointments = errors.wrap(appointment_pb2_grpc.AppointmentServiceStub(channel))
        self.directory = errors.wrap(directory_pb2_grpc.DirectoryServiceStub(channel))


@contextlib.asynccontextmanager
async def platform(root: Path, patients: int) -> AsyncIterator[Bench]:
    import grpc

    from cloud.accounts import Channel, Rate
    from cloud.config import NodeConfig, SyncConfig
    from cloud.node import CloudNode
    from cloud.orders.testing import InMemoryChannel
    from frontend_server.app import EdgeApp, EdgeConfig
    from frontend_server.dialer import DialerConfig
    from frontend_server.profile import load_profile
    from hplus.cloud.v1 import account_pb2, account_pb2_grpc, patient_pb2
    from tools.his_sim import RestHis

    async with RestHis(seed=7) as his:
        config = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=root / "cloud",
            sync=SyncConfig(enabled=False),  # the read store's sync would compete for the HIS
        )
        async with CloudNode(config) as node:
            profile_path = root / "profile.toml"
            profile_path.write_text(
                f'extends = "{(_PROFILE / "city-first-hospital.toml").as_posix()}"\n\n'
                f'[[his.endpoints]]\nname = "sim"\nurl = "{his.base_url}"\n',
                encoding="utf-8",
            )
            profile = load_profile(profile_path)
            assert node.credentials is not None
            assert node.tls is not None
            assert node.accounts is not None
            assert node.router is not None
            assert node.order_parts is not None
            token = (await node.credentials.issue(profile.hospital_id)).token
            edge = EdgeApp(
                EdgeConfig(
                    profile=profile,
                    data_dir=root / "edge",
                    dialer=DialerConfig(
                        gateways=(f"localhost:{node.port}",),
                        hospital_id=profile.hospital_id,
                        edge_id="bench",
                        credential=token,
                        ca_cert=node.tls.ca_cert.read_bytes(),
                    ),
                )
            )
            async with edge:
                assert edge.dialer is not None
                await asyncio.wait_for(edge.dialer.connected.wait(), 30)
                with contextlib.suppress(Exception):
                    await edge.refresher.refresh()
                pay = InMemoryChannel()
                node.order_parts.coordinator.attach(pay)
                tunnel = await node.router.channel_for(profile.hospital_id)
                bench = Bench(node, his, pay, _Stubs(tunnel))
                bench.hospital_id = profile.hospital_id
                issued = await node.accounts.apps.issue("bench", Channel.WEB, Rate(100000, 1.0))
                creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
                grpc_channel = grpc.aio.secure_channel(f"localhost:{node.port}", creds)
                async with grpc_channel:
                    stub = account_pb2_grpc.AccountServiceStub(grpc_channel)
                    adults = [
                        p
                        for p in his.core.patients.values()
                        if p.id_type == "RESIDENT" and p.patient_id > "P00000003"
                    ][:patients]
                    for n in range(0, len(adults), 10):
                        md: list[tuple[str, str]] = [("x-hplus-app-key", issued.key)]
                        phone = f"+861380013{8000 + n:04d}"
                        started = await stub.StartSignIn(
                            account_pb2.StartSignInRequest(request_id=rid(), phone=phone),
                            metadata=md,
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
                                    request_id=rid(), hospital_id=bench.hospital_id, patient=who
                                ),
                                metadata=md,
                            )
                            bench.callers.append((caller, who, known.patient_id))
                    yield bench


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


async def _main(journeys: int, seconds: float, concurrency: int, patients: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        async with platform(Path(tmp), patients) as bench:
            for _ in range(3):  # warm up both paths
                await bench.order()
                await bench.direct()
            orders: list[float] = []
            direct: list[float] = []
            for _ in range(journeys):
                orders.append(await bench.order())
                direct.append(await bench.direct())
            order_count, order_rate = await _throughput(bench.order, seconds, concurrency)
            direct_count, direct_rate = await _throughput(bench.direct, seconds, concurrency)
            counts = bench.his.core.counts()
    result = {
        "journeys": journeys,
        "orders_p50_ms": round(statistics.median(orders) * 1000, 2),
        "orders_p95_ms": round(_pct(orders, 0.95) * 1000, 2),
        "direct_p50_ms": round(statistics.median(direct) * 1000, 2),
        "direct_p95_ms": round(_pct(direct, 0.95) * 1000, 2),
        "p50_ratio": round(statistics.median(orders) / statistics.median(direct), 3),
        "concurrency": concurrency,
        "orders_per_second": round(order_rate, 1),
        "direct_per_second": round(direct_rate, 1),
        "orders_done": order_count,
        "direct_done": direct_count,
        "his_bookings": counts.bookings,
    }
    return result


def run(*, journeys: int, seconds: float, concurrency: int, patients: int) -> None:
    """Run the benchmark and print the table, then the figures as JSON on the last line."""
    result = asyncio.run(_main(journeys, seconds, concurrency, patients))
    print(f"{'':<34}{'orders API':>14}{'direct':>12}{'ratio':>9}")
    print(
        f"{'p50 latency, one at a time (ms)':<34}{result['orders_p50_ms']:>14}"
        f"{result['direct_p50_ms']:>12}{result['p50_ratio']:>9}"
    )
    print(
        f"{'p95 latency, one at a time (ms)':<34}{result['orders_p95_ms']:>14}"
        f"{result['direct_p95_ms']:>12}"
    )
    print(
        f"{f'per second, {concurrency} in flight':<34}{result['orders_per_second']:>14}"
        f"{result['direct_per_second']:>12}"
    )
    print(json.dumps(result))

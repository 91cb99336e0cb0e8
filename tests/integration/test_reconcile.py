"""Three-way reconciliation across real parts: a cloud node with the payment simulator as its
channel, a simulated hospital (REST HIS) behind a real edge and tunnel, and the platform's
side through the `PlatformLedger` seam (an in-memory ledger: the order coordinator's is not
ours). Hand-made discrepancies of every class; ``hplus reconcile`` in a real process."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cloud.config import NodeConfig, PaymentsConfig, ReconcileConfig
from cloud.node import CloudNode
from cloud.payments import CST, WechatPayChannel
from cloud.reconcile import (
    DiscrepancyKind,
    PlatformPayment,
    PlatformState,
    Reconciler,
    Resolution,
)
from frontend_server.app import EdgeApp
from frontend_server.profile import load_profile
from hplus.hospital.v1 import billing_pb2, billing_pb2_grpc, common_pb2
from mesh.tls import ensure_dev_pki
from tests.integration.hospital_env import FAST, SEED, edge_config, write_profile
from tools.his_sim import RestHis
from tools.pay_sim import PaySim

REPO = Path(__file__).resolve().parents[2]
T = 15.0
K = DiscrepancyKind
S = PlatformState


class Ledger:
    """The platform's side, in memory (a seam we own in tests)."""

    def __init__(self) -> None:
        self.payments: list[PlatformPayment] = []
        self.asked = asyncio.Event()

    async def payments_for(
        self, business_date: dt.date, hospital_id: str | None
    ) -> Sequence[PlatformPayment]:
        self.asked.set()
        return [
            p
            for p in self.payments
            if hospital_id in (None, p.hospital_id)
            and (p.paid_at or dt.datetime.now(CST)).astimezone(CST).date() == business_date
        ]


@dataclass
class Sink:
    applied: list[Resolution] = field(default_factory=list)

    async def apply(self, resolution: Resolution) -> None:
        self.applied.append(resolution)


@dataclass
class World:
    sim: PaySim
    his: RestHis
    node: CloudNode
    hospital_id: str
    data_dir: Path

    @property
    def channel(self) -> WechatPayChannel:
        assert isinstance(self.node.payments, WechatPayChannel)
        return self.node.payments

    async def billing(self) -> billing_pb2_grpc.BillingServiceStub:
        assert self.node.router is not None
        return billing_pb2_grpc.BillingServiceStub(
            await self.node.router.channel_for(self.hospital_id)
        )

    async def collect(
        self, out_trade_no: str, patient: str, *, at_channel: bool = True
    ) -> tuple[int, str, object]:
        """Quote a patient's first bill, take its cash amount through the channel (paid).

        Returns: (cash fen, the channel's transaction id, the quote).
        """
        billing = await self.billing()
        bills = await billing.ListPayableBills(
            billing_pb2.ListPayableBillsRequest(patient=common_pb2.PatientRef(patient_id=patient)),
            timeout=T,
        )
        bill = bills.bills[0]
        quote = await billing.QuoteCharge(
            billing_pb2.QuoteChargeRequest(
                idempotency_key=f"q:{out_trade_no}",
                patient=common_pb2.PatientRef(patient_id=patient),
                bill_ids=[bill.bill_id],
            ),
            timeout=T,
        )
        cash = quote.fee.cash_amount.units * 100 + quote.fee.cash_amount.nanos // 10_000_000
        if not at_channel:
            return cash, "", (bill.bill_id, quote)
        await self.channel.prepay(out_trade_no, cash, "门诊缴费", f"openid-{patient}")
        await self.sim.pay(out_trade_no)
        tx = (await self.channel.query_payment(out_trade_no)).transaction_id
        return cash, tx, (bill.bill_id, quote)

    async def settle(self, out_trade_no: str, patient: str, tx: str, got: object) -> str:
        """Settle the quoted bill at the hospital with the channel's payment; its receipt."""
        bill_id, quote = got  # type: ignore[misc]
        payment = common_pb2.Payment(
            method=common_pb2.PAYMENT_METHOD_WECHAT_PAY,
            transaction_id=tx,
            merchant_order_id=out_trade_no,
        )
        payment.amount.CopyFrom(quote.fee.cash_amount)
        billing = await self.billing()
        charge = await billing.SettleCharge(
            billing_pb2.SettleChargeRequest(
                idempotency_key=f"s:{out_trade_no}",
                patient=common_pb2.PatientRef(patient_id=patient),
                bill_ids=[bill_id],
                quote_id=quote.quote_id,
                payment=payment,
            ),
            timeout=T,
        )
        return str(charge.charge.charge_id)


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with PaySim(path=tmp_path / "pay.db") as sim, RestHis(seed=SEED) as his:
        key_file, public = sim.write_keys(tmp_path / "keys")
        config = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=tmp_path / "cloud",
            node_id="n1",
            grace_seconds=2.0,
            payments=PaymentsConfig(
                channel_url=sim.base_url,
                merchant_id=sim.merchant_id,
                app_id=sim.app_id,
                merchant_key_file=key_file,
                platform_public_key_file=public,
                notify_plaintext=True,
            ),
            reconcile=ReconcileConfig(daily_at=""),
        )
        async with CloudNode(config, tunnel_config=FAST) as node:
            profile = load_profile(write_profile(tmp_path, "rest", his.base_url))
            assert node.credentials is not None
            token = (await node.credentials.issue(profile.hospital_id)).token
            app = EdgeApp(edge_config(node, profile, token, tmp_path / "edge", his))
            async with app:
                assert app.dialer is not None
                await asyncio.wait_for(app.dialer.connected.wait(), 10)
                yield World(sim, his, node, profile.hospital_id, tmp_path / "cloud")


async def _cli(w: World, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "reconcile",
        *args,
        "--data-dir",
        str(w.data_dir),
        "--node",
        f"127.0.0.1:{w.node.internal_port}",
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'gen'}:{REPO}", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_hand_made_discrepancies_of_every_class(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        h = w.hospital_id
        ledger, sink = Ledger(), Sink()
        w.node.platform_ledger = ledger
        w.node.resolutions = sink
        pay = ledger.payments
        today = dt.datetime.now(CST).date()

        # A: paid, settled, confirmed: all three agree.
        cash, tx, got = await w.collect("ORDA000001", "P00000005")
        receipt = await w.settle("ORDA000001", "P00000005", tx, got)
        pay.append(
            PlatformPayment(
                "o-A",
                h,
                "ORDA000001",
                cash,
                S.CONFIRMED,
                hospital_charge_id=receipt,
                transaction_id=tx,
            )
        )
        # B: the hospital's answer was lost (UNKNOWN); channel and hospital both show it.
        cash, tx, got = await w.collect("ORDB000001", "P00000006")
        await w.settle("ORDB000001", "P00000006", tx, got)
        pay.append(PlatformPayment("o-B", h, "ORDB000001", cash, S.UNKNOWN))
        # C: confirmed on the platform, never settled at the hospital.
        cash, tx, _ = await w.collect("ORDC000001", "P00000007")
        pay.append(PlatformPayment("o-C", h, "ORDC000001", cash, S.CONFIRMED, transaction_id=tx))
        # D: settled at the hospital with a payment the channel never collected.
        cash, _, got = await w.collect("ORDD000001", "P00000008", at_channel=False)
        receipt = await w.settle("ORDD000001", "P00000008", "4200FORGED00001", got)
        pay.append(
            PlatformPayment(
                "o-D",
                h,
                "ORDD999999",
                cash,
                S.CONFIRMED,
                hospital_charge_id=receipt,
                transaction_id="4200FORGED00001",
            )
        )
        # E: the platform recorded another amount than channel and hospital.
        cash, tx, got = await w.collect("ORDE000001", "P00000009")
        await w.settle("ORDE000001", "P00000009", tx, got)
        pay.append(
            PlatformPayment("o-E", h, "ORDE000001", cash + 100, S.CONFIRMED, transaction_id=tx)
        )
        # F: the channel collected a payment the platform does not know.
        await w.channel.prepay("ORDF000001", 1234, "挂号费", "openid-f")
        await w.sim.pay("ORDF000001")
        # G: the platform failed the order, but the hospital kept the charge.
        cash, tx, got = await w.collect("ORDG000001", "P00000011")
        await w.settle("ORDG000001", "P00000011", tx, got)
        pay.append(PlatformPayment("o-G", h, "ORDG000001", cash, S.FAILED, transaction_id=tx))

        assert w.node.reconciler is not None
        report = await w.node.reconciler.run(today)
        (hospital,) = report.hospitals
        assert hospital.read, hospital.error
        found = {(d.kind, d.order_id or d.out_trade_no) for d in report.discrepancies}
        assert found == {
            (K.STATUS_MISMATCH, "o-B"),
            (K.MISSING_AT_HOSPITAL, "o-C"),
            (K.MISSING_AT_CHANNEL, "o-D"),
            (K.AMOUNT_MISMATCH, "o-E"),
            (K.MISSING_AT_PLATFORM, "ORDF000001"),
            (K.STATUS_MISMATCH, "o-G"),
        }, report.discrepancies
        resolvable = [d for d in report.discrepancies if d.resolution is not None]
        assert [d.order_id for d in resolvable] == ["o-B"]
        assert [(r.order_id, r.outcome) for r in sink.applied] == [("o-B", "SETTLED")]
        # Stored as found, every discrepancy with its evidence.
        stored = await w.node.reconciler.stored(report.run_id)
        assert [(d.kind, d.out_trade_no) for d in stored] == [
            (d.kind, d.out_trade_no) for d in report.discrepancies
        ]

        # The same through `hplus reconcile` (a real process, the node's internal endpoint).
        code, out, err = await _cli(w, today.isoformat(), "--format", "json")
        assert code == 1, err
        doc = json.loads(out)
        assert doc["business_date"] == today.isoformat()
        assert doc["hospitals"][0]["ledger_read"] is True
        assert sorted(d["kind"] for d in doc["discrepancies"]) == sorted(
            d.kind.value for d in report.discrepancies
        )
        e = next(d for d in doc["discrepancies"] if d["order_id"] == "o-E")
        assert e["platform_fen"] == e["channel_fen"] + 100
        code, out, _ = await _cli(w, today.isoformat(), "--format", "csv")
        assert code == 1
        rows = list(csv.DictReader(io.StringIO(out)))
        assert {r["order_id"] for r in rows} >= {"o-B", "o-C", "o-D", "o-E", "o-G"}
        assert next(r for r in rows if r["order_id"] == "o-B")["resolution"] == "SETTLED"
        code, out, _ = await _cli(w, today.isoformat(), "--hospital", h)
        assert code == 1
        assert out.startswith(f"reconciliation {today.isoformat()} hospital {h} (run ")
        assert "MISSING_AT_HOSPITAL" in out
        assert "resolvable: SETTLED" in out
        # A date with nothing anywhere: exit 0.
        code, out, _ = await _cli(w, "2001-01-01", "--hospital", h)
        assert code == 0, out
        assert "0 discrepancies" in out
        code, _, err = await _cli(w, "2026-02-30")
        assert code == 2
        assert err.strip() == "hplus: error: DATE: '2026-02-30' is not a date (expected YYYY-MM-DD)"


async def test_an_offline_hospital_is_listed_and_claims_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        ledger = Ledger()
        w.node.platform_ledger = ledger
        today = dt.datetime.now(CST).date()
        cash, tx, _ = await w.collect("ORDH000001", "P00000005")
        ledger.payments.append(
            PlatformPayment(
                "o-H", "offline-hospital", "ORDH000001", cash, S.CONFIRMED, transaction_id=tx
            )
        )
        assert w.node.reconciler is not None
        report = await w.node.reconciler.run(today, "offline-hospital")
        (hospital,) = report.hospitals
        assert not hospital.read
        assert "UNAVAILABLE" in hospital.error
        assert report.discrepancies == ()
        assert any("not read" in n for n in report.notes)


async def test_the_daily_schedule_reconciles_the_previous_day(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        ledger = Ledger()
        w.node.platform_ledger = ledger
        assert w.node.reconciler is not None
        reconciler: Reconciler = w.node.reconciler
        at = dt.datetime.now(CST) + dt.timedelta(seconds=0.3)
        shift = dt.timedelta(seconds=at.second, microseconds=at.microsecond)
        # A clock that reads 0.3 s before the daily time (HH:MM:00).
        offset = -shift

        def clock() -> dt.datetime:
            return dt.datetime.now(dt.UTC) + offset

        loop = asyncio.get_running_loop().create_task(
            reconciler.daily((at.hour, at.minute), clock=clock)
        )
        try:
            async with asyncio.timeout(20):
                await ledger.asked.wait()
        finally:
            await reconciler.shutdown()
            async with asyncio.timeout(20):
                await loop


def test_an_unreachable_node_is_exit_3(tmp_path: Path) -> None:
    from tools.cli import main

    (tmp_path / "cluster-secret").write_text("s")
    ensure_dev_pki(tmp_path / "tls")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(
        [
            "reconcile",
            "2026-12-05",
            "--data-dir",
            str(tmp_path),
            "--node",
            f"127.0.0.1:{port}",
            "--timeout",
            "3",
        ]
    )
    assert code == 3

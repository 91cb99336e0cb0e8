"""The channel client against the real payment simulator over real HTTP, every fault included."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path

import pytest

from cloud.payments import CST, RefundState, TradeState, WechatPayChannel, load_keys
from mesh import errors
from mesh.retry import RetryPolicy
from mesh.tls import ensure_dev_pki
from tests.support.payments import channel_and_sim
from tools.pay_sim import (
    InvalidSignature,
    NotificationDelayed,
    NotificationDuplicated,
    NotificationLost,
    RefundDelayed,
    TimeoutAfterCommit,
)


async def test_prepay_is_idempotent_and_paying_gives_the_same_evidence_twice(
    tmp_path: Path,
) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, server, inbox):
        first = await channel.prepay("ORD0000001", 4900, "挂号费", "openid-a")
        again = await channel.prepay("ORD0000001", 4900, "挂号费", "openid-a")
        assert first.prepay_id == again.prepay_id
        assert first.app_parameters["package"] == f"prepay_id={first.prepay_id}"
        assert first.expires_at > dt.datetime.now(dt.UTC)
        assert len(sim.store.trades()) == 1
        unpaid = await channel.query_payment("ORD0000001")
        assert (unpaid.state, unpaid.amount_fen, unpaid.source) == (
            TradeState.NOTPAY,
            4900,
            "query",
        )

        await sim.pay("ORD0000001")
        (notified,) = await inbox.wait(1)
        queried = await channel.query_payment("ORD0000001")
        assert notified.source == "notification"
        assert queried.state is TradeState.SUCCESS
        assert (notified.state, notified.amount_fen, notified.transaction_id) == (
            queried.state,
            queried.amount_fen,
            queried.transaction_id,
        )
        assert queried.transaction_id
        assert queried.paid_at is not None
        assert server.accepted == 1
        absent = await channel.query_payment("ORD0000404")
        assert absent.state is TradeState.NOT_FOUND


async def test_refusals_are_tree_errors_with_the_channel_code(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, _inbox):
        await channel.prepay("ORD0000002", 1000, "缴费", "openid-b")
        with pytest.raises(errors.FailedPrecondition) as other:
            await channel.prepay("ORD0000002", 1200, "缴费", "openid-b")
        assert other.value.reason == "INVALID_REQUEST"
        with pytest.raises(errors.InvalidArgument) as bad:
            await channel.prepay("x", 1000, "缴费", "openid-b")
        assert bad.value.field_violations[0].field == "out_trade_no"
        with pytest.raises(errors.FailedPrecondition) as unpaid:
            await channel.refund("ORD0000002", "REF0000002", 100, 1000, "r")
        assert unpaid.value.reason == "INVALID_REQUEST"
        with pytest.raises(errors.NotFound):
            await channel.refund("ORD0000999", "REF0000999", 100, 1000, "r")
        await sim.pay("ORD0000002")
        with pytest.raises(errors.FailedPrecondition) as paid:
            await channel.prepay("ORD0000002", 1000, "缴费", "openid-b")
        assert paid.value.reason == "ORDERPAID"
        with pytest.raises(errors.FailedPrecondition) as close_paid:
            await channel.close_payment("ORD0000002")
        assert close_paid.value.reason == "ORDERPAID"


async def test_close_is_idempotent_and_fences_a_late_prepay(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, _inbox):
        await channel.prepay("ORD0000003", 500, "挂号费", "openid-c")
        await channel.close_payment("ORD0000003")
        await channel.close_payment("ORD0000003")
        assert (await channel.query_payment("ORD0000003")).state is TradeState.CLOSED
        with pytest.raises(ValueError, match="not payable"):
            await sim.pay("ORD0000003")
        # Closing an order the channel never saw fences it: a late prepay cannot revive it.
        await channel.close_payment("ORD0000004")
        with pytest.raises(errors.FailedPrecondition) as late:
            await channel.prepay("ORD0000004", 500, "挂号费", "openid-c")
        assert late.value.reason == "ORDER_CLOSED"


async def test_refunds_partial_bounded_idempotent_and_in_the_statement(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, inbox):
        await channel.prepay("ORD0000005", 4900, "挂号费", "openid-d")
        await sim.pay("ORD0000005")
        part = await channel.refund("ORD0000005", "REF0000005", 900, 4900, "退一部分")
        assert (part.state, part.amount_fen) == (RefundState.SUCCESS, 900)
        same = await channel.refund("ORD0000005", "REF0000005", 900, 4900, "退一部分")
        assert same.refund_id == part.refund_id
        with pytest.raises(errors.FailedPrecondition) as over:
            await channel.refund("ORD0000005", "REF0000006", 4001, 4900, "超额")
        assert over.value.reason == "NOT_ENOUGH"
        await channel.refund("ORD0000005", "REF0000007", 4000, 4900, "余下")
        assert (await channel.query_payment("ORD0000005")).state is TradeState.REFUND
        assert (await channel.query_refund("REF0000404")).state is RefundState.NOT_FOUND
        items = await inbox.wait(3)
        assert sorted(type(i).__name__ for i in items) == [
            "PaymentEvidence",
            "RefundEvidence",
            "RefundEvidence",
        ]
        today = dt.datetime.now(CST).date()
        rows = await channel.statement(today)
        assert [(r.kind, r.out_trade_no, r.out_refund_no, r.amount_fen) for r in rows] == [
            ("payment", "ORD0000005", "", 4900),
            ("refund", "ORD0000005", "REF0000005", 900),
            ("refund", "ORD0000005", "REF0000007", 4000),
        ]
        assert rows[0].transaction_id == (await channel.query_payment("ORD0000005")).transaction_id
        assert await channel.statement(today - dt.timedelta(days=1)) == []
        text = sim.statement(today)
        assert text.splitlines()[-1] == "`3,`49.00,`49.00"


async def test_a_lost_notification_leaves_the_query_as_evidence(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, server, inbox):
        await sim.inject(NotificationLost())
        await channel.prepay("ORD0000010", 100, "缴费", "openid-e")
        await sim.pay("ORD0000010")
        assert (await channel.query_payment("ORD0000010")).state is TradeState.SUCCESS
        assert [n.state for n in sim.store.notifications()] == ["lost"]
        # The next payment's notification arrives: the fault was used up.
        await channel.prepay("ORD0000011", 100, "缴费", "openid-e")
        await sim.pay("ORD0000011")
        (only,) = await inbox.wait(1)
        assert only.out_trade_no == "ORD0000011"  # type: ignore[union-attr]
        assert server.accepted == 1


async def test_duplicated_notifications_are_all_accepted_and_say_the_same(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, server, inbox):
        await sim.inject(NotificationDuplicated(copies=3))
        await channel.prepay("ORD0000012", 100, "缴费", "openid-f")
        await sim.pay("ORD0000012")
        items = await inbox.wait(3)
        assert len({(i.state, i.amount_fen, i.transaction_id) for i in items}) == 1  # type: ignore[union-attr]
        # What an idempotent coordinator keeps: one state per payment.
        assert {i.out_trade_no: i.state for i in items} == {"ORD0000012": TradeState.SUCCESS}  # type: ignore[union-attr]
        assert server.accepted == 3
        async with asyncio.timeout(5):
            await sim.wait_for(
                lambda: [n.state for n in sim.store.notifications()] == ["delivered"]
            )


async def test_a_notification_delayed_past_the_query(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, inbox):
        await sim.inject(NotificationDelayed(seconds=None))
        await channel.prepay("ORD0000013", 100, "缴费", "openid-g")
        await sim.pay("ORD0000013")
        queried = await channel.query_payment("ORD0000013")
        assert queried.state is TradeState.SUCCESS
        assert inbox.items == []
        assert [n.state for n in sim.store.notifications()] == ["held"]
        assert await sim.release_notifications() == 1
        (late,) = await inbox.wait(1)
        assert late.transaction_id == queried.transaction_id  # type: ignore[union-attr]


async def test_timeout_after_commit_drop_is_retried_into_the_same_answer(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, _inbox):
        await sim.inject(TimeoutAfterCommit(operations=frozenset({"prepay"}), mode="drop"))
        prepay = await channel.prepay("ORD0000014", 300, "缴费", "openid-h")
        (trade,) = sim.store.trades()
        assert trade.prepay_id == prepay.prepay_id  # the committed one, not a second order
        assert sim.faults() == []


async def test_timeout_after_commit_hang_is_deadline_exceeded_never_a_refusal(
    tmp_path: Path,
) -> None:
    async with channel_and_sim(tmp_path, timeout=0.5) as (sim, channel, _server, _inbox):
        await channel.prepay("ORD0000015", 300, "缴费", "openid-i")
        await sim.pay("ORD0000015")
        await sim.inject(
            TimeoutAfterCommit(operations=frozenset({"refund"}), mode="hang", hang_seconds=5)
        )
        with pytest.raises(errors.DeadlineExceeded) as lost:
            await channel.refund("ORD0000015", "REF0000015", 300, 300, "退款")
        assert lost.value.reason == "CHANNEL_ANSWER_LOST"
        # The refund happened: the query is the evidence, and asking again is safe.
        assert (await channel.query_refund("REF0000015")).state is RefundState.SUCCESS
        again = await channel.refund("ORD0000015", "REF0000015", 300, 300, "退款")
        assert again.state is RefundState.SUCCESS
        assert len(sim.store.refunds()) == 1


async def test_a_delayed_refund_stays_processing_then_succeeds(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, inbox):
        await channel.prepay("ORD0000016", 800, "缴费", "openid-j")
        await sim.pay("ORD0000016")
        await inbox.wait(1)
        await sim.inject(RefundDelayed(seconds=None))
        started = await channel.refund("ORD0000016", "REF0000016", 800, 800, "退款")
        assert started.state is RefundState.PROCESSING
        assert (await channel.query_refund("REF0000016")).state is RefundState.PROCESSING
        assert await sim.complete_refunds() == 1
        items = await inbox.wait(2)
        assert items[-1].state is RefundState.SUCCESS
        assert (await channel.query_refund("REF0000016")).state is RefundState.SUCCESS
        await sim.clear_faults()
        await sim.inject(RefundDelayed(seconds=0.2))
        await channel.prepay("ORD0000017", 800, "缴费", "openid-j")
        await sim.pay("ORD0000017")
        timed = await channel.refund("ORD0000017", "REF0000017", 800, 800, "退款")
        assert timed.state is RefundState.PROCESSING
        items = await inbox.wait(4)
        assert items[-1].state is RefundState.SUCCESS


@pytest.mark.parametrize("mode", ["corrupt", "other-key"])
async def test_an_invalid_signature_is_refused_and_the_retry_accepted(
    tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, server, inbox):
        await sim.inject(InvalidSignature(mode=mode))
        await channel.prepay("ORD0000018", 100, "缴费", "openid-k")
        await sim.pay("ORD0000018")
        await inbox.wait(1)
        assert server.refused == {"SIGNATURE_INVALID": 1}
        async with asyncio.timeout(5):
            await sim.wait_for(lambda: len(sim.deliveries) == 2)
        assert [status for _, status in sim.deliveries] == [401, 204]
        assert "refused (401 SIGNATURE_INVALID)" in caplog.text


async def test_notifications_over_tls_with_the_nodes_certificate(tmp_path: Path) -> None:
    tls = ensure_dev_pki(tmp_path / "tls")
    async with channel_and_sim(tmp_path, tls=tls) as (sim, channel, server, inbox):
        assert server.scheme == "https"
        assert channel.notify_url.startswith("https://")
        await channel.prepay("ORD0000019", 100, "缴费", "openid-l")
        await sim.pay("ORD0000019")
        (item,) = await inbox.wait(1)
        assert item.state is TradeState.SUCCESS


async def test_an_unreachable_channel_is_unavailable_after_retries(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (_sim, channel, _server, _inbox):
        keys = channel.keys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = WechatPayChannel(
        base_url=f"http://127.0.0.1:{port}",
        merchant_id="1900000001",
        app_id="wx",
        keys=keys,
        notify_url="http://127.0.0.1:1/pay/notify",
        retry=RetryPolicy(initial=0.01, maximum=0.05, deadline=0.3),
    )
    try:
        with pytest.raises(errors.Unavailable) as down:
            await closed.query_payment("ORD0000020")
        assert down.value.reason == "CHANNEL_UNREACHABLE"
    finally:
        await closed.close()


async def test_a_wrong_merchant_key_is_unauthenticated(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, _server, _inbox):
        other = tmp_path / "other.key"
        other.write_bytes(b"x" * 32)
        other.chmod(0o600)
        pub = tmp_path / "keys" / "platform_public.pem"
        wrong = WechatPayChannel(
            base_url=sim.base_url,
            merchant_id=sim.merchant_id,
            app_id=sim.app_id,
            keys=load_keys(other, pub),
            notify_url=channel.notify_url,
        )
        try:
            with pytest.raises(errors.Unauthenticated) as refused:
                await wrong.query_payment("ORD0000021")
            assert refused.value.reason == "SIGN_ERROR"
        finally:
            await wrong.close()


async def test_concurrent_payments_each_notified_once(tmp_path: Path) -> None:
    async with channel_and_sim(tmp_path) as (sim, channel, server, inbox):
        numbers = [f"ORD00001{n:02d}" for n in range(20)]
        await asyncio.gather(
            *(channel.prepay(n, 100 + i, "缴费", "o") for i, n in enumerate(numbers))
        )
        for n in numbers:
            await sim.pay(n)
        items = await inbox.wait(20)
        assert sorted(i.out_trade_no for i in items) == numbers  # type: ignore[union-attr]
        assert server.accepted == 20


async def test_a_large_statement_is_read_whole_and_a_cut_one_refused(tmp_path: Path) -> None:
    # Found by the 1,000-journey chaos run: the bill was read with one bounded read(),
    # which returns what has arrived so far; its latest 105 payments were missing and
    # reconciliation reported them MISSING_AT_CHANNEL.
    from cloud.payments import parse_statement
    from tools.pay_sim._store import TradeRow

    async with channel_and_sim(tmp_path) as (sim, channel, _server, _inbox):
        now = dt.datetime.now(CST)
        for n in range(2000):  # about 400 KB of bill: many chunks on the wire
            sim.store.insert_trade(
                TradeRow(
                    out_trade_no=f"ORD{n:07d}",
                    prepay_id=f"wx{n}",
                    transaction_id=f"4200{n:010d}",
                    description="挂号费",
                    payer="openid",
                    amount=100 + n,
                    notify_url="",
                    state="SUCCESS",
                    created_at=now,
                    expires_at=now + dt.timedelta(hours=2),
                    success_time=now + dt.timedelta(microseconds=n),
                )
            )
        today = now.date()
        rows = await channel.statement(today)
        assert [r.out_trade_no for r in rows] == [f"ORD{n:07d}" for n in range(2000)]
        assert sum(r.amount_fen for r in rows) == sum(100 + n for n in range(2000))
        text = sim.statement(today)
        lines = text.splitlines()
        for cut in (lines[:-2], lines[:-1], lines[:1000]):  # no summary, or the rows cut short
            with pytest.raises(errors.DataLoss) as lost:
                parse_statement("\n".join(cut) + "\n", today)
            assert "summary" in lost.value.message
        tampered = text.replace("`1.00,", "`1.01,", 1)  # a row that does not add up
        with pytest.raises(errors.DataLoss, match="disagree with its summary"):
            parse_statement(tampered, today)

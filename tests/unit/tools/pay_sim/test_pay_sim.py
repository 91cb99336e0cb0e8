"""The payment simulator itself: merchant authentication, control API, persistence, process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tools.pay_sim import (
    NotificationDelayed,
    PaySim,
    fault_from_json,
    fault_to_json,
    sign_request,
)

REPO = Path(__file__).resolve().parents[4]


async def _call(
    sim: PaySim,
    method: str,
    path: str,
    body: dict[str, object] | None = None,
    *,
    authorization: str | None = None,
) -> tuple[int, object]:
    payload = json.dumps(body) if body is not None else ""
    auth = authorization or sign_request(sim.merchant_key, sim.merchant_id, method, path, payload)
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            sim.base_url + path,
            data=payload.encode(),
            headers={"Authorization": auth, "Content-Type": "application/json"},
        ) as resp,
    ):
        text = await resp.text()
        return resp.status, (json.loads(text) if text and "json" in resp.content_type else text)


def _order(no: str, total: int = 100) -> dict[str, object]:
    return {
        "appid": "wxhplus0000000001",
        "mchid": "1900000001",
        "description": "挂号费",
        "out_trade_no": no,
        "notify_url": "http://127.0.0.1:9/pay/notify",
        "amount": {"total": total, "currency": "CNY"},
        "payer": {"openid": "o"},
    }


async def test_merchant_calls_need_a_valid_fresh_unreplayed_signature(tmp_path: Path) -> None:
    async with PaySim(path=tmp_path / "p.db") as sim:
        path = "/v3/pay/transactions/jsapi"
        body = _order("ORD0000100")
        status, answer = await _call(sim, "POST", path, body)
        assert status == 200
        assert isinstance(answer, dict)
        assert answer["prepay_id"]
        status, answer = await _call(sim, "POST", path, body, authorization="Bearer x")
        assert (status, answer["code"]) == (401, "SIGN_ERROR")  # type: ignore[index]
        wrong = sign_request(b"w" * 32, sim.merchant_id, "POST", path, json.dumps(body))
        status, answer = await _call(sim, "POST", path, body, authorization=wrong)
        assert answer["message"] == "signature: does not verify"  # type: ignore[index]
        stale = sign_request(
            sim.merchant_key,
            sim.merchant_id,
            "POST",
            path,
            json.dumps(body),
            timestamp=int(time.time()) - 600,
        )
        status, answer = await _call(sim, "POST", path, body, authorization=stale)
        assert "window" in answer["message"]  # type: ignore[index]
        fresh = sign_request(sim.merchant_key, sim.merchant_id, "POST", path, json.dumps(body))
        assert (await _call(sim, "POST", path, body, authorization=fresh))[0] == 200
        status, answer = await _call(sim, "POST", path, body, authorization=fresh)
        assert (status, answer["message"]) == (401, "nonce_str: replayed")  # type: ignore[index]
        assert len(sim.store.trades()) == 1


async def test_the_control_api_pays_and_takes_faults(tmp_path: Path) -> None:
    async with PaySim(path=tmp_path / "p.db") as sim, aiohttp.ClientSession() as session:
        assert (await _call(sim, "POST", "/v3/pay/transactions/jsapi", _order("ORD0000101")))[
            0
        ] == 200
        async with session.post(sim.base_url + "/_sim/faults", json={"type": "nope"}) as resp:
            assert resp.status == 400
            assert "unknown fault" in (await resp.json())["message"]
        async with session.post(
            sim.base_url + "/_sim/faults",
            json={"type": "notification_delayed", "seconds": None},
        ) as resp:
            assert (await resp.json())["faults"] == [
                {"type": "notification_delayed", "seconds": None, "times": 1, "event": "any"}
            ]
        async with session.post(
            sim.base_url + "/_sim/pay", json={"out_trade_no": "ORD0000101"}
        ) as resp:
            assert (await resp.json()) == {"trade_state": "SUCCESS"}
        async with session.post(
            sim.base_url + "/_sim/pay", json={"out_trade_no": "ORD0000101"}
        ) as resp:
            assert resp.status == 400
        async with session.get(sim.base_url + "/_sim/notifications") as resp:
            assert [n["state"] for n in (await resp.json())["notifications"]] == ["held"]
        async with session.get(sim.base_url + "/_sim/ledger") as resp:
            ledger = await resp.json()
        assert {t["out_trade_no"]: t["state"] for t in ledger["trades"]}["ORD0000101"] == "SUCCESS"
        assert ledger["refunds"] == []
        async with session.get(sim.base_url + "/_sim/info") as resp:
            info = await resp.json()
        assert info["platform_serial"] == sim.platform_serial
        assert info["platform_public_key"].startswith("-----BEGIN PUBLIC KEY-----")


def test_faults_round_trip_and_bad_fields_are_named() -> None:
    fault = fault_from_json({"type": "timeout_after_commit", "operations": ["refund"]})
    assert fault_to_json(fault)["operations"] == ["refund"]
    with pytest.raises(ValueError, match="operations"):
        fault_from_json({"type": "timeout_after_commit", "operations": ["pay"]})
    with pytest.raises(ValueError, match="copies"):
        fault_from_json({"type": "notification_duplicated", "copies": 1})
    with pytest.raises(ValueError, match="times"):
        fault_from_json({"type": "notification_lost", "times": 0})
    with pytest.raises(ValueError, match="bad fields"):
        fault_from_json({"type": "refund_delayed", "bogus": 1})


async def test_a_restart_keeps_payments_keys_and_held_notifications(tmp_path: Path) -> None:
    state = tmp_path / "p.db"
    async with PaySim(path=state) as sim:
        await sim.inject(NotificationDelayed(seconds=None))
        assert (await _call(sim, "POST", "/v3/pay/transactions/jsapi", _order("ORD0000102")))[
            0
        ] == 200
        await sim.pay("ORD0000102")
        serial, key = sim.platform_serial, sim.merchant_key
        tx = sim.store.trade("ORD0000102").transaction_id  # type: ignore[union-attr]
    async with PaySim(path=state) as again:
        assert (again.platform_serial, again.merchant_key) == (serial, key)
        status, answer = await _call(again, "GET", "/v3/pay/transactions/out-trade-no/ORD0000102")
        assert status == 200
        assert answer["trade_state"] == "SUCCESS"  # type: ignore[index]
        assert answer["transaction_id"] == tx  # type: ignore[index]
        assert [n.state for n in again.store.notifications()] == ["held"]
        assert await again.release_notifications() == 1
        # Nobody listens at the notify URL: the delivery is tried and rescheduled.
        async with asyncio.timeout(10):
            await again.wait_for(lambda: bool(again.deliveries))
        assert again.deliveries[0][1] == 0


async def test_the_process_prints_its_address_and_writes_keys(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.pay_sim",
        "--listen",
        "127.0.0.1:0",
        "--state",
        str(tmp_path / "p.db"),
        "--write-keys",
        str(tmp_path / "keys"),
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO / 'gen'}:{REPO}", "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        match = re.search(r"ready at (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        assert (tmp_path / "keys" / "merchant.key").stat().st_mode & 0o777 == 0o600
        async with (
            aiohttp.ClientSession() as session,
            session.get(match.group(1) + "/_sim/info") as resp,
        ):
            assert (await resp.json())["merchant_id"] == "1900000001"
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


def test_a_bad_listen_address_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.pay_sim import main

    assert main(["--listen", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: --listen:")

"""The upgrade agent against the cloud's real handlers over TLS: delta first, full fallback,
resumable downloads with CRC32C, the maintenance window, and every tampering refused with
its reason and reported to the cloud."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cloud.upgrades import FULL, StoredPackage
from frontend_server.updater import Outcome, UpdaterConfig, UpgradeAgent, in_window
from hplus.cloud.v1 import edge_pb2
from mesh.packages import package_id
from mesh.retry import RetryPolicy
from tests.support.upgrades import Cloud, Keys, package, upgrade_cloud
from tools.fleet_sim import EdgeUplink, SimSlots

H = "h-001"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    async with upgrade_cloud(tmp_path, [H, "h-002"]) as c:
        yield c


class Uplink(EdgeUplink):
    """The simulator's uplink with a way to damage the stream (a middlebox, a bad link)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cut_after: int | None = None  # end every stream after this many chunks
        self.cut_times = 0
        self.flip_once = False
        self.reports: list[edge_pb2.UpgradeHealth] = []
        self.requests: list[edge_pb2.DownloadUpgradeRequest] = []

    async def download_upgrade(
        self, request: edge_pb2.DownloadUpgradeRequest
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        self.requests.append(request)
        n = 0
        async for chunk in super().download_upgrade(request):
            if self.cut_after is not None and n >= self.cut_after and self.cut_times != 0:
                self.cut_times -= 1
                return
            if self.flip_once:
                self.flip_once = False
                data = bytearray(chunk.data)
                data[0] ^= 0xFF
                chunk = edge_pb2.DownloadUpgradeResponse(
                    offset=chunk.offset,
                    data=bytes(data),
                    total_size=chunk.total_size,
                    crc32c=chunk.crc32c,
                )
            n += 1
            yield chunk

    async def report_upgrade(self, upgrade: edge_pb2.UpgradeHealth) -> None:
        self.reports.append(upgrade)
        await super().report_upgrade(upgrade)


def _agent(
    cloud: Cloud,
    tmp: Path,
    version: str,
    base: Path | None,
    *,
    trust: Any = None,
    clock: Any = None,
    zone: dt.tzinfo = dt.UTC,
) -> tuple[UpgradeAgent, Uplink, SimSlots]:
    slots = SimSlots(None, version, base)
    uplink = Uplink(cloud.channel, cloud.tokens[H], f"edge-{H}", slots)
    agent = UpgradeAgent(
        UpdaterConfig(
            edge_id=f"edge-{H}",
            data_dir=tmp / "edge",
            trust=trust or cloud.keys.trust,
            zone=zone,
            chunk_size_hint=16 * 1024,
            retry=RetryPolicy(initial=0.01, maximum=0.05, deadline=None, attempts=4),
        ),
        uplink,
        slots,
        clock=clock,
    )
    slots.on_switched.append(agent.report_switch)
    return agent, uplink, slots


async def _rollout(cloud: Cloud, version: str, **kwargs: Any) -> str:
    info = await cloud.rollouts.create(
        target_version=version, waves="100%", max_failures=5, hospitals=[H], **kwargs
    )
    return info.rollout_id


async def _target(cloud: Cloud, rollout: str) -> Any:
    return next(h for h in await cloud.rollouts.hospitals(rollout) if h.hospital_id == H)


async def test_a_delta_is_downloaded_applied_verified_installed_and_the_switch_reported(
    cloud: Cloud, tmp_path: Path
) -> None:
    old = await cloud.publish("1.4.0")
    await cloud.publish("1.5.0")
    rollout = await _rollout(cloud, "1.5.0")
    agent, uplink, slots = _agent(cloud, tmp_path, "1.4.0", old)

    result = await agent.check_once()

    assert result.outcome is Outcome.SWITCH_REQUESTED
    delta = next(p for p in await cloud.store.packages() if p.kind == "DELTA")
    full = await cloud.store.full("1.5.0")
    assert result.bytes_downloaded == delta.size < full.size / 2
    assert [r.package_id for r in uplink.requests] == [delta.package_id]
    await slots.switched.wait()
    assert slots.running().version == "1.5.0"
    assert hashlib.sha256(slots.running().package_path.read_bytes()).hexdigest() == full.sha256  # type: ignore[union-attr]
    target = await _target(cloud, rollout)
    assert (target.state, target.version) == ("succeeded", "1.5.0")
    assert (await cloud.rollouts.get(rollout)).state == "completed"
    # The next check: up to date, and the running package id names the full package.
    assert (await agent.check_once()).outcome is Outcome.UP_TO_DATE
    assert agent.upgrade_health().running_package_id == package_id("1.5.0", full.sha256)


async def test_without_the_installed_package_the_full_package_is_served(
    cloud: Cloud, tmp_path: Path
) -> None:
    await cloud.publish("1.4.0")
    await cloud.publish("1.5.0")
    await _rollout(cloud, "1.5.0")
    agent, uplink, slots = _agent(cloud, tmp_path, "1.4.0", None)
    result = await agent.check_once()
    full = await cloud.store.full("1.5.0")
    assert result.outcome is Outcome.SWITCH_REQUESTED
    assert result.bytes_downloaded == full.size
    assert [r.package_id for r in uplink.requests] == [full.package_id]
    await slots.switched.wait()


async def test_an_interrupted_download_resumes_at_its_offset_and_a_damaged_chunk_is_fetched_again(
    cloud: Cloud, tmp_path: Path
) -> None:
    await cloud.publish("1.5.0")
    await _rollout(cloud, "1.5.0")
    agent, uplink, slots = _agent(cloud, tmp_path, "1.4.0", None)
    uplink.cut_after, uplink.cut_times = 2, 2
    uplink.flip_once = True
    result = await agent.check_once()
    full = await cloud.store.full("1.5.0")
    assert result.outcome is Outcome.SWITCH_REQUESTED
    offsets = [r.offset for r in uplink.requests]
    # The damaged first chunk is fetched again from 0; each cut stream resumes further on.
    assert offsets == sorted(offsets)
    assert offsets[:2] == [0, 0]
    assert len(set(offsets)) == 3
    # The damaged chunk was not stored: every byte arrived once, plus the damaged one again.
    assert result.bytes_downloaded == full.size + 16 * 1024
    await slots.switched.wait()


async def _refusal(cloud: Cloud, uplink: Uplink) -> tuple[str, str]:
    report = uplink.reports[-1]
    from google.rpc import error_details_pb2

    info = error_details_pb2.ErrorInfo()
    assert report.last_attempt_status.details[0].Unpack(info)
    stored = (await cloud.rollouts.reports(H))[-1]
    assert stored["reason"] == info.reason
    assert not stored["ok"]
    return info.reason, info.metadata["package_kind"]


async def _serve(cloud: Cloud, path: Path, version: str) -> StoredPackage:
    """A compromised cloud: serve this file as ``version`` without verifying it."""
    data = await asyncio.to_thread(path.read_bytes)
    sha = hashlib.sha256(data).hexdigest()
    pid = package_id(version, sha)
    relative = f"packages/{pid}.pkg"
    (cloud.root / "cloud" / "upgrades" / "packages").mkdir(parents=True, exist_ok=True)
    (cloud.root / "cloud" / "upgrades" / relative).write_bytes(data)
    stored = StoredPackage(
        pid,
        FULL,
        version,
        "",
        "",
        sha,
        len(data),
        "1.2.0",
        "",
        cloud.root / relative,
        dt.datetime.now(dt.UTC),
    )
    await cloud.store._insert(stored, relative)
    return stored


def _modified(keys: Keys, version: str) -> bytes:
    data = bytearray(package(keys, version))
    at = data.find(b"hplus_edge.whl", 2000) + 1200  # inside the payload
    data[at] ^= 0x01
    return bytes(data)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("modified", "FILE_MODIFIED"),
        ("unknown key", "UNKNOWN_KEY"),
        ("replayed older", "ROLLBACK"),
        ("truncated", "TRUNCATED"),
    ],
)
async def test_tampered_packages_are_refused_with_their_reason_and_reported(
    cloud: Cloud, tmp_path: Path, case: str, reason: str
) -> None:
    evil = tmp_path / "evil.pkg"
    if case == "modified":
        evil.write_bytes(_modified(cloud.keys, "1.5.0"))
        await _serve(cloud, evil, "1.5.0")
    elif case == "unknown key":
        evil.write_bytes(package(Keys(), "1.5.0"))
        await _serve(cloud, evil, "1.5.0")
    elif case == "replayed older":
        evil.write_bytes(package(cloud.keys, "1.3.0"))
        await _serve(cloud, evil, "1.5.0")  # an old, validly signed build offered as new
    else:
        await cloud.publish("1.5.0")
    rollout = await _rollout(cloud, "1.5.0")
    agent, uplink, slots = _agent(cloud, tmp_path, "1.4.0", None)
    if case == "truncated":
        uplink.cut_after, uplink.cut_times = 0, -1  # every stream ends before any byte

    result = await agent.check_once()

    assert (result.outcome, result.reason) == (Outcome.REFUSED, reason)
    assert slots.idle is None
    assert slots.running().version == "1.4.0"
    assert await _refusal(cloud, uplink) == (reason, "FULL")
    target = await _target(cloud, rollout)
    assert (target.state, target.reason) == ("failed", reason)
    assert not list((tmp_path / "edge" / "upgrades" / "downloads").glob("*.pkg"))


async def test_a_delta_producing_the_wrong_package_falls_back_to_the_full_one(
    cloud: Cloud, tmp_path: Path
) -> None:
    old = await cloud.publish("1.4.0")
    await cloud.publish("1.5.0")
    delta = next(p for p in await cloud.store.packages() if p.kind == "DELTA")
    # Rewrite the delta's header to claim a result it does not produce, keep its row's
    # digest in step (a compromised store), so only the edge's own check can catch it.
    data = delta.path.read_bytes()
    data = data.replace(delta.package_id.encode(), delta.package_id.encode())
    header_end = data.index(b"\n", 12)
    import json

    header = json.loads(data[12:header_end])
    header["to_sha256"] = "0" * 64
    bad = (
        data[:12]
        + json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        + data[header_end:]
    )
    delta.path.write_bytes(bad)

    from cloud.upgrades._schema import PACKAGES

    async with cloud.engine.begin() as conn:
        await conn.execute(
            PACKAGES.update()
            .where(PACKAGES.c.package_id == delta.package_id)
            .values(sha256=hashlib.sha256(bad).hexdigest(), size=len(bad))
        )
    rollout = await _rollout(cloud, "1.5.0")
    agent, uplink, slots = _agent(cloud, tmp_path, "1.4.0", old)

    result = await agent.check_once()

    assert result.outcome is Outcome.SWITCH_REQUESTED
    assert agent.refusals == [("DELTA", "DELTA_RESULT_MISMATCH")]
    full = await cloud.store.full("1.5.0")
    assert [r.package_id for r in uplink.requests] == [delta.package_id, full.package_id]
    reports = await cloud.rollouts.reports(H)
    assert [(r["reason"], r["package_kind"]) for r in reports] == [
        ("DELTA_RESULT_MISMATCH", "DELTA")
    ]
    await slots.switched.wait()
    # A refused delta is evidence, not a failure: the full package made it.
    assert (await _target(cloud, rollout)).state == "succeeded"


async def test_the_switch_waits_for_the_maintenance_window(cloud: Cloud, tmp_path: Path) -> None:
    await cloud.publish("1.5.0")
    real = dt.datetime.now(dt.UTC)
    hhmm = lambda t: t.strftime("%H:%M")  # noqa: E731
    start, end = real + dt.timedelta(minutes=20), real + dt.timedelta(minutes=40)
    await _rollout(cloud, "1.5.0", window=(hhmm(start), hhmm(end)))
    now = [real]
    agent, uplink, slots = _agent(cloud, tmp_path, "1.4.0", None, clock=lambda: now[0])

    first = await agent.check_once()
    assert first.outcome is Outcome.WAITING_FOR_WINDOW
    assert slots.idle is None
    again = await agent.check_once()
    assert again.outcome is Outcome.WAITING_FOR_WINDOW
    assert again.bytes_downloaded == 0
    now[0] = real + dt.timedelta(minutes=30)  # inside, and the manifest still valid
    inside = await agent.check_once()
    assert inside.outcome is Outcome.SWITCH_REQUESTED
    assert inside.bytes_downloaded == 0
    assert len(uplink.requests) == 1
    await slots.switched.wait()


def test_windows_may_wrap_midnight() -> None:
    t = dt.time
    assert in_window(t(2), t(1), t(5))
    assert not in_window(t(5), t(1), t(5))
    assert in_window(t(23), t(22), t(4))
    assert in_window(t(3), t(22), t(4))
    assert not in_window(t(12), t(22), t(4))


async def test_a_failed_health_gate_rolls_back_and_fails_the_hospital(
    cloud: Cloud, tmp_path: Path
) -> None:
    await cloud.publish("1.5.0", broken=True)
    rollout = await _rollout(cloud, "1.5.0")
    agent, _uplink, slots = _agent(cloud, tmp_path, "1.4.0", None)
    assert (await agent.check_once()).outcome is Outcome.SWITCH_REQUESTED
    await slots.switched.wait()
    assert slots.running().version == "1.4.0"
    assert slots.running().standby_version == "1.5.0"
    target = await _target(cloud, rollout)
    assert (target.state, target.reason) == ("failed", "HEALTH_GATE_FAILED")
    # Failed hospitals are not offered the version again.
    assert (await agent.check_once()).outcome is Outcome.UP_TO_DATE


async def test_an_agent_killed_mid_download_resumes_where_it_stopped(
    cloud: Cloud, tmp_path: Path
) -> None:
    await cloud.publish("1.5.0")
    await _rollout(cloud, "1.5.0")
    agent, uplink, _ = _agent(cloud, tmp_path, "1.4.0", None)
    three = asyncio.Event()
    real = uplink.download_upgrade

    async def slow(request: edge_pb2.DownloadUpgradeRequest) -> AsyncIterator[Any]:
        n = 0
        async for chunk in real(request):
            yield chunk
            n += 1
            if n == 3:
                three.set()
                await asyncio.Event().wait()  # the process dies here

    uplink.download_upgrade = slow  # type: ignore[method-assign]
    check = asyncio.create_task(agent.check_once())
    await three.wait()
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check

    # A new process: a new agent over the same data directory.
    again, uplink2, slots = _agent(cloud, tmp_path, "1.4.0", None)
    result = await again.check_once()
    full = await cloud.store.full("1.5.0")
    assert result.outcome is Outcome.SWITCH_REQUESTED
    assert uplink2.requests[0].offset == 3 * 16 * 1024  # three chunks were stored
    assert result.bytes_downloaded == full.size - 3 * 16 * 1024
    await slots.switched.wait()
    assert slots.running().version == "1.5.0"

"""GetUpgradeManifest and DownloadUpgrade over TLS with the hospital credential: what is
offered to whom, resumable chunks with CRC32C, every bound and refusal, and pacing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from cloud.config import UpgradesConfig
from cloud.upgrades import ByteBucket
from hplus.cloud.v1 import common_pb2, edge_pb2, edge_pb2_grpc
from mesh import errors
from mesh.packages import crc32c, package_id
from tests.support.upgrades import Cloud, upgrade_cloud
from tests.support.waiting import until

H, OTHER = "h-001", "h-002"


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    config = UpgradesConfig(
        node_max_bytes_per_second=0, max_downloads_per_hospital=1, check_interval=60.0
    )
    async with upgrade_cloud(tmp_path, [H, OTHER, "h-003"], config=config) as c:
        yield c


def _stub(cloud: Cloud) -> edge_pb2_grpc.EdgeServiceStub:
    return errors.wrap(edge_pb2_grpc.EdgeServiceStub(cloud.channel))


def _meta(cloud: Cloud, hospital: str = H) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {cloud.tokens[hospital]}"),)


async def _manifest(
    cloud: Cloud, hospital: str = H, version: str = "1.4.0", current: str = ""
) -> edge_pb2.GetUpgradeManifestResponse:
    return await _stub(cloud).GetUpgradeManifest(
        edge_pb2.GetUpgradeManifestRequest(
            edge_id=f"e-{hospital}",
            current_version=version,
            current_package_id=current,
            platform="linux-amd64",
        ),
        metadata=_meta(cloud, hospital),
        timeout=10,
    )


async def test_the_manifest_offers_a_delta_with_its_fallback_only_in_open_waves(
    cloud: Cloud,
) -> None:
    old = await cloud.publish("1.4.0")
    await cloud.publish("1.5.0")
    empty = await _manifest(cloud)
    assert not empty.HasField("manifest")
    assert empty.next_check_after.seconds == 60
    info = await cloud.rollouts.create(
        target_version="1.5.0",
        waves="1,100%",
        max_failures=0,
        hospitals=[H, OTHER],
        window=("01:00", "04:30"),
    )
    canary = (await cloud.rollouts.hospitals(info.rollout_id))[0].hospital_id
    later = OTHER if canary == H else H
    assert not (await _manifest(cloud, later)).HasField("manifest")  # its wave is not open

    old_id = package_id("1.4.0", hashlib.sha256(old.read_bytes()).hexdigest())
    m = (await _manifest(cloud, canary, current=old_id)).manifest
    full = await cloud.store.full("1.5.0")
    assert m.rollout_id == info.rollout_id
    assert m.target_version == "1.5.0"
    assert m.target_contract_release == "1.2.0"
    assert m.package.kind == edge_pb2.PACKAGE_KIND_DELTA
    assert m.package.base_version == "1.4.0"
    assert m.fallback_package.package_id == full.package_id
    assert m.fallback_package.digest.value.hex() == full.sha256
    assert m.fallback_package.size_bytes == full.size
    assert (m.window_start.hours, m.window_end.hours, m.window_end.minutes) == (1, 4, 30)
    assert m.health_gate_timeout.seconds == 300
    assert m.HasField("expire_time")
    # An unknown installed package: the full one only.
    plain = (await _manifest(cloud, canary, current="edge-1.4.0-0000")).manifest
    assert plain.package.kind == edge_pb2.PACKAGE_KIND_FULL
    assert not plain.HasField("fallback_package")
    # A hospital not in the rollout is offered nothing; one already current succeeds.
    assert not (await _manifest(cloud, "h-003")).HasField("manifest")
    assert not (await _manifest(cloud, canary, version="1.5.0")).HasField("manifest")
    status = {h.hospital_id: h.state for h in await cloud.rollouts.hospitals(info.rollout_id)}
    assert status[canary] == "succeeded"
    assert (await _manifest(cloud, later)).HasField("manifest")  # the next wave opened


async def _download(
    cloud: Cloud, pid: str, offset: int = 0, **kwargs: object
) -> list[edge_pb2.DownloadUpgradeResponse]:
    call = _stub(cloud).DownloadUpgrade(
        edge_pb2.DownloadUpgradeRequest(edge_id="e", package_id=pid, offset=offset, **kwargs),  # type: ignore[arg-type]
        metadata=_meta(cloud),
        timeout=10,
    )
    return [chunk async for chunk in call]


async def test_chunks_are_contiguous_carry_their_crc32c_and_resume_from_an_offset(
    cloud: Cloud,
) -> None:
    path = await cloud.publish("1.5.0")
    data = path.read_bytes()
    full = await cloud.store.full("1.5.0")
    chunks = await _download(cloud, full.package_id, chunk_size_hint=20_000)
    assert b"".join(c.data for c in chunks) == data
    assert all(len(c.data) == 20_000 for c in chunks[:-1])
    assert all(c.crc32c == crc32c(c.data) and c.total_size == len(data) for c in chunks)
    assert [c.offset for c in chunks] == list(range(0, len(data), 20_000))
    rest = await _download(cloud, full.package_id, offset=50_001)
    assert rest[0].offset == 50_001
    assert b"".join(c.data for c in rest) == data[50_001:]
    assert len(rest[0].data) == 256 * 1024 or len(rest) == 1  # the default chunk
    assert await _download(cloud, full.package_id, offset=len(data)) == []
    tiny = await _download(cloud, full.package_id, chunk_size_hint=10)
    assert len(tiny[0].data) == 16 * 1024  # raised to the smallest chunk
    huge = await _download(cloud, full.package_id, chunk_size_hint=2**30)
    assert len(huge) == 1  # capped at 1 MiB, more than this package


async def _refused(coro: object) -> errors.StatusError:
    with pytest.raises(errors.StatusError) as caught:
        await coro  # type: ignore[misc]
    return caught.value


async def test_every_bad_download_request_is_refused_precisely(cloud: Cloud) -> None:
    await cloud.publish("1.5.0")
    full = await cloud.store.full("1.5.0")
    wrong = common_pb2.Digest(algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=b"\x01" * 32)
    err = await _refused(_download(cloud, full.package_id, expected_digest=wrong))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "DIGEST_CHANGED")
    right = common_pb2.Digest(
        algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=bytes.fromhex(full.sha256)
    )
    assert await _download(cloud, full.package_id, expected_digest=right)
    err = await _refused(_download(cloud, full.package_id, offset=full.size + 1))
    assert (err.code, err.reason) == (grpc.StatusCode.OUT_OF_RANGE, "OFFSET_PAST_END")
    err = await _refused(_download(cloud, "edge-9.9.9-00"))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "NO_SUCH_PACKAGE")
    err = await _refused(_download(cloud, "", offset=-1, chunk_size_hint=-1))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in err.field_violations} == {"package_id", "offset", "chunk_size_hint"}
    err = await _refused(
        _stub(cloud).GetUpgradeManifest(
            edge_pb2.GetUpgradeManifestRequest(edge_id="e", current_version="one"),
            metadata=_meta(cloud),
            timeout=10,
        )
    )
    assert [v.field for v in err.field_violations] == ["current_version"]
    err = await _refused(
        _stub(cloud).GetUpgradeManifest(
            edge_pb2.GetUpgradeManifestRequest(edge_id="e", current_version="1.0.0"),
            metadata=(("authorization", "Bearer hpc1.nope.nope"),),
            timeout=10,
        )
    )
    assert err.code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_hospital_holds_a_bounded_number_of_streams(cloud: Cloud) -> None:
    await cloud.publish("1.5.0")
    full = await cloud.store.full("1.5.0")
    stub = _stub(cloud)
    first = stub.DownloadUpgrade(
        edge_pb2.DownloadUpgradeRequest(
            edge_id="e",
            package_id=full.package_id,
            chunk_size_hint=16384,
            max_bytes_per_second=16384,
        ),
        metadata=_meta(cloud),
        timeout=30,
    )
    iterator = first.__aiter__()
    await iterator.__anext__()  # the first stream holds its place
    err = await _refused(_download(cloud, full.package_id))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_DOWNLOADS")
    assert err.retry_delay == 5.0
    # Another hospital is not affected by this one's streams.
    other = [
        c
        async for c in stub.DownloadUpgrade(
            edge_pb2.DownloadUpgradeRequest(edge_id="e2", package_id=full.package_id),
            metadata=_meta(cloud, OTHER),
            timeout=10,
        )
    ]
    assert sum(len(c.data) for c in other) == full.size
    first.cancel()
    # Once the first stream is gone, the hospital may download again.
    await until(lambda: cloud.handlers.downloads(H) == 0)
    assert sum(len(c.data) for c in await _download(cloud, full.package_id)) == full.size


async def test_the_bucket_paces_every_taker_to_the_rate_together() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = ByteBucket(1000, burst=500, clock=lambda: now[0], sleep=sleep)
    await asyncio.gather(*(bucket.take(1000) for _ in range(5)))
    # 5000 bytes with 500 of burst: 4.5 seconds of waiting, whoever asked.
    assert sum(slept) == pytest.approx(4.5)
    now[0] += 100  # a quiet period refills only up to the burst
    slept.clear()
    await bucket.take(500)
    assert slept == []
    await bucket.take(250)
    assert sum(slept) == pytest.approx(0.25)
    unlimited = ByteBucket(0, clock=lambda: now[0], sleep=sleep)
    await unlimited.take(10**9)
    assert sum(slept) == pytest.approx(0.25)


async def test_health_reports_record_versions_and_say_whether_an_upgrade_waits(
    cloud: Cloud,
) -> None:
    await cloud.publish("1.5.0")
    await cloud.rollouts.create(target_version="1.5.0", waves="100%", max_failures=0, hospitals=[H])
    reply = await _stub(cloud).ReportHealth(
        edge_pb2.ReportHealthRequest(
            edge_id="e-h-001", software_version="1.4.0", contract_release="1.0.0"
        ),
        metadata=_meta(cloud),
        timeout=10,
    )
    assert reply.upgrade_available
    assert (await cloud.rollouts.edge_releases()) == {H: {"1.0.0"}}
    status = edge_pb2.UpgradeHealth()
    status.last_attempt_status.code = grpc.StatusCode.ABORTED.value[0]
    info = error_details_pb2.ErrorInfo(
        reason="HEALTH_GATE_FAILED", metadata={"version": "1.5.0", "package_kind": "FULL"}
    )
    status.last_attempt_status.details.add().Pack(info)
    status.last_attempt_time.GetCurrentTime()
    reply = await _stub(cloud).ReportHealth(
        edge_pb2.ReportHealthRequest(
            edge_id="e-h-001", software_version="1.4.0", contract_release="1.0.0", upgrade=status
        ),
        metadata=_meta(cloud),
        timeout=10,
    )
    assert not reply.upgrade_available  # failed: not offered again in this rollout
    assert [r["reason"] for r in await cloud.rollouts.reports(H)] == ["HEALTH_GATE_FAILED"]

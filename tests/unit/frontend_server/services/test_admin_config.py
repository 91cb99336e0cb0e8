"""EdgeAdminService's profile reads and validation, through a real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from frontend_server.admin import EdgeAdminServicer
from frontend_server.profile import load_profile
from frontend_server.tasks import KindStats, QueueStats
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc, task_pb2

PROFILE = load_profile(
    Path(__file__).resolve().parents[4]
    / "frontend_server"
    / "profiles"
    / "city-first-hospital.toml"
)


async def stats() -> QueueStats:
    return QueueStats(
        backlog=3,
        running=1,
        parked=0,
        oldest_queued_age_seconds=2.5,
        succeeded_last_hour=7,
        failed_last_hour=0,
        drain_rate_per_second=2.0,
        by_kind={
            "retrieve_archived_report": KindStats(
                backlog=3, running=1, parked=0, oldest_queued_age_seconds=2.5
            )
        },
    )


@pytest.fixture
async def admin() -> AsyncIterator[admin_pb2_grpc.EdgeAdminServiceStub]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    admin_pb2_grpc.add_EdgeAdminServiceServicer_to_server(
        EdgeAdminServicer(
            hospital_id="city-first",
            edge_id="e1",
            services=lambda: ["hplus.hospital.v1.EdgeAdminService"],
            profile=PROFILE,
            queue_stats=stats,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield admin_pb2_grpc.EdgeAdminServiceStub(channel)
    await server.stop(None)


async def test_edge_info_reports_the_profile_and_the_queue(
    admin: admin_pb2_grpc.EdgeAdminServiceStub,
) -> None:
    info = await admin.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=5)
    assert (info.config.profile_id, info.config.digest) == ("h-0001", PROFILE.digest)
    assert info.config.template_id == "acme-rest-v3"
    assert (info.queue.backlog, info.queue.running) == (3, 1)
    assert info.queue.oldest_queued_age.ToMilliseconds() == 2500
    assert info.queue.by_kind[0].kind == task_pb2.TASK_KIND_RETRIEVE_ARCHIVED_REPORT


async def test_get_config_returns_sections_without_secrets(
    admin: admin_pb2_grpc.EdgeAdminServiceStub,
) -> None:
    whole = await admin.GetConfig(admin_pb2.GetConfigRequest(), timeout=5)
    content = json_format.MessageToDict(whole.profile.content)
    assert content["his"]["rest"]["token"].startswith("secret://")
    assert whole.profile.info.digest == PROFILE.digest
    part = await admin.GetConfig(
        admin_pb2.GetConfigRequest(read_mask=field_mask_pb2.FieldMask(paths=["tasks"])),
        timeout=5,
    )
    assert set(json_format.MessageToDict(part.profile.content)) == {"tasks"}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await admin.GetConfig(
            admin_pb2.GetConfigRequest(read_mask=field_mask_pb2.FieldMask(paths=["nope"])),
            timeout=5,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _content(**sections: object) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(sections)
    return out


async def test_apply_config_validates_against_the_digest(
    admin: admin_pb2_grpc.EdgeAdminServiceStub,
) -> None:
    faster = _content(tasks={"drain_rate_per_second": 4.0, "max_concurrency": 2})
    mask = field_mask_pb2.FieldMask(paths=["tasks"])
    checked = await admin.ApplyConfig(
        admin_pb2.ApplyConfigRequest(
            idempotency_key="a1",
            expected_digest=PROFILE.digest,
            content=faster,
            update_mask=mask,
            validate_only=True,
        ),
        timeout=5,
    )
    assert not checked.applied
    assert checked.profile.digest.startswith("sha256:")
    assert checked.profile.digest != PROFILE.digest

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await admin.ApplyConfig(
            admin_pb2.ApplyConfigRequest(
                idempotency_key="a2", expected_digest="sha256:old", content=faster,
                update_mask=mask, validate_only=True,
            ),
            timeout=5,
        )  # fmt: skip
    assert stale.value.code() == grpc.StatusCode.ABORTED
    status = rpc_status.from_call(stale.value)
    assert status is not None
    reason = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(reason)
    assert reason.reason == "CONFIG_DIGEST_MISMATCH"

    broken = _content(tasks={"drain_rate_per_second": "fast"})
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await admin.ApplyConfig(
            admin_pb2.ApplyConfigRequest(
                idempotency_key="a3", expected_digest=PROFILE.digest, content=broken,
                update_mask=mask, validate_only=True,
            ),
            timeout=5,
        )  # fmt: skip
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(invalid.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    # The violation names the parameter's path inside the request and what is wrong.
    assert bad.field_violations[0].field == "content.tasks.drain_rate_per_second"
    assert bad.field_violations[0].description == "wrong type: expected number, got string 'fast'"
    assert invalid.value.details() == (
        "invalid request: content.tasks.drain_rate_per_second: wrong type: expected number, "
        "got string 'fast'"
    )

    with pytest.raises(grpc.aio.AioRpcError) as live:
        await admin.ApplyConfig(
            admin_pb2.ApplyConfigRequest(
                idempotency_key="a4", expected_digest=PROFILE.digest, content=faster,
                update_mask=mask,
            ),
            timeout=5,
        )  # fmt: skip
    assert live.value.code() == grpc.StatusCode.UNIMPLEMENTED

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

import cloud.registry
from cloud.registry import RegistryServicer, ReleaseStore, Role, Selector, TokenStore
from cloud.registry._schema import AUDIT, TOKENS
from hplus.cloud.v1 import registry_pb2
from tests.unit.cloud.registry.conftest import Registry, start_server, v1
from tests.unit.cloud.registry.helpers import fails


async def test_reads_need_a_token_writes_need_a_release_manager(
    registry: Registry, tmp_path: Path
) -> None:
    stub = registry.stub
    listing = registry_pb2.ListReleasesRequest()
    push = registry_pb2.PushReleaseRequest(version="1.0.0", image=v1(tmp_path))
    await fails(stub.ListReleases(listing), grpc.StatusCode.UNAUTHENTICATED)
    for bad in ("Bearer nonsense", "Bearer " + registry.manager[:-2], "Basic abc"):
        await fails(
            stub.ListReleases(listing, metadata=(("authorization", bad),)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
    status = await fails(
        stub.PushRelease(push, metadata=registry.svc), grpc.StatusCode.PERMISSION_DENIED
    )
    assert "release-manager" in status.message
    await fails(
        stub.SetLabel(
            registry_pb2.SetLabelRequest(
                label="x", release=registry_pb2.ReleaseSelector(version="1.0.0")
            ),
            metadata=registry.svc,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await stub.ListReleases(listing, metadata=registry.svc)
    await stub.PushRelease(push, metadata=registry.rm)
    await stub.ListReleases(listing, metadata=registry.rm)  # managers may read too


async def test_revoked_token_is_refused_and_tokens_are_stored_hashed(
    registry: Registry,
) -> None:
    issued = await registry.tokens.issue("ci", Role.SERVICE, actor="ops")
    md = (("authorization", f"Bearer {issued.token}"),)
    await registry.stub.ListReleases(registry_pb2.ListReleasesRequest(), metadata=md)
    await registry.tokens.revoke(issued.token_id, actor="ops")
    await fails(
        registry.stub.ListReleases(registry_pb2.ListReleasesRequest(), metadata=md),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    secret = issued.token.split(".", 2)[2]
    async with registry.engine.connect() as conn:
        rows = (await conn.execute(sa.select(TOKENS))).all()
        audit = (await conn.execute(sa.select(AUDIT.c.action, AUDIT.c.target))).all()
    assert all(secret not in repr(tuple(r)) for r in rows)
    assert ("token.revoke", issued.token_id) in [tuple(a) for a in audit]
    infos = {t.token_id: t for t in await registry.tokens.list()}
    assert infos[issued.token_id].revoked_at is not None
    with pytest.raises(cloud.registry.NotFound):
        await registry.tokens.revoke(issued.token_id, actor="ops")
    with pytest.raises(cloud.registry.InvalidArgument):
        await registry.tokens.issue("bad name!", Role.SERVICE, actor="ops")


class _BrokenStore(ReleaseStore):
    async def get(self, selector: Selector, *, full: bool = False, changes: bool = False):  # type: ignore[no-untyped-def]
        raise RuntimeError("db password is hunter2")


async def test_unexpected_errors_are_internal_and_generic(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    servicer = RegistryServicer(_BrokenStore(registry.engine), TokenStore(registry.engine))
    server, port = await start_server(servicer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            from hplus.cloud.v1 import registry_pb2_grpc

            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            status = await fails(
                stub.GetRelease(
                    registry_pb2.GetReleaseRequest(
                        release=registry_pb2.ReleaseSelector(version="1.0.0")
                    ),
                    metadata=registry.svc,
                ),
                grpc.StatusCode.INTERNAL,
            )
    finally:
        await server.stop(None)
    assert status.message.startswith("internal error (correlation id ")
    assert "hunter2" not in status.message
    correlation = status.message.removeprefix("internal error (correlation id ").rstrip(")")
    assert f"RegistryService.GetRelease failed (correlation id {correlation})" in caplog.text
    assert "hunter2" in caplog.text  # logged for us, not sent to the caller


def test_public_surface_is_pinned() -> None:
    assert cloud.registry.__all__ == [
        "DEFAULT_WINDOW",
        "ERROR_DOMAIN",
        "MAX_IMAGE_BYTES",
        "MAX_MESSAGE_BYTES",
        "AlreadyExists",
        "AuditEntry",
        "BreakingChanges",
        "CensusSource",
        "Conflict",
        "FailedPrecondition",
        "FieldUsage",
        "Image",
        "InvalidArgument",
        "IssuedToken",
        "LabelInfo",
        "Lifecycle",
        "NotFound",
        "PermissionDenied",
        "Principal",
        "PushOutcome",
        "PushPolicy",
        "RegistryError",
        "RegistryServicer",
        "ReleaseInfo",
        "ReleaseResolver",
        "ReleaseStatus",
        "ReleaseStore",
        "Role",
        "Selector",
        "TokenInfo",
        "TokenStore",
        "Unauthenticated",
        "Unimplemented",
        "build_registry",
        "canonical_image",
        "load_image",
        "migrate_registry",
        "parse_version",
    ]
    for name in cloud.registry.__all__:
        assert hasattr(cloud.registry, name)


async def test_census_is_unimplemented_until_a_source_is_plugged_in(
    registry: Registry, tmp_path: Path
) -> None:
    await fails(
        registry.stub.GetFieldCensus(registry_pb2.GetFieldCensusRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await fails(
        registry.stub.GetFieldCensus(registry_pb2.GetFieldCensusRequest(), metadata=registry.svc),
        grpc.StatusCode.UNIMPLEMENTED,
    )

    async def census(
        request: registry_pb2.GetFieldCensusRequest,
    ) -> registry_pb2.GetFieldCensusResponse:
        return registry_pb2.GetFieldCensusResponse(sample_rate=0.5)

    servicer = RegistryServicer(
        ReleaseStore(registry.engine), TokenStore(registry.engine), census=census
    )
    server, port = await start_server(servicer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            from hplus.cloud.v1 import registry_pb2_grpc

            reply = await registry_pb2_grpc.RegistryServiceStub(channel).GetFieldCensus(
                registry_pb2.GetFieldCensusRequest(), metadata=registry.svc
            )
    finally:
        await server.stop(None)
    assert reply.sample_rate == 0.5

"""EdgeService on a real node over TLS: the hospital credential on every call, the bounds, the
idempotent delivery of task results, the expiry of looked-up results."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import any_pb2

from cloud.config import NodeConfig
from cloud.edgeconfig import EdgeApiConfig
from cloud.node import CloudNode
from cloud.reports._schema import LOOKUPS
from hplus.cloud.v1 import edge_pb2, edge_pb2_grpc
from hplus.hospital.v1 import report_pb2
from mesh import errors
from tests.integration.hospital_env import FAST


@asynccontextmanager
async def node_with(
    tmp_path: Path, edge_api: EdgeApiConfig | None = None
) -> AsyncIterator[CloudNode]:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path / "cloud",
        node_id="n1",
        grace_seconds=1.0,
        edge_api=edge_api or EdgeApiConfig(),
    )
    async with CloudNode(config, tunnel_config=FAST) as node:
        yield node


@asynccontextmanager
async def stub_for(node: CloudNode) -> AsyncIterator[edge_pb2_grpc.EdgeServiceAsyncStub]:
    assert node.tls is not None
    creds = grpc.ssl_channel_credentials(root_certificates=node.tls.ca_cert.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{node.port}", creds) as channel:
        yield errors.wrap(edge_pb2_grpc.EdgeServiceStub(channel))


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def health(edge_id: str = "edge-1", **fields: object) -> edge_pb2.ReportHealthRequest:
    return edge_pb2.ReportHealthRequest(request_id=str(uuid.uuid4()), edge_id=edge_id, **fields)  # type: ignore[arg-type]


async def pending_lookup(node: CloudNode, hospital_id: str) -> str:
    """A lookup the node submitted to ``hospital_id`` (as ReportApi records it)."""
    assert node.reports is not None
    key = f"rpt-{uuid.uuid4().hex}"
    now = dt.datetime.now(dt.UTC)
    async with node.reports._engine.begin() as conn:
        await conn.execute(
            LOOKUPS.insert().values(
                lookup_key=key,
                subject=uuid.uuid4().hex,
                hospital_id=hospital_id,
                account_id="a1",
                kind="list",
                state="PENDING",
                task_id="t-" + key[-6:],
                submitted_at=now,
                expires_at=now + dt.timedelta(hours=1),
                error="",
            )
        )
    return key


def listed_result(task_id: str, key: str, *, title: str = "血常规") -> edge_pb2.TaskResult:
    packed = any_pb2.Any()
    packed.Pack(
        report_pb2.ListReportsResponse(
            reports=[report_pb2.ReportSummary(report_id="R1", title=title)]
        )
    )
    return edge_pb2.TaskResult(
        task_id=task_id,
        idempotency_key=key,
        task_kind="TASK_KIND_CUSTOM",
        outcome=edge_pb2.TASK_OUTCOME_SUCCEEDED,
        result=packed,
    )


async def test_every_call_needs_a_valid_credential_of_its_own_hospital(tmp_path: Path) -> None:
    async with node_with(tmp_path) as node, stub_for(node) as stub:
        assert node.credentials is not None
        h1 = await node.credentials.issue("h1")
        h2 = await node.credentials.issue("h2")
        with pytest.raises(errors.Unauthenticated) as missing:
            await stub.ReportHealth(health(), timeout=5)
        assert missing.value.reason == "CREDENTIAL_MISSING"
        forged = f"hpc1.{h1.credential_id}.not-the-secret"
        with pytest.raises(errors.Unauthenticated) as wrong:
            await stub.ReportHealth(health(), metadata=md(forged), timeout=5)
        assert wrong.value.reason == "CREDENTIAL_INVALID"

        reply = await stub.ReportHealth(health("edge-1"), metadata=md(h1.token), timeout=5)
        assert reply.next_report_interval.seconds == 30
        assert reply.HasField("server_time")
        # edge-1 is h1's: h2 cannot speak for it.
        with pytest.raises(errors.PermissionDenied) as other:
            await stub.ReportHealth(health("edge-1"), metadata=md(h2.token), timeout=5)
        assert other.value.reason == "EDGE_OF_ANOTHER_HOSPITAL"
        with pytest.raises(errors.InvalidArgument) as bad_id:
            await stub.ReportHealth(health(""), metadata=md(h2.token), timeout=5)
        assert [v.field for v in bad_id.value.field_violations] == ["edge_id"]
        # A result for h1's lookup pushed by h2 finds nothing.
        key = await pending_lookup(node, "h1")
        refused = await stub.ReportTaskResults(
            edge_pb2.ReportTaskResultsRequest(
                request_id=str(uuid.uuid4()), edge_id="edge-2", results=[listed_result("t1", key)]
            ),
            metadata=md(h2.token),
            timeout=5,
        )
        assert list(refused.acknowledged_task_ids) == []
        assert [r.status.code for r in refused.rejections] == [grpc.StatusCode.NOT_FOUND.value[0]]

        # Revocation is effective on the very next call.
        await node.credentials.revoke(h1.credential_id)
        with pytest.raises(errors.Unauthenticated):
            await stub.ReportHealth(health("edge-1"), metadata=md(h1.token), timeout=5)

        # The upgrade RPCs are the node's upgrade handlers, behind the same authentication.
        answer = await stub.GetUpgradeManifest(
            edge_pb2.GetUpgradeManifestRequest(edge_id="edge-2", current_version="1.0.0"),
            metadata=md(h2.token),
            timeout=5,
        )
        assert not answer.HasField("manifest")  # no rollout: nothing to install
        with pytest.raises(errors.NotFound) as missing:
            async for _ in stub.DownloadUpgrade(
                edge_pb2.DownloadUpgradeRequest(edge_id="edge-2", package_id="p"),
                metadata=md(h2.token),
                timeout=5,
            ):
                pass
        assert missing.value.reason == "NO_SUCH_PACKAGE"
        with pytest.raises(errors.Unauthenticated):
            await stub.GetUpgradeManifest(
                edge_pb2.GetUpgradeManifestRequest(edge_id="edge-1", current_version="1.0.0"),
                metadata=md(h1.token),
                timeout=5,
            )


async def test_results_are_delivered_idempotently(tmp_path: Path) -> None:
    async with node_with(tmp_path) as node, stub_for(node) as stub:
        assert node.credentials is not None
        assert node.reports is not None
        h1 = await node.credentials.issue("h1")
        key = await pending_lookup(node, "h1")
        unknown = listed_result("t9", "rpt-" + uuid.uuid4().hex)
        wrong_type = listed_result("t8", key)
        wrong_type.result.Pack(report_pb2.GetReportRequest(report_id="R1"))
        request = edge_pb2.ReportTaskResultsRequest(
            request_id=str(uuid.uuid4()),
            edge_id="edge-1",
            results=[wrong_type, listed_result("t1", key), unknown],
        )
        first = await stub.ReportTaskResults(request, metadata=md(h1.token), timeout=5)
        assert list(first.acknowledged_task_ids) == ["t1"]
        assert {r.task_id: r.status.code for r in first.rejections} == {
            "t8": grpc.StatusCode.INVALID_ARGUMENT.value[0],
            "t9": grpc.StatusCode.NOT_FOUND.value[0],
        }
        # The same batch again (an edge that never saw the answer): the same answer.
        again = await stub.ReportTaskResults(request, metadata=md(h1.token), timeout=5)
        assert again == first
        # The same result in a new batch (an edge killed before it recorded the ack): acked,
        # and the first delivery is kept.
        later = await stub.ReportTaskResults(
            edge_pb2.ReportTaskResultsRequest(
                request_id=str(uuid.uuid4()),
                edge_id="edge-1",
                results=[listed_result("t1", key, title="另一个")],
            ),
            metadata=md(h1.token),
            timeout=5,
        )
        assert list(later.acknowledged_task_ids) == ["t1"]
        async with node.reports._engine.connect() as conn:
            row = (await conn.execute(sa.select(LOOKUPS).where(LOOKUPS.c.lookup_key == key))).one()
        assert row.state == "DONE"
        stored = report_pb2.ListReportsResponse.FromString(row.result)
        assert [r.title for r in stored.reports] == ["血常规"]


async def test_bounds_end_only_the_offending_call(tmp_path: Path) -> None:
    bounds = EdgeApiConfig(
        max_results_per_call=3,
        max_results_bytes=3000,
        max_result_bytes=300,
        max_request_bytes=6000,
        calls_per_minute=8,
    )
    async with node_with(tmp_path, bounds) as node, stub_for(node) as stub:
        assert node.credentials is not None
        token = (await node.credentials.issue("h1")).token
        key = await pending_lookup(node, "h1")

        def batch(*results: edge_pb2.TaskResult) -> edge_pb2.ReportTaskResultsRequest:
            return edge_pb2.ReportTaskResultsRequest(
                request_id=str(uuid.uuid4()), edge_id="edge-1", results=results
            )

        with pytest.raises(errors.InvalidArgument) as many:
            await stub.ReportTaskResults(
                batch(*(listed_result(f"t{i}", key) for i in range(4))),
                metadata=md(token),
                timeout=5,
            )
        assert many.value.reason == "TOO_MANY_RESULTS"
        assert [v.field for v in many.value.field_violations] == ["results"]
        big = listed_result("big", key, title="x" * 400)
        split = await stub.ReportTaskResults(
            batch(big, listed_result("t1", key)), metadata=md(token), timeout=5
        )
        assert list(split.acknowledged_task_ids) == ["t1"]
        assert [(r.task_id, r.status.code) for r in split.rejections] == [
            ("big", grpc.StatusCode.INVALID_ARGUMENT.value[0])
        ]
        assert "results[0].result" in split.rejections[0].status.message
        with pytest.raises(errors.InvalidArgument) as heavy:
            await stub.ReportTaskResults(
                batch(*(listed_result(f"h{i}", key, title="y" * 1100) for i in range(3))),
                metadata=md(token),
                timeout=5,
            )
        assert heavy.value.reason == "RESULTS_TOO_LARGE"
        with pytest.raises(errors.ResourceExhausted) as large:
            await stub.ReportHealth(
                health("edge-1", software_version="9" * 7000),
                metadata=md(token),
                timeout=5,
            )
        assert large.value.reason == "EDGE_REQUEST_TOO_LARGE"
        # 5 calls so far; the rate allows 8 a minute (plus what refills meanwhile).
        refused: list[errors.ResourceExhausted] = []
        passed = 0
        for _ in range(6):
            try:
                await stub.ReportHealth(health(), metadata=md(token), timeout=5)
            except errors.ResourceExhausted as err:
                refused.append(err)
                break
            passed += 1
        assert 3 <= passed <= 5
        assert [r.reason for r in refused] == ["EDGE_RATE_LIMITED"]
        assert (refused[0].retry_delay or 0) > 0
        # Another hospital is not affected.
        other = (await node.credentials.issue("h2")).token
        await stub.ReportHealth(health("edge-9"), metadata=md(other), timeout=5)


async def test_looked_up_results_are_purged_after_their_ttl(tmp_path: Path) -> None:
    async with node_with(tmp_path) as node:
        assert node.reports is not None
        expired = await pending_lookup(node, "h1")
        kept = await pending_lookup(node, "h1")
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        async with node.reports._engine.begin() as conn:
            await conn.execute(
                LOOKUPS.update().where(LOOKUPS.c.lookup_key == expired).values(expires_at=past)
            )
        await node.reports.purge()  # (the node's purge loop may have been first)
        async with node.reports._engine.connect() as conn:
            keys = {r.lookup_key for r in await conn.execute(sa.select(LOOKUPS.c.lookup_key))}
        assert keys == {kept}
        # A result for the purged lookup is unknown now: the edge drops it.
        verdict = await node.reports.on_result("h1", listed_result("t1", expired))
        assert verdict.code is grpc.StatusCode.NOT_FOUND  # type: ignore[union-attr]
        # A stored result lives result_ttl from its arrival.
        before = dt.datetime.now(dt.UTC)
        await node.reports.on_result("h1", listed_result("t2", kept))
        async with node.reports._engine.connect() as conn:
            row = (await conn.execute(sa.select(LOOKUPS).where(LOOKUPS.c.lookup_key == kept))).one()
        expires = row.expires_at.replace(tzinfo=dt.UTC)
        ttl = node.config.reports.result_ttl
        assert (
            before + dt.timedelta(seconds=ttl - 5)
            <= expires
            <= before + dt.timedelta(seconds=ttl + 5)
        )

"""The failure store and recorder: bounds, grouping, the dashboard's column, decoding."""

from __future__ import annotations

import time
import uuid

import grpc
from google.rpc import status_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

import cloud.attribution
from cloud.attribution import (
    ERRORS_FIELD,
    FailureRecorder,
    FailureRow,
    FailureStore,
    decode,
    errors_by_owner,
    migrate_attribution,
)
from mesh import errors


def row(
    owner: str,
    hospital: str = "h1",
    *,
    at: float | None = None,
    reason: str = "R",
    request_id: str = "",
    side: str = "api",
) -> FailureRow:
    return FailureRow(
        at=time.time() if at is None else at,
        node="n1",
        hospital_id=hospital,
        side=side,
        method="/x.Y/Z",
        code="UNAVAILABLE",
        error_reason="",
        error_domain="",
        cause="",
        owner=owner,
        reason=reason,
        hop="his",
        vendor="",
        request_id=request_id or uuid.uuid4().hex,
    )


async def test_rows_are_bounded_by_count_and_age(db_engine: AsyncEngine) -> None:
    await migrate_attribution(db_engine)
    store = FailureStore(db_engine, max_rows=5, retention=60.0, prune_interval=0.0)
    await store.write([row("app", at=time.time() - 120)])  # past the retention
    await store.write([row("app") for _ in range(8)])
    assert len(await store.rows(since=0)) == 5


async def test_groups_by_owner_and_hospital(db_engine: AsyncEngine) -> None:
    await migrate_attribution(db_engine)
    store = FailureStore(db_engine)
    await store.write(
        [
            row("his_vendor", "h1", reason="HIS_DOWN"),
            row("his_vendor", "h1", reason="HIS_SLOW"),
            # An app's call and the node's call to the edge it made: one failed request.
            row("his_vendor", "h1", reason="HIS_DOWN", request_id="r1"),
            row("his_vendor", "h1", reason="HIS_DOWN", request_id="r1", side="hospital"),
            row("app", "h2", reason="BAD_CREDENTIAL"),
            row("app", "", reason="BAD_CREDENTIAL"),
            row("app", "h2", at=time.time() - 7200),
        ]
    )
    since = time.time() - 3600
    groups = await store.groups(since=since)
    assert [(g.owner, g.hospital_id, g.count) for g in groups] == [
        ("his_vendor", "h1", 3),
        ("app", "", 1),
        ("app", "h2", 1),
    ]
    assert groups[0].reasons == {"HIS_DOWN": 2, "HIS_SLOW": 1}
    assert groups[0].calls == 4
    only = await store.groups(since=since, owner="app", hospital_id="h2")
    assert [(g.owner, g.hospital_id, g.count) for g in only] == [("app", "h2", 1)]
    column = await errors_by_owner(store)()
    # The column counts calls (rows), like the node's RPC metrics.
    assert column == {"h1": {ERRORS_FIELD: "his_vendor 4"}, "h2": {ERRORS_FIELD: "app 1"}}


async def test_the_recorder_attributes_and_writes_in_batches(db_engine: AsyncEngine) -> None:
    await migrate_attribution(db_engine)
    recorder = FailureRecorder(FailureStore(db_engine), node="n1", capacity=3)
    down = errors.Unavailable(
        "x",
        reason="HIS_UNAVAILABLE",
        domain="hospital.hplus",
        metadata={"cause": "connect_timeout", "dialect": "rest"},
    )
    noted = recorder.note(side="hospital", method="/m", hospital_id="h1", error=down)
    assert (noted.owner, noted.reason, noted.vendor, noted.cause) == (
        "hospital_network",
        "HIS_UNREACHABLE",
        "rest",
        "connect_timeout",
    )
    for _ in range(3):
        recorder.note(side="api", method="/m", hospital_id="h1", error=errors.Internal("bug"))
    assert recorder.dropped == 1  # over the queue's bound: counted (and logged), not lost silently
    assert await recorder.flush() == 3
    stored = await recorder.store.rows(since=0)
    assert sorted(r.owner for r in stored) == [
        "cloud_platform",
        "cloud_platform",
        "hospital_network",
    ]


def test_decode_reads_the_details_trailer_and_checks_its_code() -> None:
    sent = errors.Unavailable("down", reason="TUNNEL_LOST", domain="tunnel.hplus").to_status()
    trailer = ("grpc-status-details-bin", sent.SerializeToString())
    found = decode(grpc.StatusCode.UNAVAILABLE, "down", [("x", "y"), trailer])
    assert (found.reason, found.domain) == ("TUNNEL_LOST", "tunnel.hplus")
    # A trailer whose code disagrees with the call's is not believed.
    other = decode(grpc.StatusCode.INTERNAL, "down", [trailer])
    assert (type(other), other.reason) == (errors.Internal, "")
    garbage = decode(grpc.StatusCode.UNAVAILABLE, "x", [("grpc-status-details-bin", b"\xff\x00")])
    assert garbage.reason == ""
    assert status_pb2.Status.FromString(trailer[1]).code == 14


def test_exports() -> None:
    assert sorted(cloud.attribution.__all__) == [
        "DEFAULT_MAX_ROWS",
        "DEFAULT_RETENTION_SECONDS",
        "ERRORS_FIELD",
        "FailureRecorder",
        "FailureRow",
        "FailureStore",
        "Group",
        "decode",
        "errors_by_owner",
        "migrate_attribution",
    ]

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from cloud.registry import (
    FailedPrecondition,
    Lifecycle,
    ReleaseResolver,
    ReleaseStatus,
    ReleaseStore,
)
from hplus.cloud.v1 import common_pb2, registry_pb2
from tests.unit.cloud.registry.conftest import ECHO_V1, Registry, image_of, v1, v1_plus
from tests.unit.cloud.registry.helpers import detail, fails, field_violation

ACTIVE = registry_pb2.RELEASE_LIFECYCLE_ACTIVE
DEPRECATED = registry_pb2.RELEASE_LIFECYCLE_DEPRECATED
RETIRED = registry_pb2.RELEASE_LIFECYCLE_RETIRED


def _sel(version: str) -> registry_pb2.ReleaseSelector:
    return registry_pb2.ReleaseSelector(version=version)


async def _two(registry: Registry, tmp_path: Path) -> tuple[common_pb2.Digest, common_pb2.Digest]:
    a = await registry.push("1.0.0", v1(tmp_path))
    b = await registry.push("1.1.0", v1_plus(tmp_path))
    return a.release.digest, b.release.digest


async def test_labels_compare_and_set(registry: Registry, tmp_path: Path) -> None:
    d1, d2 = await _two(registry, tmp_path)
    stub, md = registry.stub, registry.rm
    made = await stub.SetLabel(
        registry_pb2.SetLabelRequest(label="stable", release=_sel("1.0.0"), create_only=True),
        metadata=md,
    )
    assert made.label.version == "1.0.0"
    assert made.previous_version == ""
    assert made.label.update_actor == "alice"
    await fails(
        stub.SetLabel(
            registry_pb2.SetLabelRequest(label="stable", release=_sel("1.1.0"), create_only=True),
            metadata=md,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    # A move that expects the wrong current target loses.
    await fails(
        stub.SetLabel(
            registry_pb2.SetLabelRequest(label="stable", release=_sel("1.1.0"), expected_digest=d2),
            metadata=md,
        ),
        grpc.StatusCode.ABORTED,
    )
    moved = await stub.SetLabel(
        registry_pb2.SetLabelRequest(label="stable", release=_sel("1.1.0"), expected_digest=d1),
        metadata=md,
    )
    assert moved.label.version == "1.1.0"
    assert moved.previous_version == "1.0.0"
    # Copy one label to another by selecting with a label.
    copied = await stub.SetLabel(
        registry_pb2.SetLabelRequest(
            label="canary", release=registry_pb2.ReleaseSelector(label="stable")
        ),
        metadata=md,
    )
    assert copied.label.version == "1.1.0"
    got = await stub.GetRelease(
        registry_pb2.GetReleaseRequest(release=_sel("1.1.0")), metadata=registry.svc
    )
    assert list(got.release.labels) == ["canary", "stable"]

    # Two concurrent compare-and-set moves from the same state: exactly one wins.
    third = ECHO_V1.replace(
        "string text = 1;\n}}\n", "string text = 1;\n  int32 count = 2;\n  int32 more = 3;\n}}\n"
    )
    await registry.push("1.2.0", image_of(tmp_path, third))
    results = await asyncio.gather(
        *(
            stub.SetLabel(
                registry_pb2.SetLabelRequest(label="stable", release=_sel(v), expected_digest=d2),
                metadata=md,
            )
            for v in ("1.0.0", "1.2.0")
        ),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, registry_pb2.SetLabelResponse)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1, results
    assert [e.code() for e in lost] == [grpc.StatusCode.ABORTED]
    now = await stub.GetRelease(
        registry_pb2.GetReleaseRequest(release=registry_pb2.ReleaseSelector(label="stable")),
        metadata=registry.svc,
    )
    assert now.release.version == won[0].label.version
    # Retrying the winning move is idempotent.
    again_won = await stub.SetLabel(
        registry_pb2.SetLabelRequest(
            label="stable", release=_sel(won[0].label.version), expected_digest=d2
        ),
        metadata=md,
    )
    assert again_won.label.version == won[0].label.version
    await stub.SetLabel(
        registry_pb2.SetLabelRequest(label="stable", release=_sel("1.0.0")), metadata=md
    )

    deleted = await stub.DeleteLabel(
        registry_pb2.DeleteLabelRequest(label="canary", request_id="req-1"), metadata=md
    )
    assert deleted.label.version == "1.1.0"
    again = await stub.DeleteLabel(
        registry_pb2.DeleteLabelRequest(label="canary", request_id="req-1"), metadata=md
    )
    assert again.label == deleted.label
    status = await fails(
        stub.DeleteLabel(registry_pb2.DeleteLabelRequest(label="canary"), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert detail(status, error_details_pb2.ResourceInfo).resource_name == "canary"
    await fails(
        stub.DeleteLabel(
            registry_pb2.DeleteLabelRequest(label="stable", expected_digest=d2), metadata=md
        ),
        grpc.StatusCode.ABORTED,
    )
    status = await fails(
        stub.SetLabel(
            registry_pb2.SetLabelRequest(label="Not_OK", release=_sel("1.0.0")), metadata=md
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violation(status) == "label"
    await fails(
        stub.SetLabel(registry_pb2.SetLabelRequest(label="x", release=_sel("7.0.0")), metadata=md),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_lifecycle_transitions(registry: Registry, tmp_path: Path) -> None:
    await _two(registry, tmp_path)
    stub, md = registry.stub, registry.rm

    async def move(version: str, state: int) -> registry_pb2.Release:
        reply = await stub.SetLifecycle(
            registry_pb2.SetLifecycleRequest(version=version, lifecycle=state, reason="test"),  # type: ignore[arg-type]
            metadata=md,
        )
        return reply.release

    assert (await move("1.0.0", DEPRECATED)).lifecycle == DEPRECATED
    assert (await move("1.0.0", ACTIVE)).lifecycle == ACTIVE
    assert (await move("1.0.0", DEPRECATED)).lifecycle == DEPRECATED
    resolver = ReleaseResolver(registry.engine, window_size=1)
    assert await resolver.status("1.0.0") is ReleaseStatus.DEPRECATED
    assert await resolver.in_window("1.1.0")
    assert not await resolver.in_window("1.0.0")  # window of 1
    assert await ReleaseResolver(registry.engine).in_window("1.0.0")

    await stub.SetLabel(
        registry_pb2.SetLabelRequest(label="old", release=_sel("1.0.0")), metadata=md
    )
    status = await fails(move("1.0.0", RETIRED), grpc.StatusCode.FAILED_PRECONDITION)
    assert detail(status, error_details_pb2.ErrorInfo).reason == "RELEASE_LABELLED"
    await stub.DeleteLabel(registry_pb2.DeleteLabelRequest(label="old"), metadata=md)
    retired = await move("1.0.0", RETIRED)
    assert retired.lifecycle == RETIRED
    assert await resolver.status("1.0.0") is ReleaseStatus.RETIRED
    assert await resolver.status("9.0.0") is ReleaseStatus.UNKNOWN
    assert not await ReleaseResolver(registry.engine).in_window("1.0.0")
    for state in (ACTIVE, DEPRECATED):
        status = await fails(move("1.0.0", state), grpc.StatusCode.FAILED_PRECONDITION)
        assert detail(status, error_details_pb2.ErrorInfo).reason == "RELEASE_RETIRED"
    status = await fails(
        stub.SetLabel(
            registry_pb2.SetLabelRequest(label="old", release=_sel("1.0.0")), metadata=md
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert detail(status, error_details_pb2.ErrorInfo).reason == "RELEASE_RETIRED"
    # A retired release stays readable, and leaves the compat window.
    listed = await stub.ListReleases(
        registry_pb2.ListReleasesRequest(lifecycles=[RETIRED]), metadata=registry.svc
    )
    assert [r.version for r in listed.releases] == ["1.0.0"]
    check = await stub.CheckRelease(
        registry_pb2.CheckReleaseRequest(candidate_image=v1(tmp_path), candidate_version="2.0.0"),
        metadata=registry.svc,
    )
    assert [r.release.version for r in check.report.rows] == ["1.1.0"]

    status = await fails(
        stub.SetLifecycle(registry_pb2.SetLifecycleRequest(version="1.1.0"), metadata=md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field_violation(status) == "lifecycle"
    await fails(move("3.0.0", DEPRECATED), grpc.StatusCode.NOT_FOUND)

    audit = await ReleaseStore(registry.engine).audit()
    actions = [(e.action, e.target) for e in reversed(audit)]
    assert [a for a in actions if a[0] != "token.issue"][:2] == [
        ("release.push", "1.0.0"),
        ("release.push", "1.1.0"),
    ]
    assert ("lifecycle.set", "1.0.0") in actions
    assert ("label.delete", "old") in actions
    retire = next(e for e in audit if e.details.get("lifecycle") == "retired")
    assert retire.actor == "alice"
    assert retire.details["previous"] == "deprecated"
    assert retire.details["reason"] == "test"


async def test_release_still_in_the_field_cannot_be_retired(
    registry: Registry, tmp_path: Path
) -> None:
    await registry.push("1.0.0", v1(tmp_path))

    async def edges_on(version: str) -> int:
        return 3 if version == "1.0.0" else 0

    store = ReleaseStore(registry.engine, field_usage=edges_on)
    with pytest.raises(FailedPrecondition) as refused:
        await store.set_lifecycle("1.0.0", Lifecycle.RETIRED, actor="bob")
    assert refused.value.reason == "RELEASE_IN_FIELD"
    assert "3 edge(s)" in refused.value.message


async def test_two_concurrent_creates_of_one_label_both_land(
    registry: Registry, tmp_path: Path
) -> None:
    # Both writes read "no label" and insert; the loser of the race on the unique name is
    # tried again by the retry policy, and then moves the new label (compare-and-set).
    await _two(registry, tmp_path)
    stub, md = registry.stub, registry.rm
    for n in range(5):
        label = f"fresh-{n}"
        results = await asyncio.gather(
            *(
                stub.SetLabel(
                    registry_pb2.SetLabelRequest(label=label, release=_sel(v)), metadata=md
                )
                for v in ("1.0.0", "1.1.0")
            ),
            return_exceptions=True,
        )
        assert all(isinstance(r, registry_pb2.SetLabelResponse) for r in results), results
        assert sorted(r.previous_version for r in results) in (  # type: ignore[union-attr]
            ["", "1.0.0"],
            ["", "1.1.0"],
        )

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2

import compat
from hplus.cloud.v1 import common_pb2, registry_pb2
from tests.unit.cloud.registry.conftest import (
    ECHO_V1,
    Registry,
    image_of,
    v1,
    v1_plus,
    v2_breaking,
    v3_after_break,
)
from tests.unit.cloud.registry.helpers import detail, fails, field_violation

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def test_push_get_list_round_trip(registry: Registry, tmp_path: Path) -> None:
    image = v1(tmp_path)
    pushed = await registry.push("1.0.0", image, notes="first", labels=["stable"])
    assert pushed.created
    rel = pushed.release
    assert rel.version == "1.0.0"
    assert rel.lifecycle == registry_pb2.RELEASE_LIFECYCLE_ACTIVE
    assert rel.push_actor == "alice"
    assert list(rel.labels) == ["stable"]
    assert list(rel.files) == ["regtest/v1/echo.proto"]
    assert list(rel.services) == ["regtest.v1.EchoService"]
    assert rel.image == b""

    for selector in (
        registry_pb2.ReleaseSelector(version="1.0.0"),
        registry_pb2.ReleaseSelector(label="stable"),
        registry_pb2.ReleaseSelector(digest=rel.digest),
    ):
        got = await registry.stub.GetRelease(
            registry_pb2.GetReleaseRequest(release=selector, view=registry_pb2.RELEASE_VIEW_FULL),
            metadata=registry.svc,
        )
        assert got.release.version == "1.0.0"
        assert hashlib.sha256(got.release.image).digest() == rel.digest.value
        assert got.release.image_size_bytes == len(got.release.image)
        assert got.release.notes == "first"
    fds = descriptor_pb2.FileDescriptorSet.FromString(got.release.image)
    assert any(f.HasField("source_code_info") for f in fds.file)

    second = await registry.push("1.1.0", v1_plus(tmp_path))
    assert second.created
    assert second.check.verdict == registry_pb2.CHECK_VERDICT_COMPATIBLE
    assert [r.release.version for r in second.check.rows] == ["1.0.0"]
    listed = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(), metadata=registry.svc
    )
    assert [r.version for r in listed.releases] == ["1.1.0", "1.0.0"]
    assert all(r.image == b"" for r in listed.releases)
    page = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(page_size=1), metadata=registry.svc
    )
    assert [r.version for r in page.releases] == ["1.1.0"]
    rest = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(page_size=1, page_token=page.next_page_token),
        metadata=registry.svc,
    )
    assert [r.version for r in rest.releases] == ["1.0.0"]
    assert rest.next_page_token == ""
    by_label = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(label="stable"), metadata=registry.svc
    )
    assert [r.version for r in by_label.releases] == ["1.0.0"]


async def test_identical_push_is_idempotent_and_canonical(
    registry: Registry, tmp_path: Path
) -> None:
    root = tmp_path / "two"
    (root / "two" / "v1").mkdir(parents=True)
    (root / "two" / "v1" / "a.proto").write_text(
        'syntax = "proto3";\npackage two.v1;\nmessage A { string x = 1; }\n'
    )
    (root / "two" / "v1" / "b.proto").write_text(
        'syntax = "proto3";\npackage two.v1;\nimport "two/v1/a.proto";\nmessage B { A a = 1; }\n'
    )
    image = compat.compile_protos(root).SerializeToString()
    first = await registry.push("1.0.0", image)
    # Same content in another file order (dependents first): the same release.
    fds = descriptor_pb2.FileDescriptorSet.FromString(image)
    shuffled = descriptor_pb2.FileDescriptorSet(file=list(reversed(fds.file)))
    assert shuffled.SerializeToString() != image
    again = await registry.push("1.0.0", shuffled.SerializeToString())
    assert not again.created
    assert again.release.digest == first.release.digest
    assert again.release.create_time == first.release.create_time
    listed = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(), metadata=registry.svc
    )
    assert len(listed.releases) == 1


async def test_version_and_image_are_never_reused(registry: Registry, tmp_path: Path) -> None:
    await registry.push("1.0.0", v1(tmp_path))
    status = await fails(registry.push("1.0.0", v1_plus(tmp_path)), grpc.StatusCode.ALREADY_EXISTS)
    assert "1.0.0 exists with a different image" in status.message
    status = await fails(registry.push("1.0.1", v1(tmp_path)), grpc.StatusCode.ALREADY_EXISTS)
    assert "already release 1.0.0" in status.message


async def test_concurrent_pushes_of_one_version_one_wins(
    registry: Registry, tmp_path: Path
) -> None:
    a, b = v1(tmp_path), v1_plus(tmp_path)
    results = await asyncio.gather(
        registry.push("1.0.0", a), registry.push("1.0.0", b), return_exceptions=True
    )
    ok = [r for r in results if isinstance(r, registry_pb2.PushReleaseResponse)]
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1
    assert len(errors) == 1
    assert errors[0].code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(), metadata=registry.svc
    )
    assert [r.digest for r in listed.releases] == [ok[0].release.digest]


async def test_concurrent_identical_pushes_create_once(registry: Registry, tmp_path: Path) -> None:
    image = v1(tmp_path)
    results = await asyncio.gather(*(registry.push("1.0.0", image) for _ in range(3)))
    assert sorted(r.created for r in results) == [False, False, True]
    assert len({r.release.digest.value for r in results}) == 1


async def test_breaking_push_refused_with_findings_then_accepted_with_approval(
    registry: Registry, tmp_path: Path
) -> None:
    await registry.push("1.0.0", v1(tmp_path))
    status = await fails(
        registry.push("1.1.0", v2_breaking(tmp_path), labels=["latest"]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info.reason == "UNAPPROVED_BREAKING_CHANGES"
    fingerprints = info.metadata["fingerprints"].split(",")
    assert len(fingerprints) == int(info.metadata["count"]) >= 2
    failure = detail(status, error_details_pb2.PreconditionFailure)
    rules = {v.type for v in failure.violations}
    assert "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED" in rules
    assert {v.subject for v in failure.violations} == set(fingerprints)
    assert any("regtest/v1/echo.proto:" in v.description for v in failure.violations)
    report = detail(status, registry_pb2.CompatibilityReport)
    assert report.verdict == registry_pb2.CHECK_VERDICT_INCOMPATIBLE
    assert report.rows[0].release.version == "1.0.0"
    removed = [f for f in report.rows[0].results[0].findings if f.rule_id == "FIELD_REMOVED"]
    assert removed[0].paths[0].rpc == "Echo"
    assert removed[0].paths[0].direction == registry_pb2.PARAMETER_DIRECTION_REQUEST
    assert removed[0].paths[0].field_path == "times"

    # Nothing was written: no release, no label.
    listed = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(), metadata=registry.svc
    )
    assert [r.version for r in listed.releases] == ["1.0.0"]
    await fails(
        registry.stub.GetRelease(
            registry_pb2.GetReleaseRequest(release=registry_pb2.ReleaseSelector(label="latest")),
            metadata=registry.svc,
        ),
        grpc.StatusCode.NOT_FOUND,
    )

    # Approving only some fingerprints is not enough.
    await fails(
        registry.push("1.1.0", v2_breaking(tmp_path), approvals=fingerprints[:1]),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    pushed = await registry.push(
        "1.1.0", v2_breaking(tmp_path), approvals=fingerprints, labels=["latest"]
    )
    assert pushed.created
    assert sorted(pushed.release.approved_fingerprints) == sorted(fingerprints)
    assert pushed.check.verdict == registry_pb2.CHECK_VERDICT_COMPATIBLE_WITH_APPROVALS

    # The approved break is not flagged again against the older release in the window.
    third = await registry.push("1.2.0", v3_after_break(tmp_path))
    assert third.created
    assert [r.release.version for r in third.check.rows] == ["1.1.0", "1.0.0"]


async def test_diff_and_check(registry: Registry, tmp_path: Path) -> None:
    await registry.push("1.0.0", v1(tmp_path))
    await registry.push("1.1.0", v1_plus(tmp_path))
    diff = await registry.stub.DiffReleases(
        registry_pb2.DiffReleasesRequest(
            base=registry_pb2.ReleaseSelector(version="1.0.0"),
            target_release=registry_pb2.ReleaseSelector(version="1.1.0"),
        ),
        metadata=registry.svc,
    )
    assert diff.base.version == "1.0.0"
    assert diff.target.version == "1.1.0"
    added = [f for f in diff.findings if f.rule_id == "FIELD_ADDED"]
    assert len(added) == 1
    assert added[0].severity == registry_pb2.FINDING_SEVERITY_INFO
    assert diff.counts.infos == 1
    assert diff.counts.errors == 0
    assert diff.services[0].service == "regtest.v1.EchoService"
    param = diff.services[0].rpcs[0].parameters[0]
    assert param.direction == registry_pb2.PARAMETER_DIRECTION_RESPONSE
    assert param.field_path == "count"
    assert list(param.fingerprints) == [added[0].fingerprint]

    candidate = await registry.stub.DiffReleases(
        registry_pb2.DiffReleasesRequest(
            base=registry_pb2.ReleaseSelector(version="1.1.0"),
            target_image=v2_breaking(tmp_path),
            min_severity=registry_pb2.FINDING_SEVERITY_ERROR,
        ),
        metadata=registry.svc,
    )
    assert candidate.counts.errors >= 2
    assert all(f.severity == registry_pb2.FINDING_SEVERITY_ERROR for f in candidate.findings)
    assert candidate.target.digest.algorithm == common_pb2.DIGEST_ALGORITHM_SHA256

    check = await registry.stub.CheckRelease(
        registry_pb2.CheckReleaseRequest(
            candidate_image=v2_breaking(tmp_path),
            candidate_version="1.2.0",
            directions=[registry_pb2.CHECK_DIRECTION_BACKWARD],
            counts_only=True,
        ),
        metadata=registry.svc,
    )
    assert check.report.verdict == registry_pb2.CHECK_VERDICT_INCOMPATIBLE
    assert [r.release.version for r in check.report.rows] == ["1.1.0", "1.0.0"]
    assert all(not cell.findings for r in check.report.rows for cell in r.results)
    assert check.report.rows[0].results[0].counts.errors >= 2
    both = await registry.stub.CheckRelease(
        registry_pb2.CheckReleaseRequest(
            candidate_release=registry_pb2.ReleaseSelector(version="1.1.0")
        ),
        metadata=registry.svc,
    )
    assert [r.release.version for r in both.report.rows] == ["1.0.0"]
    assert [c.direction for c in both.report.rows[0].results] == [
        registry_pb2.CHECK_DIRECTION_BACKWARD,
        registry_pb2.CHECK_DIRECTION_FORWARD,
    ]


async def test_bad_input_names_the_field(registry: Registry, tmp_path: Path) -> None:
    image = v1(tmp_path)
    cases = [
        (registry_pb2.PushReleaseRequest(version="v1.0", image=image), "version"),
        (registry_pb2.PushReleaseRequest(version="", image=image), "version"),
        (registry_pb2.PushReleaseRequest(version="1.0.0", image=b"\xff\xfe garbage"), "image"),
        (registry_pb2.PushReleaseRequest(version="1.0.0", image=b""), "image"),
        (
            registry_pb2.PushReleaseRequest(version="1.0.0", image=image, labels=["Bad Label"]),
            "labels",
        ),
        (
            registry_pb2.PushReleaseRequest(version="1.0.0", image=image, approvals=["nope"]),
            "approvals",
        ),
        (
            registry_pb2.PushReleaseRequest(
                version="1.0.0",
                image=image,
                expected_digest=common_pb2.Digest(
                    algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=b"\0" * 32
                ),
            ),
            "expected_digest",
        ),
    ]
    for request, field in cases:
        status = await fails(registry.stub.PushRelease(request, metadata=registry.rm), INVALID)
        assert field_violation(status) == field, status.message
    # An image that imports a file it does not contain.
    fds = descriptor_pb2.FileDescriptorSet.FromString(image)
    fds.file[0].dependency.append("missing/thing.proto")
    status = await fails(registry.push("1.0.0", fds.SerializeToString()), INVALID)
    assert "missing/thing.proto" in status.message
    assert field_violation(status) == "image"

    for selector, kind in (
        (registry_pb2.ReleaseSelector(version="9.9.9"), "release"),
        (registry_pb2.ReleaseSelector(label="nope"), "label"),
    ):
        status = await fails(
            registry.stub.GetRelease(
                registry_pb2.GetReleaseRequest(release=selector), metadata=registry.svc
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        assert detail(status, error_details_pb2.ResourceInfo).resource_type == kind
    status = await fails(
        registry.stub.GetRelease(registry_pb2.GetReleaseRequest(), metadata=registry.svc), INVALID
    )
    assert field_violation(status) == "release"
    status = await fails(
        registry.stub.ListReleases(
            registry_pb2.ListReleasesRequest(page_token="!!"), metadata=registry.svc
        ),
        INVALID,
    )
    assert field_violation(status) == "page_token"
    # Nothing of the above was stored.
    listed = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(), metadata=registry.svc
    )
    assert not listed.releases


async def test_validate_only_stores_nothing(registry: Registry, tmp_path: Path) -> None:
    dry = await registry.push("1.0.0", v1(tmp_path), validate_only=True)
    assert dry.created
    assert dry.release.version == "1.0.0"
    listed = await registry.stub.ListReleases(
        registry_pb2.ListReleasesRequest(), metadata=registry.svc
    )
    assert not listed.releases


async def test_many_findings_still_fit_in_the_status_trailers(
    registry: Registry, tmp_path: Path
) -> None:
    fields = "".join(f"  int32 f{n} = {n};\n" for n in range(3, 203))
    big = ECHO_V1.replace("  int32 times = 2;\n", "  int32 times = 2;\n" + fields)
    await registry.push("1.0.0", image_of(tmp_path, big))
    status = await fails(
        registry.push("2.0.0", image_of(tmp_path, ECHO_V1)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert status.ByteSize() < 8000
    info = detail(status, error_details_pb2.ErrorInfo)
    assert info.reason == "UNAPPROVED_BREAKING_CHANGES"
    assert int(info.metadata["count"]) >= 400
    assert info.metadata["truncated"] == "true"
    # The full list is one CheckRelease away.
    check = await registry.stub.CheckRelease(
        registry_pb2.CheckReleaseRequest(candidate_image=image_of(tmp_path, ECHO_V1)),
        metadata=registry.svc,
    )
    assert check.report.counts.errors == int(info.metadata["count"])

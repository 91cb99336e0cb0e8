"""Domain values ↔ registry messages (one place, shared by the store's reports and the servicer)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from cloud.registry._errors import InvalidArgument
from cloud.registry._model import LabelInfo, Lifecycle, ReleaseInfo, Selector
from hplus.cloud.v1 import common_pb2, registry_pb2

__all__ = [
    "LIFECYCLE_FROM_PB",
    "LIFECYCLE_TO_PB",
    "digest_hex",
    "digest_pb",
    "label_pb",
    "release_pb",
    "selector_of",
    "timestamp",
]

LIFECYCLE_TO_PB = {
    Lifecycle.ACTIVE: registry_pb2.RELEASE_LIFECYCLE_ACTIVE,
    Lifecycle.DEPRECATED: registry_pb2.RELEASE_LIFECYCLE_DEPRECATED,
    Lifecycle.RETIRED: registry_pb2.RELEASE_LIFECYCLE_RETIRED,
}
LIFECYCLE_FROM_PB = {v: k for k, v in LIFECYCLE_TO_PB.items()}


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf timestamp of an aware datetime."""
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def digest_pb(hex_digest: str) -> common_pb2.Digest:
    """The wire form of a hex SHA-256 digest."""
    return common_pb2.Digest(
        algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=bytes.fromhex(hex_digest)
    )


def digest_hex(digest: common_pb2.Digest, *, field: str) -> str:
    """The hex form of a wire digest.

    Raises:
        InvalidArgument: the algorithm is not SHA-256 or the value is not 32 bytes.
    """
    if digest.algorithm != common_pb2.DIGEST_ALGORITHM_SHA256:
        raise InvalidArgument(field, "algorithm must be DIGEST_ALGORITHM_SHA256")
    if len(digest.value) != 32:
        raise InvalidArgument(field, f"a SHA-256 value is 32 bytes, got {len(digest.value)}")
    return digest.value.hex()


def selector_of(sel: registry_pb2.ReleaseSelector, *, field: str) -> Selector:
    """The domain form of a release selector.

    Raises:
        InvalidArgument: nothing is selected, or the digest is malformed.
    """
    which = sel.WhichOneof("selector")
    if which == "version":
        return Selector(version=sel.version)
    if which == "label":
        return Selector(label=sel.label)
    if which == "digest":
        return Selector(digest=digest_hex(sel.digest, field=f"{field}.digest"))
    raise InvalidArgument(field, "required: set version, label or digest")


def release_pb(info: ReleaseInfo, *, full: bool = False) -> registry_pb2.Release:
    """The wire form of a release; the image only when ``full``."""
    return registry_pb2.Release(
        version=info.version,
        digest=digest_pb(info.digest),
        image=info.image if full and info.image is not None else b"",
        image_size_bytes=info.image_size,
        labels=list(info.labels),
        lifecycle=LIFECYCLE_TO_PB[info.lifecycle],
        lifecycle_change_time=timestamp(info.lifecycle_changed_at),
        notes=info.notes,
        approved_fingerprints=list(info.approvals),
        files=list(info.files),
        services=list(info.services),
        push_actor=info.push_actor,
        create_time=timestamp(info.created_at),
    )


def label_pb(info: LabelInfo) -> registry_pb2.Label:
    """The wire form of a label."""
    return registry_pb2.Label(
        name=info.name,
        version=info.version,
        digest=digest_pb(info.digest),
        update_time=timestamp(info.updated_at),
        update_actor=info.updated_by,
    )

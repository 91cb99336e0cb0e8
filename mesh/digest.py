"""Directory digests, as ``DirectoryService.GetDirectoryDigest`` defines them.

The edge computes them over what its HIS publishes, the cloud over its read store; both use
these functions, so equal data gives equal digests on both sides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from google.protobuf.message import Message

__all__ = ["bucket_digests", "bucket_of", "content_digest"]


def bucket_of(entity_id: str, bucket_count: int) -> int:
    """The bucket of an entity id.

    Args:
        entity_id: the entity's id.
        bucket_count: how many buckets (at least 1).

    Returns:
        The bucket, in ``[0, bucket_count)``.
    """
    head = hashlib.sha256(entity_id.encode()).digest()[:4]
    return int.from_bytes(head, "big") % bucket_count


def bucket_digests(entries: Iterable[tuple[str, bytes]], bucket_count: int) -> list[bytes]:
    """The digest of every bucket of ``(entity id, content digest)`` pairs.

    Args:
        entries: the entities of one kind.
        bucket_count: how many buckets.

    Returns:
        ``bucket_count`` SHA-256 digests, bucket 0 first.
    """
    buckets: list[list[tuple[bytes, bytes]]] = [[] for _ in range(bucket_count)]
    for entity_id, digest in entries:
        buckets[bucket_of(entity_id, bucket_count)].append((entity_id.encode(), digest))
    out = []
    for members in buckets:
        h = hashlib.sha256()
        for raw_id, digest in sorted(members):
            h.update(raw_id + b"\0" + digest)
        out.append(h.digest())
    return out


def content_digest(entity: Message) -> bytes:
    """SHA-256 of an entity's published content, its ``version`` and ``update_time`` excluded.

    Args:
        entity: a ``hplus.hospital.v1`` Department, Doctor, Schedule or Slot.

    Returns:
        32 bytes.
    """
    copy = type(entity)()
    copy.MergeFrom(entity)
    copy.ClearField("version")
    copy.ClearField("update_time")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()

"""The change feed's protocol (``DirectoryService.GetChanges`` / ``GetDirectoryDigest``).

The rules of the contract live here once, over any :class:`FeedSource`: the edge serves its
SQLite directory mirror through them, the fleet simulator its in-memory hospitals.

A source is a log of directory entries: every change of an entity is an entry at a new,
strictly increasing position (``seq``), which is also the entity's ``version``. The state
*as of* position P is, for every entity, its last entry at or before P. Then:

* a **snapshot** pass reads the state as of the log head when the pass began, page by page
  in (kind, id) order, skipping deletions; its watermark is that head;
* an **incremental** pass from watermark W reads the entries of the state as of the head
  when the pass began whose position is after W, in log order (deletions included); its
  watermark is that head;
* a watermark of another store (another edge, a rebuilt mirror), beyond the head, or older
  than the source's ``horizon`` (entries after it were pruned) gets a snapshot instead.

Page tokens carry the pass (its position, its cursor and a fingerprint of the request) and
nothing else, so a pass holds no memory on the edge between pages. Every page is bounded in
entries, in bytes and in the time spent assembling it.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, TypeGuard

from google.protobuf import timestamp_pb2

from hplus.hospital.v1 import directory_pb2
from mesh.digest import bucket_digests, bucket_of

__all__ = [
    "DATED_KINDS",
    "ENTITY_KINDS",
    "BucketSelection",
    "FeedEntry",
    "FeedLimits",
    "FeedQuery",
    "FeedRequestError",
    "FeedSource",
    "directory_digest",
    "get_changes",
]

ENTITY_KINDS: tuple[int, ...] = (
    directory_pb2.ENTITY_KIND_DEPARTMENT,
    directory_pb2.ENTITY_KIND_DOCTOR,
    directory_pb2.ENTITY_KIND_SCHEDULE,
    directory_pb2.ENTITY_KIND_SLOT,
)
"""Every entity kind the feed publishes, in the order snapshots list them."""

DATED_KINDS = frozenset({directory_pb2.ENTITY_KIND_SCHEDULE, directory_pb2.ENTITY_KIND_SLOT})
"""Kinds with a date: in scope only from the scope's first day on (older ones age out)."""

_WATERMARK_PREFIX = "m1"
_TOKEN_VERSION = 1
_MAX_TOKEN_CHARS = 1024
_DEFAULT_BUCKETS = 64
_MAX_BUCKETS = 4096


class FeedRequestError(Exception):
    """The request is invalid; carries (field, description) violations.

    Args:
        violations: the offending fields and why.
    """

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        super().__init__("invalid request: " + ", ".join(f for f, _ in violations))
        self.violations = tuple(violations)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedLimits:
    """Bounds of one page."""

    default_page_size: int = 500
    """Entries of a page when the request says 0 (the contract's default)."""
    max_page_size: int = 5000
    """Largest page size honoured (the contract's cap)."""
    max_page_bytes: int = 1024 * 1024
    """Largest serialized size of a page's changes; well under the tunnel's 4 MiB."""
    page_seconds: float = 1.0
    """Time spent assembling a page after which it is cut (at least one entry is sent)."""

    def __post_init__(self) -> None:
        if not 1 <= self.default_page_size <= self.max_page_size:
            raise ValueError("default_page_size must be in [1, max_page_size]")
        if self.max_page_bytes < 1024:
            raise ValueError("max_page_bytes must be at least 1024")
        if self.page_seconds <= 0:
            raise ValueError("page_seconds must be > 0")


@dataclasses.dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry of a source's log, ready to send."""

    kind: int
    """The entity's ``EntityKind``."""
    entity_id: str
    """The entity's id."""
    seq: int
    """The entry's log position (the entity's version after it)."""
    data: bytes
    """The serialized ``EntityChange``."""


@dataclasses.dataclass(frozen=True, slots=True)
class BucketSelection:
    """A validated ``BucketFilter``."""

    count: int
    """How many buckets ids are divided into."""
    buckets: frozenset[int]
    """The wanted buckets."""

    def __contains__(self, entity_id: object) -> bool:
        return isinstance(entity_id, str) and bucket_of(entity_id, self.count) in self.buckets


@dataclasses.dataclass(frozen=True, slots=True)
class FeedQuery:
    """What one page asks the source for, besides positions and cursor."""

    kinds: frozenset[int]
    """Entity kinds wanted."""
    buckets: BucketSelection | None
    """Buckets wanted; None for all."""
    scope_start: dt.date
    """Dated kinds only from this day (hospital local) on."""


class FeedSource(Protocol):
    """A log of directory entries the feed serves (see the module docstring)."""

    @property
    def store_id(self) -> str:
        """Identifies this log; watermarks of another store get a snapshot."""
        ...

    @property
    def head(self) -> int:
        """The position of the last committed entry (0 when empty)."""
        ...

    @property
    def horizon(self) -> int:
        """Watermarks below this position may miss pruned entries: they get a snapshot."""
        ...

    @property
    def data_time(self) -> dt.datetime | None:
        """When the source last read the HIS (None: never)."""
        ...

    def snapshot(
        self, *, at: int, after: tuple[int, str] | None, query: FeedQuery
    ) -> AsyncIterator[FeedEntry]:
        """The non-deleted entities as of ``at``, in (kind, id) order, after ``after``."""
        ...

    def changes(
        self, *, since: int, at: int, after: tuple[int, int, str] | None, query: FeedQuery
    ) -> AsyncIterator[FeedEntry]:
        """Entries of the state as of ``at`` positioned after ``since``.

        Deletions included, in (seq, kind, id) order, after ``after``.
        """
        ...

    async def digest_entries(self, kind: int, scope_start: dt.date) -> list[tuple[str, bytes]]:
        """(id, content digest) of the current non-deleted entities of ``kind`` in scope."""
        ...


# -- request validation ------------------------------------------------------------------


def _kinds(values: Sequence[int], field: str) -> frozenset[int]:
    bad = [v for v in values if v not in ENTITY_KINDS]
    if bad:
        raise FeedRequestError([(field, f"unknown entity kind {bad[0]}")])
    return frozenset(values) or frozenset(ENTITY_KINDS)


def _buckets(request: directory_pb2.GetChangesRequest) -> BucketSelection | None:
    if not request.HasField("buckets"):
        return None
    count = request.buckets.bucket_count
    if not 1 <= count <= _MAX_BUCKETS:
        raise FeedRequestError([("buckets.bucket_count", f"must be in [1, {_MAX_BUCKETS}]")])
    if not request.buckets.buckets:
        raise FeedRequestError([("buckets.buckets", "at least one bucket is required")])
    bad = [b for b in request.buckets.buckets if b >= count]
    if bad:
        raise FeedRequestError([("buckets.buckets", f"bucket {bad[0]} is not below bucket_count")])
    return BucketSelection(count, frozenset(request.buckets.buckets))


def _fingerprint(
    request: directory_pb2.GetChangesRequest,
    kinds: frozenset[int],
    buckets: BucketSelection | None,
) -> str:
    key = {
        "since": request.since,
        "kinds": sorted(kinds),
        "buckets": None if buckets is None else [buckets.count, sorted(buckets.buckets)],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


# -- watermarks and page tokens ----------------------------------------------------------


def _watermark(store_id: str, seq: int) -> str:
    return f"{_WATERMARK_PREFIX}.{store_id}.{seq}"


def _since(watermark: str, source: FeedSource) -> int | None:
    """The position a watermark names in ``source``; None when it cannot be served."""
    prefix, _, rest = watermark.partition(".")
    store, _, seq_text = rest.partition(".")
    if prefix != _WATERMARK_PREFIX or store != source.store_id or not seq_text.isdigit():
        return None  # another store, another edge, or not ours: a snapshot
    seq = int(seq_text)
    if seq > source.head or seq < source.horizon:
        return None  # from a store that was reset, or older than what the log keeps
    return seq


@dataclasses.dataclass(frozen=True, slots=True)
class _Pass:
    store: str
    snapshot: bool
    at: int
    since: int
    day: int
    cursor: tuple[int | str, ...] | None
    fingerprint: str

    def encode(self) -> str:
        raw = json.dumps(
            {
                "v": _TOKEN_VERSION,
                "s": self.store,
                "n": self.snapshot,
                "a": self.at,
                "w": self.since,
                "d": self.day,
                "c": list(self.cursor or ()),
                "f": self.fingerprint,
            },
            separators=(",", ":"),
        ).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _malformed() -> FeedRequestError:
    return FeedRequestError([("page_token", "malformed")])


def _decode(token: str, fingerprint: str, source: FeedSource) -> _Pass:
    if len(token) > _MAX_TOKEN_CHARS:
        raise _malformed()
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except ValueError:
        raise _malformed() from None
    if not isinstance(data, dict) or data.get("v") != _TOKEN_VERSION:
        raise _malformed()
    store, snapshot, at, since = data.get("s"), data.get("n"), data.get("a"), data.get("w")
    day, cursor, print_ = data.get("d"), data.get("c"), data.get("f")
    if (
        not isinstance(store, str)
        or not isinstance(snapshot, bool)
        or not _count(at)
        or not _count(since)
        or not _count(day)
        or not isinstance(print_, str)
        or not isinstance(cursor, list)
    ):
        raise _malformed()
    shape = (int, str) if snapshot else (int, int, str)
    if cursor and (
        len(cursor) != len(shape)
        or not all(
            isinstance(c, t) and not isinstance(c, bool)
            for c, t in zip(cursor, shape, strict=False)
        )
    ):
        raise _malformed()
    if print_ != fingerprint:
        raise FeedRequestError(
            [("page_token", "belongs to another query: since, kinds and buckets must be the "
              "same as on the first page")]
        )  # fmt: skip
    if store != source.store_id:
        raise FeedRequestError(
            [("page_token", "the directory mirror was rebuilt since this pass began; start a "
              "new pass")]
        )  # fmt: skip
    return _Pass(
        store=store,
        snapshot=snapshot,
        at=at,
        since=since,
        day=day,
        cursor=tuple(cursor) if cursor else None,
        fingerprint=print_,
    )


# -- pages -------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


_CHANGES_TAG = b"\x0a"  # GetChangesResponse.changes: field 1, length-delimited


async def _cut(
    entries: AsyncIterator[FeedEntry],
    size: int,
    limits: FeedLimits,
    clock: Callable[[], float],
) -> tuple[list[bytes], FeedEntry | None, bool]:
    """Takes one page's entries: (encoded changes, the last taken, whether more remain)."""
    started = clock()
    chunks: list[bytes] = []
    used = 0
    last: FeedEntry | None = None
    more = False
    try:
        async for entry in entries:
            encoded = _CHANGES_TAG + _varint(len(entry.data)) + entry.data
            full = len(chunks) >= size or (chunks and used + len(encoded) > limits.max_page_bytes)
            late = chunks and clock() - started > limits.page_seconds
            if full or late:
                more = True
                break
            chunks.append(encoded)
            used += len(encoded)
            last = entry
    finally:
        close = getattr(entries, "aclose", None)
        if close is not None:
            await close()
    return chunks, last, more


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def get_changes(
    source: FeedSource,
    request: directory_pb2.GetChangesRequest,
    *,
    today: dt.date,
    limits: FeedLimits | None = None,
    prepare: Callable[[], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> directory_pb2.GetChangesResponse:
    """Serves one page of a GetChanges pass from ``source``.

    Args:
        source: the log to serve (it must have read the HIS at least once).
        request: the request.
        today: the hospital's current local date (first day of a new pass's scope).
        limits: page bounds.
        prepare: awaited before a new pass takes its position, once the request is
            valid (the edge refreshes a stale mirror there).
        clock: monotonic seconds, for the page's time bound (a seam for tests).

    Returns:
        The page.

    Raises:
        FeedRequestError: an invalid field, or a page token of another query or store.
    """
    limits = limits or FeedLimits()
    kinds = _kinds(request.kinds, "kinds")
    buckets = _buckets(request)
    if request.page_size < 0:
        raise FeedRequestError([("page_size", "must not be negative")])
    size = min(request.page_size or limits.default_page_size, limits.max_page_size)
    fingerprint = _fingerprint(request, kinds, buckets)
    if request.page_token:
        pass_ = _decode(request.page_token, fingerprint, source)
    else:
        if prepare is not None:
            await prepare()
        since = _since(request.since, source) if request.since else None
        pass_ = _Pass(
            store=source.store_id,
            snapshot=since is None,
            at=source.head,
            since=since or 0,
            day=today.toordinal(),
            cursor=None,
            fingerprint=fingerprint,
        )
    query = FeedQuery(kinds, buckets, dt.date.fromordinal(pass_.day))
    if pass_.snapshot:
        after = pass_.cursor
        entries = source.snapshot(
            at=pass_.at,
            after=None if after is None else (int(after[0]), str(after[1])),
            query=query,
        )
    else:
        after = pass_.cursor
        entries = source.changes(
            since=pass_.since,
            at=pass_.at,
            after=None if after is None else (int(after[0]), int(after[1]), str(after[2])),
            query=query,
        )
    chunks, last, more = await _cut(entries, size, limits, clock)
    response = directory_pb2.GetChangesResponse()
    response.MergeFromString(b"".join(chunks))
    response.snapshot = pass_.snapshot
    if more and last is not None:
        cursor: tuple[int | str, ...] = (
            (last.kind, last.entity_id) if pass_.snapshot else (last.seq, last.kind, last.entity_id)
        )
        response.next_page_token = dataclasses.replace(pass_, cursor=cursor).encode()
    else:
        response.watermark = _watermark(pass_.store, pass_.at)
    stamp = _timestamp(source.data_time)
    if stamp is not None:
        response.data_time.CopyFrom(stamp)
    return response


async def directory_digest(
    source: FeedSource,
    request: directory_pb2.GetDirectoryDigestRequest,
    *,
    today: dt.date,
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> directory_pb2.GetDirectoryDigestResponse:
    """The per-kind, per-bucket digests of ``source``'s current state (see the contract).

    Args:
        source: the log whose state to digest.
        request: the request.
        today: the hospital's current local date (the scope's first day).
        prepare: awaited once the request is valid, before the state is read.

    Returns:
        The digests.

    Raises:
        FeedRequestError: an unknown kind.
    """
    count = min(request.bucket_count or _DEFAULT_BUCKETS, _MAX_BUCKETS)
    _kinds(request.kinds, "kinds")
    if prepare is not None:
        await prepare()
    kinds: list[int] = [int(k) for k in dict.fromkeys(request.kinds)] or list(ENTITY_KINDS)
    response = directory_pb2.GetDirectoryDigestResponse(bucket_count=count)
    response.scope_start_date.year = today.year
    response.scope_start_date.month = today.month
    response.scope_start_date.day = today.day
    stamp = _timestamp(source.data_time)
    if stamp is not None:
        response.data_time.CopyFrom(stamp)
    for kind in kinds:
        entries = await source.digest_entries(kind, today)
        response.kinds.append(
            directory_pb2.KindDigest(
                kind=kind,  # type: ignore[arg-type]
                count=len(entries),
                bucket_digests=bucket_digests(entries, count),
            )
        )
    return response

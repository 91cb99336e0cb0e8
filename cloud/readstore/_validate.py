"""Checks on every change of a feed page before anything of it is written.

A hospital's edge is a peer we do not trust: a page with one malformed change is refused
whole (`FeedError` naming the change and the field), so the store never holds half a page of
garbage. Bounds follow the store's columns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from google.protobuf.message import Message
from google.type import date_pb2, money_pb2

from cloud.readstore._schema import ID
from hplus.hospital.v1 import directory_pb2
from mesh.digest import bucket_of, content_digest

__all__ = ["ALL_KINDS", "KIND_NAMES", "MAX_PAGE_CHANGES", "MAX_WATERMARK", "Change", "FeedError",
           "validate_page"]  # fmt: skip

MAX_PAGE_CHANGES = 5000
"""The contract's cap on changes in one page."""
MAX_WATERMARK = 1024
"""Longest watermark the store keeps."""

ALL_KINDS: tuple[int, ...] = (
    directory_pb2.ENTITY_KIND_DEPARTMENT,
    directory_pb2.ENTITY_KIND_DOCTOR,
    directory_pb2.ENTITY_KIND_SCHEDULE,
    directory_pb2.ENTITY_KIND_SLOT,
)
"""The entity kinds, in the order a sync applies them (parents first)."""

KIND_NAMES: dict[int, str] = {
    directory_pb2.ENTITY_KIND_DEPARTMENT: "departments",
    directory_pb2.ENTITY_KIND_DOCTOR: "doctors",
    directory_pb2.ENTITY_KIND_SCHEDULE: "schedules",
    directory_pb2.ENTITY_KIND_SLOT: "slots",
}
"""Display names of the kinds (CLI, messages)."""

_ONEOF = {
    directory_pb2.ENTITY_KIND_DEPARTMENT: ("department", "department_id"),
    directory_pb2.ENTITY_KIND_DOCTOR: ("doctor", "doctor_id"),
    directory_pb2.ENTITY_KIND_SCHEDULE: ("schedule", "schedule_id"),
    directory_pb2.ENTITY_KIND_SLOT: ("slot", "slot_id"),
}
_MAX_VERSION = 2**63 - 1
_MAX_COUNT = 1_000_000
_MAX_UNITS = 10**12
_EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp()
_LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp()

# Longest text per field; anything longer is garbage, not a long name.
_TEXT = {
    "department": {"name": 200, "parent_department_id": ID, "description": 4000,
                   "location": 500},
    "doctor": {"name": 200, "title_text": 200, "specialty": 2000, "introduction": 8000,
               "photo_url": 1000},
    "schedule": {"department_id": ID, "doctor_id": ID, "location": 500, "suspend_reason": 500,
                 "substitute_doctor_id": ID},
    "slot": {"schedule_id": ID},
}  # fmt: skip


class FeedError(Exception):
    """A page of a hospital's change feed breaks the contract; nothing of it was written.

    Args:
        message: what is wrong, naming the change (``changes[3].slot.capacity``) and rule.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One checked change: the entity's new state (``entity``) or its deletion."""

    kind: int
    """``hplus.hospital.v1.EntityKind``."""
    entity_id: str
    """The entity's id."""
    version: int
    """Its version after the change."""
    digest: bytes
    """Its content digest (empty for a deletion)."""
    entity: Message | None
    """The Department, Doctor, Schedule or Slot; ``None`` for a deletion."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _bad_id(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value) > ID:
        return f"longer than {ID} characters"
    if _CONTROL.search(value):
        return "contains control characters"
    return None


def _check_date(where: str, value: date_pb2.Date) -> None:
    try:
        dt.date(value.year, value.month, value.day)
    except ValueError:
        raise FeedError(f"{where}: {value.year}-{value.month}-{value.day} is not a date") from None
    if not 2000 <= value.year < 2100:
        raise FeedError(f"{where}: year {value.year} is outside 2000-2099")


def _check_money(where: str, value: money_pb2.Money) -> None:
    if len(value.currency_code) > 3:
        raise FeedError(f"{where}.currency_code: longer than 3 characters")
    if abs(value.units) > _MAX_UNITS or abs(value.nanos) >= 10**9:
        raise FeedError(f"{where}: amount out of range")


def _check_counts(where: str, entity: Message) -> None:
    for name in ("capacity", "remaining", "ticket_number"):
        if name in entity.DESCRIPTOR.fields_by_name:
            value = getattr(entity, name)
            if not 0 <= value <= _MAX_COUNT:
                raise FeedError(f"{where}.{name}: {value} is outside [0, {_MAX_COUNT}]")


def _check_entity(where: str, field: str, entity: Message) -> None:
    for name, limit in _TEXT[field].items():
        value = getattr(entity, name)
        if len(value) > limit:
            raise FeedError(f"{where}.{name}: longer than {limit} characters")
    _check_counts(where, entity)
    if isinstance(entity, directory_pb2.Doctor):
        if len(entity.department_ids) > 100:
            raise FeedError(f"{where}.department_ids: more than 100")
        for i, dep in enumerate(entity.department_ids):
            if (why := _bad_id(dep)) is not None:
                raise FeedError(f"{where}.department_ids[{i}]: {why}")
    elif isinstance(entity, directory_pb2.Schedule):
        if (why := _bad_id(entity.department_id)) is not None:
            raise FeedError(f"{where}.department_id: {why}")
        _check_date(f"{where}.date", entity.date)
        for name in ("start_time", "end_time"):
            tod = getattr(entity, name)
            if not (0 <= tod.hours <= 24 and 0 <= tod.minutes < 60):
                raise FeedError(f"{where}.{name}: not a time of day")
        if entity.HasField("fee"):
            _check_money(f"{where}.fee.total_amount", entity.fee.total_amount)
            _check_money(f"{where}.fee.cash_amount", entity.fee.cash_amount)
        if entity.HasField("release_time") and not (
            _EARLIEST <= entity.release_time.seconds < _LATEST
        ):
            raise FeedError(f"{where}.release_time: outside 2000-2099")
    elif isinstance(entity, directory_pb2.Slot):
        if (why := _bad_id(entity.schedule_id)) is not None:
            raise FeedError(f"{where}.schedule_id: {why}")
        if not entity.HasField("start_time"):
            raise FeedError(f"{where}.start_time: required")
        if not _EARLIEST <= entity.start_time.seconds < _LATEST:
            raise FeedError(f"{where}.start_time: outside 2000-2099")
        if entity.HasField("end_time") and not _EARLIEST <= entity.end_time.seconds < _LATEST:
            raise FeedError(f"{where}.end_time: outside 2000-2099")
        if entity.HasField("fee_override"):
            _check_money(f"{where}.fee_override", entity.fee_override)


def validate_page(
    page: directory_pb2.GetChangesResponse,
    *,
    kinds: tuple[int, ...],
    buckets: frozenset[int] | None = None,
    bucket_count: int = 0,
) -> list[Change]:
    """Check a page and return its changes, the highest version of each entity only.

    Args:
        page: the page as the edge sent it.
        kinds: the kinds the request asked for; a change of another kind is garbage.
        buckets: the buckets a bucket pass asked for, or ``None``.
        bucket_count: the bucket count of that pass.

    Raises:
        FeedError: the page breaks the contract; the message names where.
    """
    if len(page.changes) > MAX_PAGE_CHANGES:
        raise FeedError(f"changes: {len(page.changes)} in one page (at most {MAX_PAGE_CHANGES})")
    if len(page.watermark) > MAX_WATERMARK:
        raise FeedError(f"watermark: longer than {MAX_WATERMARK} characters")
    if len(page.next_page_token) > 4096:
        raise FeedError("next_page_token: longer than 4096 characters")
    best: dict[tuple[int, str], Change] = {}
    for i, change in enumerate(page.changes):
        where = f"changes[{i}]"
        if change.kind not in kinds:
            raise FeedError(f"{where}.kind: {change.kind} was not requested")
        if (why := _bad_id(change.entity_id)) is not None:
            raise FeedError(f"{where}.entity_id: {why}")
        if not 0 < change.version <= _MAX_VERSION:
            raise FeedError(f"{where}.version: must be > 0, got {change.version}")
        if buckets is not None and bucket_of(change.entity_id, bucket_count) not in buckets:
            raise FeedError(f"{where}.entity_id: outside the requested buckets")
        which = change.WhichOneof("change")
        field, id_field = _ONEOF[change.kind]
        entity: Message | None
        if which == "deleted" and change.deleted:
            if change.content_digest and len(change.content_digest) != 32:
                raise FeedError(f"{where}.content_digest: must be empty or 32 bytes")
            entity = None
        elif which == field:
            if change.content_digest and len(change.content_digest) != 32:
                raise FeedError(f"{where}.content_digest: must be empty or 32 bytes")
            entity = getattr(change, field)
            if getattr(entity, id_field) != change.entity_id:
                raise FeedError(f"{where}.{field}.{id_field}: differs from entity_id")
            _check_entity(f"{where}.{field}", field, entity)
        else:
            raise FeedError(f"{where}: a {field} or deleted=true is required, got {which}")
        key = (change.kind, change.entity_id)
        held = best.get(key)
        if held is None or change.version > held.version:
            best[key] = Change(
                change.kind,
                change.entity_id,
                change.version,
                b"" if entity is None else (change.content_digest or content_digest(entity)),
                entity,
            )
    return list(best.values())

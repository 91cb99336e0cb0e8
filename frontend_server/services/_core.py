"""What every hospital servicer shares: its collaborators and small request helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypeVar

from frontend_server.adapters import HisAdapter
from frontend_server.profile import OperationMode, Profile
from frontend_server.services._errors import InvalidRequest, Unsupported
from frontend_server.services._refresh import DirectoryRefresher
from frontend_server.services._rules import Clock, SlotIndex, utc_now
from frontend_server.services._writes import WriteRunner
from frontend_server.tasks import TaskQueue
from hplus.hospital.v1 import common_pb2

__all__ = ["Hospital", "page", "require_key", "require_mode"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hospital:
    """The collaborators of the hospital servicers (built by the composition root)."""

    profile: Profile
    """The hospital's validated profile."""
    adapter: HisAdapter
    """The HIS adapter of the profile's dialect."""
    writes: WriteRunner
    """Writes through the idempotency ledger."""
    queue: TaskQueue
    """The pending-task queue."""
    clock: Clock = utc_now
    """The current time, timezone-aware (a seam for tests); rules use it in the hospital's
    time zone."""
    slots: SlotIndex = dataclasses.field(default_factory=SlotIndex)
    """Which session each HIS slot id belongs to (filled by ``ListSlots``)."""
    directory: DirectoryRefresher | None = None
    """The directory mirror and its refresher, which serve the change feed (None: the
    feed is not offered)."""

    async def patient_id(self, ref: common_pb2.PatientRef, field: str = "patient") -> str:
        """The HIS patient id of a reference (by card when the id is empty).

        Args:
            ref: the reference.
            field: the request field, for a violation.

        Returns:
            The HIS patient id.

        Raises:
            InvalidRequest: neither an id nor a card, or no patient holds the card.
        """
        if ref.patient_id:
            return ref.patient_id
        if not ref.card_number:
            raise InvalidRequest([(field, "patient_id or card_number is required")])
        found = await self.adapter.find_patients(card_number=ref.card_number)
        if len(found) != 1:
            raise InvalidRequest([(f"{field}.card_number", "no single patient holds this card")])
        return found[0].patient_id


def require_mode(profile: Profile, operation: str) -> OperationMode:
    """The operation's mode, refusing an operation this hospital does not offer.

    Args:
        profile: the hospital's profile.
        operation: operation name (see ``frontend_server.profile.OPERATIONS``).

    Returns:
        REALTIME or QUEUED.

    Raises:
        Unsupported: the profile marks it unsupported.
    """
    mode = profile.mode(operation)
    if mode is OperationMode.UNSUPPORTED:
        raise Unsupported(f"{operation} is not offered by this hospital")
    return mode


def require_key(key: str) -> None:
    """Refuses an empty idempotency key before anything else is looked up.

    Raises:
        InvalidRequest: the key is empty.
    """
    if not key:
        raise InvalidRequest([("idempotency_key", "required")])


def page(
    items: Sequence[T], *, size: int, token: str, default: int, maximum: int
) -> tuple[list[T], str]:
    """One page of an in-memory listing; the token is the offset.

    Args:
        items: everything, in order.
        size: the request's page size (0: ``default``; capped at ``maximum``).
        token: the request's page token ("" for the first page).
        default: default page size.
        maximum: largest page size.

    Returns:
        The page and the next token ("" on the last page).

    Raises:
        InvalidRequest: a malformed token or negative size.
    """
    if size < 0:
        raise InvalidRequest([("page_size", "must not be negative")])
    try:
        start = int(token) if token else 0
    except ValueError:
        raise InvalidRequest([("page_token", "malformed")]) from None
    if start < 0:
        raise InvalidRequest([("page_token", "malformed")])
    count = min(size or default, maximum)
    chunk = list(items[start : start + count])
    end = start + len(chunk)
    return chunk, (str(end) if end < len(items) else "")

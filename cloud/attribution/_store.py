"""The failure store: attributed failed calls in the fleet database, bounded by count and age."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.attribution._schema import FAILURES
from cloud.db import migrate

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RETENTION_SECONDS",
    "FailureRow",
    "FailureStore",
    "Group",
    "migrate_attribution",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"

DEFAULT_MAX_ROWS = 200_000
"""Failure rows kept at most (all nodes sharing the fleet database together)."""
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
"""Seconds a failure row is kept."""


async def migrate_attribution(engine: AsyncEngine) -> None:
    """Bring the failure table to the newest schema (own version table)."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_attribution")


@dataclasses.dataclass(frozen=True)
class FailureRow:
    """One failed call and whom it is attributed to."""

    at: float
    """Unix time the call ended."""
    node: str
    """The node that saw it."""
    hospital_id: str
    """The hospital it concerned ("" when the call named none)."""
    side: str
    """``api`` (a call the node served) or ``hospital`` (a call it made to an edge)."""
    method: str
    """``/package.Service/Method``."""
    code: str
    """Status code name."""
    error_reason: str
    """``ErrorInfo.reason`` as received."""
    error_domain: str
    """``ErrorInfo.domain`` as received."""
    cause: str
    """``ErrorInfo.metadata["cause"]`` (a HIS failure's) or ``["last_end"]`` (a tunnel's)."""
    owner: str
    """`mesh.attribution.Owner` value."""
    reason: str
    """The attribution table's reason code."""
    hop: str
    """Where it failed."""
    vendor: str
    """The HIS vendor (dialect) when the HIS side owns it."""
    request_id: str
    """The call's request (trace) id, for ``hplus trace``."""

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Group:
    """Failures of one owner at one hospital."""

    owner: str
    hospital_id: str
    count: int
    """Failed requests: an app's call and the node's call to the edge it made share one
    request id and count once."""
    calls: int
    """Failed calls (rows), both sides."""
    reasons: dict[str, int]
    """Failed requests per reason code."""
    vendor: str
    last_at: float
    last_request_id: str

    def as_dict(self) -> dict[str, Any]:
        """The group as JSON-ready values."""
        return dataclasses.asdict(self)


class FailureStore:
    """Attributed failures of every node sharing the fleet database.

    Each write is followed, at most once per ``prune_interval`` seconds, by deleting rows
    older than ``retention`` seconds and all but the newest ``max_rows``.

    Args:
        engine: the fleet database.
        max_rows: rows kept at most.
        retention: seconds a row is kept.
        prune_interval: seconds between prunes.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        retention: float = DEFAULT_RETENTION_SECONDS,
        prune_interval: float = 5.0,
    ) -> None:
        self._engine = engine
        self.max_rows = max_rows
        self.retention = retention
        self._prune_interval = prune_interval
        self._last_prune = 0.0

    async def write(self, rows: Sequence[FailureRow]) -> None:
        """Stores a batch, then prunes when due."""
        if not rows:
            return
        async with self._engine.begin() as conn:
            await conn.execute(FAILURES.insert(), [_clip(r) for r in rows])
        now = time.monotonic()
        if now - self._last_prune >= self._prune_interval:
            self._last_prune = now
            await self.prune()

    async def prune(self) -> int:
        """Deletes rows past the age or count bound; returns how many."""
        cutoff = time.time() - self.retention
        async with self._engine.begin() as conn:
            aged = await conn.execute(FAILURES.delete().where(FAILURES.c.at < cutoff))
            newest = (await conn.execute(sa.select(sa.func.max(FAILURES.c.id)))).scalar()
            over = 0
            if newest is not None:
                result = await conn.execute(
                    FAILURES.delete().where(FAILURES.c.id <= newest - self.max_rows)
                )
                over = result.rowcount or 0
        return (aged.rowcount or 0) + over

    async def rows(
        self,
        *,
        since: float,
        owner: str | None = None,
        hospital_id: str | None = None,
        limit: int = 10_000,
    ) -> list[FailureRow]:
        """Failures since ``since`` (Unix time), newest first.

        Args:
            since: oldest time.
            owner: only this owner's.
            hospital_id: only this hospital's.
            limit: rows at most.
        """
        query = sa.select(FAILURES).where(FAILURES.c.at >= since)
        if owner:
            query = query.where(FAILURES.c.owner == owner)
        if hospital_id:
            query = query.where(FAILURES.c.hospital_id == hospital_id)
        query = query.order_by(FAILURES.c.at.desc(), FAILURES.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).mappings().all()
        names = [f.name for f in dataclasses.fields(FailureRow)]
        return [FailureRow(**{n: r[n] for n in names}) for r in found]

    async def groups(
        self, *, since: float, owner: str | None = None, hospital_id: str | None = None
    ) -> list[Group]:
        """Failures since ``since`` grouped by owner and hospital, most first."""
        out: dict[tuple[str, str], Group] = {}
        seen: set[tuple[str, str, str]] = set()
        for n, row in enumerate(await self.rows(since=since, owner=owner, hospital_id=hospital_id)):
            key = (row.owner, row.hospital_id)
            group = out.get(key)
            if group is None:
                group = out[key] = Group(
                    row.owner, row.hospital_id, 0, 0, {}, row.vendor, row.at, row.request_id
                )
            group.calls += 1
            group.vendor = group.vendor or row.vendor
            request = (*key, row.request_id or f"row-{n}")
            if request in seen:
                continue
            seen.add(request)
            group.count += 1
            group.reasons[row.reason] = group.reasons.get(row.reason, 0) + 1
        return sorted(out.values(), key=lambda g: (-g.count, g.owner, g.hospital_id))

    async def by_owner(self, *, since: float) -> dict[str, dict[str, int]]:
        """Counts per hospital and owner since ``since`` (the dashboard's column)."""
        query = (
            sa.select(FAILURES.c.hospital_id, FAILURES.c.owner, sa.func.count())
            .where(FAILURES.c.at >= since)
            .group_by(FAILURES.c.hospital_id, FAILURES.c.owner)
        )
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).all()
        out: dict[str, dict[str, int]] = {}
        for hospital, owner, count in found:
            out.setdefault(str(hospital), {})[str(owner)] = int(count)
        return out


def _clip(row: FailureRow) -> dict[str, Any]:
    limits = {c.name: getattr(c.type, "length", None) for c in FAILURES.columns}
    out = row.as_dict()
    for name, value in out.items():
        size = limits.get(name)
        if isinstance(value, str) and size:
            out[name] = value[:size]
    return out

"""The node's span store: a table in its database, bounded by count and age."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.traces._schema import SPANS
from mesh.observability import SpanRecord

__all__ = ["FailedCall", "NodeSpanStore", "migrate_traces"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


async def migrate_traces(engine: AsyncEngine) -> None:
    """Bring the span table to the newest schema (own version table)."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_traces")


@dataclasses.dataclass(frozen=True)
class FailedCall:
    """A failed span concerning a hospital: its trace is the one to look up."""

    trace_id: str
    name: str
    node: str
    start_ns: int
    code: int
    message: str


class NodeSpanStore:
    """Spans of this node (and of every node sharing the database).

    Each write is followed, at most once per ``prune_interval`` seconds, by deleting spans
    older than ``retention`` seconds and all but the newest ``max_spans`` rows; between two
    prunes the table can exceed ``max_spans`` by one prune interval's worth of spans.

    Args:
        engine: the database.
        max_spans: rows kept at most.
        retention: seconds a span is kept.
        prune_interval: seconds between prunes.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_spans: int,
        retention: float,
        prune_interval: float = 5.0,
    ) -> None:
        self._engine = engine
        self.max_spans = max_spans
        self.retention = retention
        self._prune_interval = prune_interval
        self._last_prune = 0.0

    async def write(self, records: Sequence[SpanRecord]) -> None:
        """Stores a batch, then prunes when due."""
        if not records:
            return
        rows = [
            {
                "trace_id": r.trace_id,
                "span_id": r.span_id,
                "parent_span_id": r.parent_span_id,
                "name": r.name[:300],
                "kind": r.kind,
                "node": r.node[:200],
                "hospital_id": r.hospital_id[:100],
                "start_ns": r.start_ns,
                "duration_ns": r.duration_ns,
                "code": r.code,
                "message": r.message[:500],
                "attributes": r.attributes_json(),
            }
            for r in records
        ]
        async with self._engine.begin() as conn:
            await conn.execute(SPANS.insert(), rows)
        now = time.monotonic()
        if now - self._last_prune >= self._prune_interval:
            self._last_prune = now
            await self.prune()

    async def prune(self) -> int:
        """Deletes spans past the age or count bound; returns how many."""
        cutoff = time.time_ns() - int(self.retention * 1e9)
        async with self._engine.begin() as conn:
            aged = await conn.execute(SPANS.delete().where(SPANS.c.start_ns < cutoff))
            newest = (await conn.execute(sa.select(sa.func.max(SPANS.c.id)))).scalar()
            over = 0
            if newest is not None:
                result = await conn.execute(
                    SPANS.delete().where(SPANS.c.id <= newest - self.max_spans)
                )
                over = result.rowcount or 0
        return (aged.rowcount or 0) + over

    async def count(self) -> int:
        """Spans stored."""
        async with self._engine.connect() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(SPANS))).scalar() or 0
            )

    async def lookup(self, trace_id: str, *, limit: int = 5000) -> list[SpanRecord]:
        """The stored spans of ``trace_id``, by start time."""
        cutoff = time.time_ns() - int(self.retention * 1e9)
        query = (
            sa.select(SPANS)
            .where(SPANS.c.trace_id == trace_id, SPANS.c.start_ns >= cutoff)
            .order_by(SPANS.c.start_ns, SPANS.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            SpanRecord(
                trace_id=r["trace_id"],
                span_id=r["span_id"],
                parent_span_id=r["parent_span_id"],
                name=r["name"],
                kind=r["kind"],
                node=r["node"],
                hospital_id=r["hospital_id"],
                start_ns=r["start_ns"],
                duration_ns=r["duration_ns"],
                code=r["code"],
                message=r["message"],
                attributes=json.loads(r["attributes"] or "{}"),
            )
            for r in rows
        ]

    async def recent_failures(self, hospital_id: str, *, limit: int = 20) -> list[FailedCall]:
        """The newest failed calls concerning ``hospital_id``, one per trace, newest first."""
        cutoff = time.time_ns() - int(self.retention * 1e9)
        query = (
            sa.select(
                SPANS.c.trace_id,
                SPANS.c.name,
                SPANS.c.node,
                SPANS.c.start_ns,
                SPANS.c.code,
                SPANS.c.message,
            )
            .where(
                SPANS.c.hospital_id == hospital_id,
                SPANS.c.code != sa.literal_column("0"),  # as the partial index says
                SPANS.c.start_ns >= cutoff,
            )
            .order_by(SPANS.c.start_ns.desc(), SPANS.c.id.desc())
            # A failed call leaves a few failed spans (server, client, retries): read a few
            # per trace, keep the newest of each.
            .limit(limit * 8)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        calls: dict[str, FailedCall] = {}
        for r in rows:
            if r["trace_id"] not in calls and len(calls) < limit:
                calls[r["trace_id"]] = FailedCall(
                    trace_id=r["trace_id"],
                    name=r["name"],
                    node=r["node"],
                    start_ns=r["start_ns"],
                    code=r["code"],
                    message=r["message"],
                )
        return list(calls.values())

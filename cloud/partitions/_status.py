"""What ``hplus partitions status`` shows: the map, each partition's rows, the splits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import sqlalchemy as sa

from cloud.db import DatabaseError
from cloud.partitions._map import PartitionMap, PartitionState, load_map, migrate_control, redact
from cloud.partitions._schema import FENCE, SPLITS
from cloud.partitions._schemas import PartitionSchema, open_partition_engine, reading

__all__ = ["PartitionStatus", "SplitRecord", "Status", "read_status"]


@dataclasses.dataclass(frozen=True)
class PartitionStatus:
    """One partition as its database shows it."""

    name: str
    """Its name."""
    state: PartitionState
    """Active, copying or retired."""
    url: str
    """Its database URL, password hidden."""
    regions: tuple[str, ...]
    """The regions it serves."""
    fenced: bool | None
    """Whether its writes are fenced (``None``: its database could not be read)."""
    rows: dict[str, int]
    """Rows per table: of the regions it serves (active), or all of them (retired: the
    redundant rows a split leaves)."""
    error: str = ""
    """Why its database could not be read."""


@dataclasses.dataclass(frozen=True)
class SplitRecord:
    """One split in the history."""

    split_id: str
    """Its id."""
    source: str
    """The partition split."""
    targets: dict[str, list[str]]
    """Target → regions."""
    state: str
    """``running``, ``done`` or ``failed``."""
    started_at: dt.datetime
    """When it started."""
    rows_copied: int
    """Rows copied in bulk."""
    pause_seconds: float | None
    """How long the source refused writes."""
    detail: str
    """Why it failed."""


@dataclasses.dataclass(frozen=True)
class Status:
    """The whole picture."""

    map: PartitionMap
    """The map now."""
    partitions: list[PartitionStatus]
    """Every partition, by name."""
    splits: list[SplitRecord]
    """Splits, newest first."""


async def read_status(
    control_url: str, schemas: tuple[PartitionSchema, ...], *, splits: int = 10
) -> Status | None:
    """Read the map and every partition's fence and row counts.

    A partition whose database cannot be read is reported with its error, not raised.

    Args:
        control_url: the control database.
        schemas: the parts' tables (whose rows are counted).
        splits: how many of the latest splits to include.

    Returns:
        The status, or ``None`` when no node has made the map yet.
    """
    control = open_partition_engine(control_url)
    try:
        await migrate_control(control)
        async with reading(control) as conn:
            current = await load_map(conn)
            history = (
                await conn.execute(
                    sa.select(SPLITS).order_by(SPLITS.c.started_at.desc()).limit(splits)
                )
            ).all()
    finally:
        await control.dispose()
    if current is None:
        return None
    tables = [t for s in schemas for t in s.tables]
    rows: list[PartitionStatus] = []
    for info in sorted(current.partitions.values(), key=lambda p: p.name):
        counts: dict[str, int] = {}
        fenced: bool | None = None
        error = ""
        try:
            engine = open_partition_engine(info.url)
        except DatabaseError as err:
            rows.append(
                PartitionStatus(
                    name=info.name,
                    state=info.state,
                    url=redact(info.url),
                    regions=tuple(sorted(info.regions)),
                    fenced=None,
                    rows={},
                    error=str(err),
                )
            )
            continue
        try:
            async with reading(engine) as conn:
                fenced = bool(
                    (
                        await conn.execute(sa.select(FENCE.c.fenced).where(FENCE.c.id == 1))
                    ).scalar_one_or_none()
                )
                for table in tables:
                    query = sa.select(sa.func.count()).select_from(table)
                    if info.state is PartitionState.ACTIVE:
                        query = query.where(table.c.region.in_(sorted(info.regions)))
                    counts[table.name] = int((await conn.execute(query)).scalar_one())
        except (OSError, sa.exc.SQLAlchemyError) as err:
            error = str(err).splitlines()[0][:200]
            fenced = None
        finally:
            await engine.dispose()
        rows.append(
            PartitionStatus(
                name=info.name,
                state=info.state,
                url=redact(info.url),
                regions=tuple(sorted(info.regions)),
                fenced=fenced,
                rows=counts,
                error=error,
            )
        )
    records = [
        SplitRecord(
            split_id=r.split_id,
            source=r.source,
            targets={k: v["regions"] for k, v in json.loads(r.targets).items()},
            state=r.state,
            started_at=r.started_at if r.started_at.tzinfo else r.started_at.replace(tzinfo=dt.UTC),
            rows_copied=int(r.rows_copied),
            pause_seconds=r.pause_seconds,
            detail=r.detail,
        )
        for r in history
    ]
    return Status(map=current, partitions=rows, splits=records)

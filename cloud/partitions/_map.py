"""The partition map as read from the control database: region → partition → database URL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.db import migrate, sqlite_url
from cloud.partitions._regions import NORTH, PROVINCES, SOUTH
from cloud.partitions._schema import MAP, PARTITIONS, REGIONS
from cloud.partitions._schemas import PartitionError, reading

__all__ = [
    "NAME_PATTERN",
    "PartitionInfo",
    "PartitionMap",
    "PartitionState",
    "bootstrap_map",
    "default_urls",
    "load_map",
    "migrate_control",
    "redact",
]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
"""Partition names: 1-32 lower-case letters, digits, ``_`` or ``-``, starting with a letter."""

_CONTROL_MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "control"


class PartitionState(enum.StrEnum):
    """Where a partition is in its life."""

    ACTIVE = "active"
    """Serves the regions the map gives it."""
    COPYING = "copying"
    """The target of a split in progress: filled, not yet in the map."""
    RETIRED = "retired"
    """Split away: fenced, its rows left in place and never read."""


@dataclasses.dataclass(frozen=True)
class PartitionInfo:
    """One partition as the map knows it."""

    name: str
    """Its name (``south``, ``north``, ...)."""
    url: str
    """Its database URL, as configured (may hold a password: print `redact` of it)."""
    state: PartitionState
    """Where it is in its life."""
    regions: frozenset[str]
    """The regions it serves (none unless active)."""


@dataclasses.dataclass(frozen=True)
class PartitionMap:
    """One version of the map."""

    version: int
    """Bumped by every change (a split's switch, a fence lifted)."""
    partitions: Mapping[str, PartitionInfo]
    """Every partition, by name, whatever its state."""
    regions: Mapping[str, str]
    """Region → name of the partition serving it."""

    def partition_of(self, region: str) -> PartitionInfo:
        """The partition serving ``region``.

        Raises:
            KeyError: no partition serves it (not a region of `PROVINCES`).
        """
        return self.partitions[self.regions[region]]

    @property
    def active(self) -> list[PartitionInfo]:
        """The partitions that serve regions, by name."""
        return sorted(
            (p for p in self.partitions.values() if p.state is PartitionState.ACTIVE),
            key=lambda p: p.name,
        )


def redact(url: str) -> str:
    """A database URL for people: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable URL>"


def default_urls(data_dir: Path) -> dict[str, str]:
    """Where the first two partitions live by default: SQLite files under the data dir."""
    return {name: sqlite_url(data_dir / "partitions" / f"{name}.db") for name in ("south", "north")}


async def migrate_control(engine: AsyncEngine) -> None:
    """Bring the control database (the partition map) to the newest schema."""
    await migrate(engine, _CONTROL_MIGRATIONS, version_table="alembic_version_partitions")


async def load_map(conn: AsyncConnection) -> PartitionMap | None:
    """The map as the control database holds it, or ``None`` before the first start."""
    version = (
        await conn.execute(sa.select(MAP.c.version).where(MAP.c.id == 1))
    ).scalar_one_or_none()
    if version is None:
        return None
    regions = {r.region: r.partition for r in await conn.execute(sa.select(REGIONS))}
    served: dict[str, set[str]] = {}
    for region, name in regions.items():
        served.setdefault(name, set()).add(region)
    partitions = {
        row.name: PartitionInfo(
            name=row.name,
            url=row.url,
            state=PartitionState(row.state),
            regions=frozenset(served.get(row.name, ())),
        )
        for row in await conn.execute(sa.select(PARTITIONS))
    }
    return PartitionMap(version=int(version), partitions=partitions, regions=regions)


async def bootstrap_map(engine: AsyncEngine, urls: Mapping[str, str]) -> PartitionMap:
    """The map, made on the very first start: ``south`` and ``north`` with their regions.

    Several nodes may start at once on an empty control database: one creates the map, the
    others read it.

    Args:
        engine: the control database (migrated).
        urls: the first partitions' URLs, ``south`` and ``north``.

    Raises:
        PartitionError: ``urls`` does not name exactly ``south`` and ``north``.
    """
    if set(urls) != {"south", "north"}:
        raise PartitionError(
            f"the first partitions are south and north; got {', '.join(sorted(urls)) or 'none'}"
        )
    async with reading(engine) as conn:
        found = await load_map(conn)
    if found is not None:
        return found
    now = dt.datetime.now(dt.UTC)
    assignment = {**dict.fromkeys(SOUTH, "south"), **dict.fromkeys(NORTH, "north")}
    assert set(assignment) == set(PROVINCES)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                PARTITIONS.insert(),
                [
                    {
                        "name": name,
                        "url": url,
                        "state": PartitionState.ACTIVE.value,
                        "created_at": now,
                    }
                    for name, url in sorted(urls.items())
                ],
            )
            await conn.execute(
                REGIONS.insert(),
                [{"region": r, "partition": p} for r, p in sorted(assignment.items())],
            )
            await conn.execute(MAP.insert().values(id=1, version=1, changed_at=now))
    except IntegrityError:
        pass  # another node made it first
    async with reading(engine) as conn:
        made = await load_map(conn)
    assert made is not None
    return made

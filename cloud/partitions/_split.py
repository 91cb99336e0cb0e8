"""Splitting a partition online: copy, catch up, fence, switch the map.

``split`` moves every region of one partition to new partitions while nodes keep reading
and writing it:

1. **Plan and prepare.** The targets are recorded (state ``copying``, not in the map), their
   databases migrated and stamped with their names, and emptied of anything an earlier,
   failed attempt left.
2. **Capture.** Triggers on every partitioned table of the source log the key of each row
   written from now on into ``partition_changes``, in the writer's own transaction. They
   are created in one transaction that waits for the writes in flight, so every write is
   either visible to the copy that follows or logged.
3. **Bulk copy** of each target's regions, table by table, in primary-key order, batches of
   rows upserted into the target.
4. **Catch up.** The log is drained: for each logged key the row's current state is copied
   (or, when the row is gone, deleted from the targets) and the entries read are deleted.
   An entry committed late, behind one already drained, is still in the table at the next
   round, so nothing depends on commit order. Rounds repeat until one finds fewer than
   ``settle`` changes.
5. **Fence** the source: writes in flight finish, later ones are refused (nodes wait for
   the map to change). Drain the log one last time: it is complete now.
6. **Switch** the map in one transaction (regions → targets, source ``retired``, version
   + 1). The pause — how long the source refused writes — is from the fence to this
   commit; nodes waiting on the fence poll the map every 20 ms.
7. The triggers are dropped; the source keeps its rows (redundant, never read) and its fence.

A failure before the switch drops the triggers, lifts the fence (and bumps the map's version
so waiting writers retry at once), marks the split failed and forgets the targets; the map
is unchanged. A split killed between fence and switch leaves the source fenced: `unfence`
lifts it (``hplus partitions unfence``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.partitions._map import (
    NAME_PATTERN,
    PartitionMap,
    PartitionState,
    load_map,
    migrate_control,
    redact,
)
from cloud.partitions._schema import CHANGES, FENCE, MAP, PARTITIONS, REGIONS, SPLITS
from cloud.partitions._schemas import (
    PartitionError,
    PartitionSchema,
    migrate_partition,
    open_partition_engine,
    reading,
    writing,
)

__all__ = ["SplitReport", "SplitTarget", "plan_split", "split", "unfence"]

Progress = Callable[[str], None]

log = logging.getLogger(__name__)

_TRIGGER = "hplus_split_log"


@dataclasses.dataclass(frozen=True)
class SplitTarget:
    """One partition a split makes."""

    name: str
    """Its name (new)."""
    url: str
    """Its database URL (a database no partition uses)."""
    regions: frozenset[str]
    """The source's regions it takes over."""


@dataclasses.dataclass(frozen=True)
class SplitReport:
    """What a split did."""

    split_id: str
    """Its id in the control database's history."""
    source: str
    """The partition split (now retired)."""
    targets: tuple[SplitTarget, ...]
    """The partitions made."""
    rows_copied: int
    """Rows written into the targets by the bulk copy."""
    changes_replayed: int
    """Logged changes replayed during catch-up and after the fence."""
    rounds: int
    """Catch-up rounds before the fence."""
    pause_seconds: float
    """How long the source refused writes: from its fence to the map switch."""
    map_version: int
    """The map's version after the switch."""


def _same_database(a: str, b: str) -> bool:
    try:
        ua, ub = make_url(a), make_url(b)
    except Exception:  # an unparseable URL is refused later, when it is opened
        return a == b
    keys = ("host", "port", "database")
    backend = ua.get_backend_name() == ub.get_backend_name()
    return backend and all(getattr(ua, k) == getattr(ub, k) for k in keys)


def plan_split(
    current: PartitionMap,
    source: str,
    into: Sequence[tuple[str, str]],
    assign: Mapping[str, Sequence[str]] | None = None,
) -> tuple[SplitTarget, ...]:
    """Check a split against the map and decide which regions each target takes.

    Without ``assign``, the source's regions, in code order, are cut into contiguous runs of
    (nearly) equal length, the first run to the first target.

    Args:
        current: the map now.
        source: the partition to split (active).
        into: ``(name, url)`` of each target (two or more, new names, unused databases).
        assign: the regions of each target, by name, covering the source's exactly once.

    Raises:
        PartitionError: what is wrong with the request, in words.
    """
    info = current.partitions.get(source)
    if info is None or info.state is not PartitionState.ACTIVE:
        active = ", ".join(p.name for p in current.active)
        raise PartitionError(f"no active partition {source!r} (active: {active})")
    if len(into) < 2:
        raise PartitionError("--into needs at least two NAME=URL targets")
    names = [name for name, _ in into]
    for name, url in into:
        if not NAME_PATTERN.match(name):
            raise PartitionError(
                f"partition name {name!r}: 1-32 lower-case letters, digits, '_' or '-', "
                "starting with a letter"
            )
        existing = current.partitions.get(name)
        if existing is not None and existing.state is not PartitionState.COPYING:
            raise PartitionError(f"partition {name!r} exists ({existing.state.value})")
        for other in current.partitions.values():
            if other.name != name and _same_database(other.url, url):
                raise PartitionError(
                    f"{name}: {redact(url)} is the database of partition {other.name}"
                )
    if len(set(names)) != len(names):
        raise PartitionError("target names must differ")
    for i, (_, a) in enumerate(into):
        for _, b in into[i + 1 :]:
            if _same_database(a, b):
                raise PartitionError(f"two targets share the database {redact(a)}")
    regions = sorted(info.regions)
    if assign is None:
        size, extra = divmod(len(regions), len(names))
        runs, start = [], 0
        for i in range(len(names)):
            end = start + size + (1 if i < extra else 0)
            runs.append(regions[start:end])
            start = end
        chosen = dict(zip(names, runs, strict=True))
    else:
        unknown = set(assign) - set(names)
        if unknown:
            raise PartitionError(f"--assign names no target {', '.join(sorted(unknown))}")
        chosen = {name: sorted(set(assign.get(name, ()))) for name in names}
        given = [r for rs in chosen.values() for r in rs]
        strangers = sorted(set(given) - set(regions))
        if strangers:
            raise PartitionError(
                f"--assign: {', '.join(strangers)} are not regions of {source} "
                f"({', '.join(regions)})"
            )
        if len(given) != len(set(given)):
            raise PartitionError("--assign gives a region to two targets")
        missing = sorted(set(regions) - set(given))
        if missing:
            raise PartitionError(f"--assign leaves {', '.join(missing)} of {source} to nobody")
    empty = [name for name, rs in chosen.items() if not rs]
    if empty:
        raise PartitionError(f"{', '.join(empty)} would serve no region")
    urls = dict(into)
    return tuple(SplitTarget(n, urls[n], frozenset(chosen[n])) for n in names)


# -- capture: triggers ----------------------------------------------------------------------


def _trigger_sql(conn: AsyncConnection, table: sa.Table) -> list[str]:
    quote = conn.dialect.identifier_preparer.quote
    name, log = quote(table.name), quote(CHANGES.name)
    if conn.dialect.name == "postgresql":
        return [
            f"CREATE TRIGGER {_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {_TRIGGER}()"
        ]

    def entry(row: str) -> str:
        key = ", ".join(f"'{c.name}', {row}.{quote(c.name)}" for c in table.primary_key.columns)
        return (
            f"INSERT INTO {log} (table_name, row_key) VALUES ('{table.name}', json_object({key}));"
        )

    return [
        f"CREATE TRIGGER {_TRIGGER}_{table.name}_i AFTER INSERT ON {name} BEGIN {entry('NEW')} END",
        f"CREATE TRIGGER {_TRIGGER}_{table.name}_u AFTER UPDATE ON {name} "
        f"BEGIN {entry('OLD')} {entry('NEW')} END",
        f"CREATE TRIGGER {_TRIGGER}_{table.name}_d AFTER DELETE ON {name} BEGIN {entry('OLD')} END",
    ]


_PG_FUNCTION = f"""CREATE OR REPLACE FUNCTION {_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO partition_changes (table_name, row_key) VALUES (TG_TABLE_NAME, row_to_json(OLD)::text);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO partition_changes (table_name, row_key) VALUES (TG_TABLE_NAME, row_to_json(NEW)::text);
  END IF;
  RETURN NULL;
END $$"""  # noqa: E501


async def _install_triggers(engine: AsyncEngine, tables: Sequence[sa.Table]) -> None:
    async with writing(engine) as conn:
        await _drop_trigger_statements(conn, tables)
        await conn.execute(CHANGES.delete())
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(_PG_FUNCTION)
        for table in tables:
            for statement in _trigger_sql(conn, table):
                await conn.exec_driver_sql(statement)


async def _drop_trigger_statements(conn: AsyncConnection, tables: Sequence[sa.Table]) -> None:
    quote = conn.dialect.identifier_preparer.quote
    for table in tables:
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {_TRIGGER} ON {quote(table.name)}")
        else:
            for suffix in ("i", "u", "d"):
                await conn.exec_driver_sql(
                    f"DROP TRIGGER IF EXISTS {_TRIGGER}_{table.name}_{suffix}"
                )


async def _drop_triggers(engine: AsyncEngine, tables: Sequence[sa.Table]) -> None:
    async with writing(engine) as conn:
        await _drop_trigger_statements(conn, tables)
        await conn.execute(CHANGES.delete())


# -- copy -----------------------------------------------------------------------------------


def _aware(table: sa.Table, row: Mapping[Any, Any]) -> dict[str, Any]:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    out = dict(row)
    for column in table.columns:
        value = out.get(column.name)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            out[column.name] = value.replace(tzinfo=dt.UTC)
    return out


async def _upsert(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    others = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    if others:
        await conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=others), rows)
    else:
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=keys), rows)


def _key_filter(table: sa.Table, keys: Sequence[tuple[Any, ...]]) -> sa.ColumnElement[bool]:
    columns = list(table.primary_key.columns)
    if len(columns) == 1:
        return columns[0].in_([k[0] for k in keys])
    return sa.tuple_(*columns).in_(keys)


class _Copier:
    """Copies rows of the source's tables into the target that serves their region."""

    def __init__(
        self,
        source: AsyncEngine,
        targets: Mapping[str, AsyncEngine],
        owner: Mapping[str, str],
        tables: Sequence[sa.Table],
        batch: int,
    ) -> None:
        self.source = source
        self.targets = targets
        self.owner = owner  # region -> target name
        self.tables = {t.name: t for t in tables}
        self.batch = batch

    async def _write(self, table: sa.Table, rows: Sequence[sa.RowMapping]) -> int:
        by_target: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            name = self.owner.get(row["region"])
            if name is not None:
                by_target.setdefault(name, []).append(_aware(table, row))
        for name, chunk in by_target.items():
            async with writing(self.targets[name]) as conn:
                await _upsert(conn, table, chunk)
        return sum(len(c) for c in by_target.values())

    async def bulk(self, table: sa.Table, progress: Progress) -> int:
        keys = list(table.primary_key.columns)
        regions = sorted(self.owner)
        last: tuple[Any, ...] | None = None
        copied = 0
        while True:
            query = sa.select(table).where(table.c.region.in_(regions)).order_by(*keys)
            if last is not None:
                after = keys[0] > last[0] if len(keys) == 1 else sa.tuple_(*keys) > sa.tuple_(*last)
                query = query.where(after)
            async with reading(self.source) as conn:
                rows = (await conn.execute(query.limit(self.batch))).mappings().all()
            if not rows:
                break
            copied += await self._write(table, rows)
            last = tuple(rows[-1][k.name] for k in keys)
        progress(f"  copied {copied:,} rows of {table.name}")
        return copied

    async def drain(self) -> int:
        """Replay the changes logged so far; returns how many entries were drained.

        Entries logged while it drains are left to the next round (so a round ends under
        any write load); one committed late with a lower number than some drained already
        is simply still in the table then.
        """
        async with reading(self.source) as conn:
            upto = (await conn.execute(sa.select(sa.func.max(CHANGES.c.seq)))).scalar()
        if upto is None:
            return 0
        drained = 0
        while True:
            async with reading(self.source) as conn:
                entries = (
                    await conn.execute(
                        sa.select(CHANGES)
                        .where(CHANGES.c.seq <= upto)
                        .order_by(CHANGES.c.seq)
                        .limit(self.batch)
                    )
                ).all()
            if not entries:
                return drained
            wanted: dict[str, set[tuple[Any, ...]]] = {}
            for entry in entries:
                table = self.tables.get(entry.table_name)
                if table is None:
                    continue  # a table of no schema we copy (cannot happen: triggers are ours)
                doc = json.loads(entry.row_key)
                key = tuple(doc[c.name] for c in table.primary_key.columns)
                wanted.setdefault(table.name, set()).add(key)
            for name, keys in wanted.items():
                await self._replay(self.tables[name], sorted(keys, key=repr))
            async with writing(self.source) as conn:
                await conn.execute(
                    CHANGES.delete().where(CHANGES.c.seq.in_([e.seq for e in entries]))
                )
            drained += len(entries)

    async def _replay(self, table: sa.Table, keys: Sequence[tuple[Any, ...]]) -> None:
        columns = [c.name for c in table.primary_key.columns]
        async with reading(self.source) as conn:
            rows = (
                (await conn.execute(sa.select(table).where(_key_filter(table, keys))))
                .mappings()
                .all()
            )
        await self._write(table, rows)
        present = {tuple(row[c] for c in columns) for row in rows}
        gone = [k for k in keys if k not in present]
        if gone:
            for engine in self.targets.values():
                async with writing(engine) as conn:
                    await conn.execute(table.delete().where(_key_filter(table, gone)))


# -- the split ------------------------------------------------------------------------------


async def _bump(conn: AsyncConnection, now: dt.datetime) -> int:
    version = (await conn.execute(sa.select(MAP.c.version).where(MAP.c.id == 1))).scalar_one()
    await conn.execute(
        MAP.update().where(MAP.c.id == 1).values(version=version + 1, changed_at=now)
    )
    return int(version) + 1


async def _set_fence(engine: AsyncEngine, fenced: bool) -> None:
    async with writing(engine) as conn:
        await conn.execute(
            FENCE.update()
            .where(FENCE.c.id == 1)
            .values(fenced=fenced, fenced_at=dt.datetime.now(dt.UTC) if fenced else None)
        )


async def split(
    control_url: str,
    source: str,
    into: Sequence[tuple[str, str]],
    schemas: tuple[PartitionSchema, ...],
    *,
    assign: Mapping[str, Sequence[str]] | None = None,
    progress: Progress = lambda _line: None,
    settle: int = 100,
    max_rounds: int = 50,
    batch: int = 2000,
) -> SplitReport:
    """Split ``source`` into the partitions ``into``, online (see the module docstring).

    Args:
        control_url: the control database.
        source: the partition to split.
        into: ``(name, url)`` of each new partition.
        schemas: the parts' tables to copy.
        assign: which regions each target takes (default: see `plan_split`).
        progress: called with one line per step, for people.
        settle: fence once a catch-up round replays fewer changes than this.
        max_rounds: fence after this many rounds whatever they replayed.
        batch: rows per copy batch and log entries per drain batch.

    Returns:
        What was done, with the measured pause.

    Raises:
        PartitionError: the split is not possible as asked (nothing was changed), or it
            failed part-way (the map is unchanged; the message says what failed).
        cloud.db.DatabaseError: a database cannot be reached.
    """
    control = open_partition_engine(control_url)
    engines: list[AsyncEngine] = [control]
    try:
        await migrate_control(control)
        async with reading(control) as conn:
            current = await load_map(conn)
        if current is None:
            raise PartitionError("no partition map yet: start a node once (hplus cloud run)")
        targets = plan_split(current, source, into, assign)
        split_id = secrets.token_hex(8)
        now = dt.datetime.now(dt.UTC)
        described = json.dumps(
            {t.name: {"url": redact(t.url), "regions": sorted(t.regions)} for t in targets}
        )
        async with writing(control) as conn:
            for t in targets:
                await conn.execute(PARTITIONS.delete().where(PARTITIONS.c.name == t.name))
                await conn.execute(
                    PARTITIONS.insert().values(
                        name=t.name, url=t.url, state=PartitionState.COPYING.value, created_at=now
                    )
                )
            await conn.execute(
                SPLITS.insert().values(
                    split_id=split_id,
                    source=source,
                    targets=described,
                    state="running",
                    started_at=now,
                )
            )
        plan = "; ".join(f"{t.name} <- {','.join(sorted(t.regions))}" for t in targets)
        progress(f"split {split_id}: {source} -> {plan}")
        source_engine = open_partition_engine(current.partitions[source].url)
        engines.append(source_engine)
        target_engines: dict[str, AsyncEngine] = {}
        for t in targets:
            target_engines[t.name] = open_partition_engine(t.url)
            engines.append(target_engines[t.name])
        return await _run(
            control,
            current,
            split_id,
            source,
            source_engine,
            targets,
            target_engines,
            schemas,
            progress=progress,
            settle=settle,
            max_rounds=max_rounds,
            batch=batch,
        )
    finally:
        for engine in engines:
            await engine.dispose()


async def _run(
    control: AsyncEngine,
    current: PartitionMap,
    split_id: str,
    source: str,
    source_engine: AsyncEngine,
    targets: tuple[SplitTarget, ...],
    target_engines: Mapping[str, AsyncEngine],
    schemas: tuple[PartitionSchema, ...],
    *,
    progress: Progress,
    settle: int,
    max_rounds: int,
    batch: int,
) -> SplitReport:
    tables = [t for s in schemas for t in s.tables]
    fenced = switched = False
    try:
        await migrate_partition(source_engine, source, schemas)
        for t in targets:
            engine = target_engines[t.name]
            await migrate_partition(engine, t.name, schemas)
            async with writing(engine) as conn:  # what a failed attempt may have left
                for table in reversed(tables):
                    await conn.execute(table.delete())
        await _install_triggers(source_engine, tables)
        progress(f"capturing changes on {source}; copying")
        owner = {r: t.name for t in targets for r in t.regions}
        copier = _Copier(source_engine, target_engines, owner, tables, batch)
        copied = 0
        for table in tables:
            copied += await copier.bulk(table, progress)
        replayed, rounds = 0, 0
        while rounds < max_rounds:
            rounds += 1
            drained = await copier.drain()
            replayed += drained
            progress(f"  catch-up round {rounds}: {drained:,} change(s)")
            if drained < settle:
                break
        started = time.monotonic()
        fenced = True
        await _set_fence(source_engine, True)
        final = await copier.drain()
        replayed += final
        now = dt.datetime.now(dt.UTC)
        async with writing(control) as conn:
            for t in targets:
                await conn.execute(
                    REGIONS.update()
                    .where(REGIONS.c.region.in_(sorted(t.regions)))
                    .values(partition=t.name)
                )
                await conn.execute(
                    PARTITIONS.update()
                    .where(PARTITIONS.c.name == t.name)
                    .values(state=PartitionState.ACTIVE.value)
                )
            await conn.execute(
                PARTITIONS.update()
                .where(PARTITIONS.c.name == source)
                .values(state=PartitionState.RETIRED.value, retired_at=now)
            )
            version = await _bump(conn, now)
        pause = time.monotonic() - started
        switched = True
        progress(
            f"fenced {source}, replayed {final:,} last change(s), switched the map to version "
            f"{version}: {source} refused writes for {pause:.3f}s"
        )
        await _drop_triggers(source_engine, tables)
        async with writing(control) as conn:
            await conn.execute(
                SPLITS.update()
                .where(SPLITS.c.split_id == split_id)
                .values(
                    state="done",
                    finished_at=dt.datetime.now(dt.UTC),
                    rows_copied=copied,
                    pause_seconds=pause,
                )
            )
        return SplitReport(
            split_id=split_id,
            source=source,
            targets=targets,
            rows_copied=copied,
            changes_replayed=replayed,
            rounds=rounds,
            pause_seconds=pause,
            map_version=version,
        )
    except BaseException as err:
        if not switched:
            await _abandon(control, split_id, source_engine, tables, targets, fenced, err)
        raise


async def _abandon(
    control: AsyncEngine,
    split_id: str,
    source_engine: AsyncEngine,
    tables: Sequence[sa.Table],
    targets: Sequence[SplitTarget],
    fenced: bool,
    err: BaseException,
) -> None:
    """Undo a split that failed before its switch: the map stays as it was."""
    now = dt.datetime.now(dt.UTC)
    try:
        await _drop_triggers(source_engine, tables)
        if fenced:
            await _set_fence(source_engine, False)
        async with writing(control) as conn:
            for t in targets:
                await conn.execute(PARTITIONS.delete().where(PARTITIONS.c.name == t.name))
            await conn.execute(
                SPLITS.update()
                .where(SPLITS.c.split_id == split_id)
                .values(
                    state="failed", finished_at=now, detail=f"{type(err).__name__}: {err}"[:500]
                )
            )
            if fenced:
                await _bump(conn, now)  # writers waiting on the fence retry at once
    except Exception:  # the original failure is what the caller sees; this one is logged
        log.exception("split %s: could not undo everything after it failed", split_id)


async def unfence(control_url: str, name: str) -> bool:
    """Lift the fence of an active partition (left by a split killed before its switch).

    Returns:
        Whether it was fenced.

    Raises:
        PartitionError: no active partition has that name.
    """
    control = open_partition_engine(control_url)
    try:
        await migrate_control(control)
        async with reading(control) as conn:
            current = await load_map(conn)
        info = None if current is None else current.partitions.get(name)
        if info is None or info.state is not PartitionState.ACTIVE:
            raise PartitionError(f"no active partition {name!r}")
        engine = open_partition_engine(info.url)
        try:
            async with writing(engine) as conn:
                fenced = (
                    await conn.execute(sa.select(FENCE.c.fenced).where(FENCE.c.id == 1))
                ).scalar_one_or_none()
                if not fenced:
                    return False
                await conn.execute(FENCE.update().values(fenced=False, fenced_at=None))
        finally:
            await engine.dispose()
        async with writing(control) as conn:
            await _bump(conn, dt.datetime.now(dt.UTC))
        return True
    finally:
        await control.dispose()

"""Rollouts: a target version reaches the fleet in waves, a canary first.

A rollout places each hospital in a wave when it is created (``1,10%,50%,100%``: the first
hospital, then up to 10 % of them, up to 50 %, all; counts are cumulative). Only hospitals
in opened waves are offered the target (`assignment`). Each edge's reported outcome
(`record_outcome`) moves its hospital to ``succeeded`` or ``failed``; then the rollout
advances by itself:

* it **stops** (state ``stopped``) when failures exceed ``max_failures``, or at once when
  the canary (wave 0) fails — a bad package never leaves the canary;
* when every hospital of the open wave has an outcome, the next wave opens; after the
  last one the rollout is ``completed``.

Operators ``pause`` (no new offers; downloads in progress may finish), ``resume`` and
``abort`` (final). One rollout is live (running or paused) at a time. Writes take the
rollout's row lock (``FOR UPDATE`` on PostgreSQL; SQLite serialises writers) and, in one
process, an asyncio lock, so concurrent reports advance a wave exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import math
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import semver
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.upgrades._schema import EDGES, REPORTS, ROLLOUTS, TARGETS
from cloud.upgrades._store import DOMAIN
from mesh import errors

__all__ = [
    "LIVE",
    "EdgeReport",
    "HospitalStatus",
    "RolloutInfo",
    "Rollouts",
    "parse_waves",
    "parse_window",
]

RUNNING, PAUSED, STOPPED, ABORTED, COMPLETED = (
    "running",
    "paused",
    "stopped",
    "aborted",
    "completed",
)
LIVE = (RUNNING, PAUSED)
"""States of a rollout that is not over."""
PENDING, OFFERED, SUCCEEDED, FAILED = "pending", "offered", "succeeded", "failed"
_FINAL = (SUCCEEDED, FAILED)
_WAVE = re.compile(r"^(\d+)(%?)$")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_MAX_TEXT = 500


def parse_waves(spec: str, hospitals: int) -> list[int]:
    """Cumulative hospital counts of each wave, e.g. ``1,10%,50%,100%`` of 50 → 1, 5, 25, 50.

    Waves that add nobody are dropped; the first wave is the canary.

    Raises:
        errors.InvalidArgument: not a comma-separated list of counts and percentages that
            never shrinks, or the fleet is empty.
    """
    counts: list[int] = []
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip() or len(parts) > 20:
        raise errors.InvalidArgument(
            field_violations=[("waves", "1 to 20 comma-separated counts or percentages")]
        )
    for part in parts:
        match = _WAVE.match(part)
        value = int(match.group(1)) if match else 0
        if not match or value < 1 or (match.group(2) and value > 100):
            raise errors.InvalidArgument(
                field_violations=[
                    ("waves", f"{part!r} is not a count >= 1 or a percentage in 1..100%")
                ]
            )
        count = math.ceil(value * hospitals / 100) if match.group(2) else value
        count = min(count, hospitals)
        if counts and count < counts[-1]:
            raise errors.InvalidArgument(
                field_violations=[("waves", f"{part!r} is smaller than the wave before it")]
            )
        if not counts or count > counts[-1]:
            counts.append(count)
    if hospitals == 0 or not counts:
        raise errors.FailedPrecondition(
            "no hospital to upgrade (issue credentials first)", reason="NO_HOSPITALS", domain=DOMAIN
        )
    return counts


def parse_window(text: str) -> tuple[str, str]:
    """A maintenance window ``HH:MM-HH:MM`` (hospital local time; may wrap midnight).

    Raises:
        errors.InvalidArgument: not two times ``HH:MM`` joined by ``-``.
    """
    start, _, end = text.partition("-")
    if not (_TIME.match(start.strip()) and _TIME.match(end.strip())) or start == end:
        raise errors.InvalidArgument(
            field_violations=[("window", f"{text!r} is not HH:MM-HH:MM (two different times)")]
        )
    return start.strip(), end.strip()


@dataclasses.dataclass(frozen=True)
class RolloutInfo:
    """A rollout and its counts."""

    rollout_id: str
    target_version: str
    waves: tuple[int, ...]
    max_failures: int
    state: str
    current_wave: int
    window: tuple[str, str] | None
    stop_reason: str
    created_at: dt.datetime
    updated_at: dt.datetime
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """As plain JSON values."""
        return {
            "rollout_id": self.rollout_id,
            "target_version": self.target_version,
            "waves": list(self.waves),
            "max_failures": self.max_failures,
            "state": self.state,
            "current_wave": self.current_wave,
            "window": "-".join(self.window) if self.window else "",
            "stop_reason": self.stop_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "counts": self.counts,
        }


@dataclasses.dataclass(frozen=True)
class HospitalStatus:
    """One hospital in a rollout, with what its edge last reported."""

    hospital_id: str
    wave: int
    outdated: bool
    state: str
    edge_id: str
    reason: str
    message: str
    version: str
    contract_release: str
    last_report: dt.datetime | None

    def to_json(self) -> dict[str, Any]:
        """As plain JSON values."""
        out = dataclasses.asdict(self)
        out["last_report"] = self.last_report.isoformat() if self.last_report else None
        return out


@dataclasses.dataclass(frozen=True)
class EdgeReport:
    """The upgrade part of an edge's health report."""

    hospital_id: str
    edge_id: str
    software_version: str
    contract_release: str
    standby_version: str
    pending_package_id: str
    attempt_ok: bool | None
    """``None`` when the report carries no attempt."""
    attempt_at: dt.datetime | None
    reason: str
    message: str
    attempt_version: str
    package_id: str
    package_kind: str


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Rollouts:
    """Creates and advances rollouts in the fleet database.

    Args:
        engine: the fleet database (migrated with `migrate_upgrades`).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._lock = asyncio.Lock()

    # -- operators -----------------------------------------------------------------------

    async def create(
        self,
        *,
        target_version: str,
        waves: str,
        max_failures: int,
        hospitals: Sequence[str],
        outdated: Iterable[str] = (),
        outdated_first: bool = False,
        window: tuple[str, str] | None = None,
    ) -> RolloutInfo:
        """Create a running rollout of ``target_version`` to ``hospitals``.

        Args:
            target_version: a published version.
            waves: the wave spec (`parse_waves`).
            max_failures: failed hospitals tolerated; one more stops the rollout.
            hospitals: every hospital to upgrade.
            outdated: hospitals whose edges run a contract release outside the window.
            outdated_first: put ``outdated`` hospitals first (the canary is one of them).
            window: the maintenance window, or ``None`` for any time.

        Raises:
            errors.FailedPrecondition: another rollout is live (``ROLLOUT_LIVE``).
            errors.InvalidArgument: bad waves or max_failures.
        """
        if max_failures < 0:
            raise errors.InvalidArgument(field_violations=[("max_failures", "must be >= 0")])
        unique = sorted(set(hospitals))
        counts = parse_waves(waves, len(unique))
        rollout_id = uuid.uuid4().hex[:12]
        late = set(outdated)

        def order(h: str) -> tuple[int, str]:
            spread = hashlib.sha256(f"{rollout_id}:{h}".encode()).hexdigest()
            return (0 if outdated_first and h in late else 1, spread)

        ordered = sorted(unique, key=order)[: counts[-1]]
        now = _now()
        async with self._lock, self._engine.begin() as conn:
            live = (
                await conn.execute(
                    sa.select(ROLLOUTS.c.rollout_id).where(ROLLOUTS.c.state.in_(LIVE))
                )
            ).first()
            if live is not None:
                raise errors.FailedPrecondition(
                    f"rollout {live.rollout_id} is still live: abort it or let it finish first",
                    reason="ROLLOUT_LIVE",
                    domain=DOMAIN,
                )
            await conn.execute(
                ROLLOUTS.insert().values(
                    rollout_id=rollout_id,
                    target_version=target_version,
                    waves=",".join(map(str, counts)),
                    max_failures=max_failures,
                    state=RUNNING,
                    current_wave=0,
                    window_start=window[0] if window else "",
                    window_end=window[1] if window else "",
                    created_at=now,
                    updated_at=now,
                )
            )
            rows = []
            for position, hospital in enumerate(ordered):
                wave = next(i for i, c in enumerate(counts) if position < c)
                rows.append(
                    {
                        "rollout_id": rollout_id,
                        "hospital_id": hospital,
                        "wave": wave,
                        "position": position,
                        "outdated": hospital in late,
                        "state": PENDING,
                        "updated_at": now,
                    }
                )
            for start in range(0, len(rows), 500):
                await conn.execute(TARGETS.insert(), rows[start : start + 500])
        return await self.get(rollout_id)

    async def _set_state(self, rollout_id: str, allowed: Sequence[str], state: str) -> RolloutInfo:
        async with self._lock, self._engine.begin() as conn:
            row = await self._locked(conn, rollout_id)
            if row.state not in allowed:
                raise errors.FailedPrecondition(
                    f"rollout {rollout_id} is {row.state}; only a {' or '.join(allowed)} "
                    f"rollout can become {state}",
                    reason="ROLLOUT_STATE",
                    domain=DOMAIN,
                )
            await conn.execute(
                ROLLOUTS.update()
                .where(ROLLOUTS.c.rollout_id == rollout_id)
                .values(state=state, updated_at=_now())
            )
            if state == RUNNING:
                await self._advance(conn, rollout_id)
        return await self.get(rollout_id)

    async def pause(self, rollout_id: str) -> RolloutInfo:
        """Stop offering the target (edges already downloading may finish)."""
        return await self._set_state(rollout_id, (RUNNING,), PAUSED)

    async def resume(self, rollout_id: str) -> RolloutInfo:
        """Offer the target again (a stopped rollout resumes too, after a look at why)."""
        return await self._set_state(rollout_id, (PAUSED, STOPPED), RUNNING)

    async def abort(self, rollout_id: str) -> RolloutInfo:
        """End the rollout for good; edges are offered nothing more from it."""
        return await self._set_state(rollout_id, (RUNNING, PAUSED, STOPPED), ABORTED)

    # -- reading -------------------------------------------------------------------------

    async def _locked(self, conn: AsyncConnection, rollout_id: str) -> Any:
        row = (
            await conn.execute(
                sa.select(ROLLOUTS).where(ROLLOUTS.c.rollout_id == rollout_id).with_for_update()
            )
        ).first()
        if row is None:
            raise errors.NotFound(
                f"no rollout {rollout_id!r}", reason="NO_SUCH_ROLLOUT", domain=DOMAIN
            )
        return row

    async def get(self, rollout_id: str) -> RolloutInfo:
        """One rollout.

        Raises:
            errors.NotFound: no such rollout.
        """
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(sa.select(ROLLOUTS).where(ROLLOUTS.c.rollout_id == rollout_id))
            ).first()
            if row is None:
                raise errors.NotFound(
                    f"no rollout {rollout_id!r}", reason="NO_SUCH_ROLLOUT", domain=DOMAIN
                )
            counts: dict[str, int] = dict(
                (
                    await conn.execute(
                        sa.select(TARGETS.c.state, sa.func.count())
                        .where(TARGETS.c.rollout_id == rollout_id)
                        .group_by(TARGETS.c.state)
                    )
                ).all()
            )
        return _info(row, {str(k): int(v) for k, v in counts.items()})

    async def every(self) -> list[RolloutInfo]:
        """Every rollout, newest first."""
        async with self._engine.connect() as conn:
            ids = (
                await conn.execute(
                    sa.select(ROLLOUTS.c.rollout_id).order_by(ROLLOUTS.c.created_at.desc())
                )
            ).scalars()
            found = list(ids)
        return [await self.get(r) for r in found]

    async def latest(self) -> RolloutInfo | None:
        """The live rollout, else the newest one."""
        every = await self.every()
        live = [r for r in every if r.state in LIVE]
        found = live or every
        return found[0] if found else None

    async def hospitals(self, rollout_id: str) -> list[HospitalStatus]:
        """Every hospital of a rollout, in rollout order, with its edge's last report."""
        await self.get(rollout_id)
        query = (
            sa.select(
                TARGETS, EDGES.c.software_version, EDGES.c.contract_release, EDGES.c.last_report_at
            )
            .select_from(
                TARGETS.outerjoin(
                    EDGES,
                    sa.and_(
                        EDGES.c.hospital_id == TARGETS.c.hospital_id,
                        EDGES.c.edge_id == TARGETS.c.edge_id,
                    ),
                )
            )
            .where(TARGETS.c.rollout_id == rollout_id)
            .order_by(TARGETS.c.position)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            HospitalStatus(
                hospital_id=r.hospital_id,
                wave=r.wave,
                outdated=bool(r.outdated),
                state=r.state,
                edge_id=r.edge_id,
                reason=r.reason,
                message=r.message,
                version=r.software_version or "",
                contract_release=r.contract_release or "",
                last_report=_aware(r.last_report_at),
            )
            for r in rows
        ]

    async def reports(self, hospital_id: str | None = None) -> list[dict[str, Any]]:
        """Reported attempts and refusals, oldest first (of one hospital or all)."""
        query = sa.select(REPORTS).order_by(REPORTS.c.report_id)
        if hospital_id is not None:
            query = query.where(REPORTS.c.hospital_id == hospital_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [dict(r._mapping) for r in rows]

    async def edge_releases(self) -> dict[str, set[str]]:
        """Contract releases each hospital's edges last reported."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(EDGES.c.hospital_id, EDGES.c.contract_release))
            ).all()
        out: dict[str, set[str]] = {}
        for r in rows:
            if r.contract_release:
                out.setdefault(r.hospital_id, set()).add(r.contract_release)
        return out

    # -- edges ---------------------------------------------------------------------------

    async def assignment(self, hospital_id: str) -> tuple[RolloutInfo, HospitalStatus] | None:
        """The running rollout that offers ``hospital_id`` its target now, if any."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(ROLLOUTS, TARGETS.c.wave, TARGETS.c.state.label("target_state"))
                    .join(TARGETS, TARGETS.c.rollout_id == ROLLOUTS.c.rollout_id)
                    .where(
                        ROLLOUTS.c.state == RUNNING,
                        TARGETS.c.hospital_id == hospital_id,
                        TARGETS.c.wave <= ROLLOUTS.c.current_wave,
                        TARGETS.c.state.not_in(_FINAL),
                    )
                )
            ).first()
        if row is None:
            return None
        info = _info(row, {})
        target = HospitalStatus(
            hospital_id=hospital_id,
            wave=row.wave,
            outdated=False,
            state=row.target_state,
            edge_id="",
            reason="",
            message="",
            version="",
            contract_release="",
            last_report=None,
        )
        return info, target

    async def offered(self, rollout_id: str, hospital_id: str, edge_id: str) -> None:
        """Note that ``edge_id`` of ``hospital_id`` was handed the rollout's manifest."""
        async with self._lock, self._engine.begin() as conn:
            await conn.execute(
                TARGETS.update()
                .where(
                    TARGETS.c.rollout_id == rollout_id,
                    TARGETS.c.hospital_id == hospital_id,
                    TARGETS.c.state == PENDING,
                )
                .values(state=OFFERED, edge_id=edge_id, updated_at=_now())
            )

    async def finish(
        self,
        rollout_id: str,
        hospital_id: str,
        edge_id: str,
        *,
        ok: bool,
        reason: str,
        message: str,
    ) -> None:
        """Record a hospital's outcome in a rollout and advance the rollout."""
        async with self._lock, self._engine.begin() as conn:
            await self._locked(conn, rollout_id)
            await self._finish(conn, rollout_id, hospital_id, edge_id, ok, reason, message)
            await self._advance(conn, rollout_id)

    async def _finish(
        self,
        conn: AsyncConnection,
        rollout_id: str,
        hospital_id: str,
        edge_id: str,
        ok: bool,
        reason: str,
        message: str,
    ) -> None:
        await conn.execute(
            TARGETS.update()
            .where(
                TARGETS.c.rollout_id == rollout_id,
                TARGETS.c.hospital_id == hospital_id,
                TARGETS.c.state.not_in(_FINAL),
            )
            .values(
                state=SUCCEEDED if ok else FAILED,
                edge_id=edge_id,
                reason=reason[:64],
                message=message[:_MAX_TEXT],
                updated_at=_now(),
            )
        )

    async def record_report(self, report: EdgeReport) -> None:
        """Keep an edge's report; a new attempt becomes evidence and may end its target.

        The attempt counts for the live rollout that offered the hospital its target: an
        installed target version is success; a refused FULL package or a failed health
        gate is failure (a refused DELTA is only evidence: the edge falls back to FULL).
        The same attempt reported again (every periodic report repeats it) is ignored.
        """
        now = _now()
        async with self._lock, self._engine.begin() as conn:
            edge = (
                await conn.execute(
                    sa.select(EDGES).where(
                        EDGES.c.hospital_id == report.hospital_id,
                        EDGES.c.edge_id == report.edge_id,
                    )
                )
            ).first()
            values = {
                "software_version": report.software_version[:64],
                "contract_release": report.contract_release[:64],
                "standby_version": report.standby_version[:64],
                "pending_package_id": report.pending_package_id[:128],
                "last_report_at": now,
            }
            new_attempt = report.attempt_at is not None and (
                edge is None
                or edge.last_attempt_at is None
                or _aware(edge.last_attempt_at) != report.attempt_at
            )
            if new_attempt:
                values["last_attempt_at"] = report.attempt_at
            if edge is None:
                await conn.execute(
                    EDGES.insert().values(
                        hospital_id=report.hospital_id, edge_id=report.edge_id, **values
                    )
                )
            else:
                await conn.execute(
                    EDGES.update()
                    .where(
                        EDGES.c.hospital_id == report.hospital_id,
                        EDGES.c.edge_id == report.edge_id,
                    )
                    .values(**values)
                )
            if not new_attempt or report.attempt_ok is None:
                return
            assert report.attempt_at is not None
            live = (
                await conn.execute(
                    sa.select(ROLLOUTS.c.rollout_id, ROLLOUTS.c.target_version)
                    .join(TARGETS, TARGETS.c.rollout_id == ROLLOUTS.c.rollout_id)
                    .where(
                        ROLLOUTS.c.state.in_(LIVE),
                        TARGETS.c.hospital_id == report.hospital_id,
                    )
                )
            ).first()
            await conn.execute(
                REPORTS.insert().values(
                    hospital_id=report.hospital_id,
                    edge_id=report.edge_id,
                    rollout_id=live.rollout_id if live else "",
                    ok=report.attempt_ok,
                    reason=report.reason[:64],
                    message=report.message[:_MAX_TEXT],
                    version=report.attempt_version[:64],
                    package_id=report.package_id[:128],
                    package_kind=report.package_kind[:8],
                    attempt_at=report.attempt_at,
                    received_at=now,
                )
            )
            if live is None:
                return
            on_target = report.attempt_version == live.target_version or (
                report.software_version == live.target_version
            )
            if report.attempt_ok and report.software_version == live.target_version:
                ok = True
            elif not report.attempt_ok and on_target and report.package_kind != "DELTA":
                ok = False
            else:
                return
            await self._locked(conn, live.rollout_id)
            await self._finish(
                conn,
                live.rollout_id,
                report.hospital_id,
                report.edge_id,
                ok,
                report.reason,
                report.message,
            )
            await self._advance(conn, live.rollout_id)

    async def _advance(self, conn: AsyncConnection, rollout_id: str) -> None:
        row = await self._locked(conn, rollout_id)
        if row.state != RUNNING:
            return
        waves = [int(w) for w in row.waves.split(",")]
        targets = (
            await conn.execute(
                sa.select(TARGETS.c.wave, TARGETS.c.state, TARGETS.c.hospital_id).where(
                    TARGETS.c.rollout_id == rollout_id
                )
            )
        ).all()
        failed = [t for t in targets if t.state == FAILED]
        state, wave, why = RUNNING, row.current_wave, ""
        canary = [t for t in failed if t.wave == 0]
        if canary:
            state = STOPPED
            why = f"the canary {canary[0].hospital_id} failed; nothing else was offered"
        elif len(failed) > row.max_failures:
            state = STOPPED
            why = f"{len(failed)} hospitals failed, more than --max-failures {row.max_failures}"
        else:
            while all(t.state in _FINAL for t in targets if t.wave <= wave):
                if wave + 1 >= len(waves):
                    state = COMPLETED
                    break
                wave += 1
        if (state, wave) != (row.state, row.current_wave):
            await conn.execute(
                ROLLOUTS.update()
                .where(ROLLOUTS.c.rollout_id == rollout_id)
                .values(state=state, current_wave=wave, stop_reason=why, updated_at=_now())
            )

    async def live_targets(self) -> set[str]:
        """Target versions of live rollouts (their deltas are kept)."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(ROLLOUTS.c.target_version).where(ROLLOUTS.c.state.in_(LIVE))
                )
            ).scalars()
            return set(rows)


def _info(row: Any, counts: dict[str, int]) -> RolloutInfo:
    return RolloutInfo(
        rollout_id=row.rollout_id,
        target_version=row.target_version,
        waves=tuple(int(w) for w in row.waves.split(",")),
        max_failures=row.max_failures,
        state=row.state,
        current_wave=row.current_wave,
        window=(row.window_start, row.window_end) if row.window_start else None,
        stop_reason=row.stop_reason,
        created_at=_aware(row.created_at) or _now(),
        updated_at=_aware(row.updated_at) or _now(),
        counts=counts,
    )


def newer(version: str, than: str) -> bool:
    """Whether semver ``version`` is newer than ``than`` (an unparsable ``than`` is older)."""
    try:
        return semver.Version.parse(version) > semver.Version.parse(than)
    except ValueError:
        return True

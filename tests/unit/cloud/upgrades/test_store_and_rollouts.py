"""The package store (publish verified, deltas cached and bounded) and rollouts in waves."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.upgrades import EdgeReport, PackageStore, Rollouts, migrate_upgrades, parse_waves
from cloud.upgrades._schema import METADATA
from mesh import errors
from tests.support.upgrades import Keys, package

HOSPITALS = [f"h-{i:03}" for i in range(20)]


def test_public_surface_is_pinned() -> None:
    import cloud.upgrades

    assert cloud.upgrades.__all__ == [
        "DEFAULT_CHUNK",
        "DELTA",
        "DOMAIN",
        "FULL",
        "LIVE",
        "MAX_CHUNK",
        "MIN_CHUNK",
        "ByteBucket",
        "EdgeReport",
        "HospitalStatus",
        "PackageStore",
        "RolloutInfo",
        "Rollouts",
        "StoredPackage",
        "UpgradeHandlers",
        "migrate_upgrades",
        "parse_waves",
        "parse_window",
    ]


async def test_migration_matches_the_schema_and_is_repeatable(db_engine: AsyncEngine) -> None:
    await migrate_upgrades(db_engine)
    await migrate_upgrades(db_engine)

    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": "alembic_version_upgrades"}
        )
        return compare_metadata(ctx, METADATA), inspect(conn).get_table_names()

    async with db_engine.connect() as conn:
        changes, tables = await conn.run_sync(diff)
    assert changes == []
    assert "alembic_version_upgrades" in tables


@pytest.fixture
async def engine(db_engine: AsyncEngine) -> AsyncEngine:
    await migrate_upgrades(db_engine)
    return db_engine


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def _file(tmp: Path, keys: Keys, version: str, **kwargs: object) -> Path:
    path = tmp / f"{version}.pkg"
    path.write_bytes(package(keys, version, **kwargs))  # type: ignore[arg-type]
    return path


async def _reason(coro: object) -> str:
    with pytest.raises(errors.StatusError) as caught:
        await coro  # type: ignore[misc]
    return caught.value.reason


async def test_publish_verifies_first_and_a_version_is_published_once(
    engine: AsyncEngine, tmp_path: Path, keys: Keys
) -> None:
    store = PackageStore(engine, tmp_path / "store", trust=keys.trust)
    assert (
        await _reason(PackageStore(engine, tmp_path / "s2").publish(_file(tmp_path, keys, "1.0.0")))
        == "NO_TRUSTED_ROOT"
    )
    assert await _reason(store.publish(_file(tmp_path, Keys(), "1.0.0"))) == "UNKNOWN_KEY"
    unsigned = tmp_path / "unsigned.pkg"
    data = bytearray(package(keys, "1.0.0"))
    data[data.find(b"hplus_edge.whl", 2000) + 900] ^= 1
    unsigned.write_bytes(bytes(data))
    assert await _reason(store.publish(unsigned)) == "FILE_MODIFIED"

    first = await store.publish(_file(tmp_path, keys, "1.0.0"))
    assert await store.publish(tmp_path / "1.0.0.pkg") == first  # the same file: idempotent
    assert first.path.read_bytes() == (tmp_path / "1.0.0.pkg").read_bytes()
    assert await _reason(store.publish(_file(tmp_path, keys, "1.0.0", broken=True))) == (
        "VERSION_EXISTS"
    )
    assert oct(first.path.stat().st_mode & 0o777) == "0o600"


async def test_deltas_go_from_the_newest_older_versions_to_the_latest_and_are_pruned(
    engine: AsyncEngine, tmp_path: Path, keys: Keys
) -> None:
    store = PackageStore(engine, tmp_path / "store", trust=keys.trust, max_delta_bases=2)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        await store.publish(_file(tmp_path, keys, v))
    deltas = [p for p in await store.packages() if p.kind == "DELTA"]
    assert sorted(p.base_version for p in deltas) == ["1.0.0", "1.1.0"]
    assert {p.version for p in deltas} == {"1.2.0"}
    latest = await store.full("1.2.0")
    assert all(p.size < latest.size / 2 for p in deltas)
    base = await store.full("1.1.0")
    found = await store.delta_for(latest, base.package_id)
    assert found is not None
    assert found.base_sha256 == base.sha256
    assert await store.ensure_deltas("1.2.0") == []  # cached: nothing computed again

    await store.publish(_file(tmp_path, keys, "1.3.0"))
    deltas = [p for p in await store.packages() if p.kind == "DELTA"]
    assert sorted((p.base_version, p.version) for p in deltas) == [
        ("1.1.0", "1.3.0"),
        ("1.2.0", "1.3.0"),
    ]
    assert not found.path.exists()  # pruned with its row
    # A live rollout to an older target keeps (and gets) its deltas.
    await store.ensure_deltas("1.2.0", keep={"1.3.0"})
    assert len([p for p in await store.packages() if p.kind == "DELTA"]) == 4


def test_waves_are_cumulative_counts_and_percentages() -> None:
    assert parse_waves("1,10%,50%,100%", 50) == [1, 5, 25, 50]
    assert parse_waves("1,10%,50%,100%", 3) == [1, 2, 3]
    assert parse_waves("2,2,100%", 10) == [2, 10]
    for bad in ("", "0", "1,x", "150%", "5,2"):
        with pytest.raises(errors.InvalidArgument) as caught:
            parse_waves(bad, 10)
        assert caught.value.field_violations[0].field == "waves"


def _report(hospital: str, version: str, ok: bool, *, at: int, kind: str = "FULL") -> EdgeReport:
    import datetime as dt

    return EdgeReport(
        hospital_id=hospital,
        edge_id=f"e-{hospital}",
        software_version="2.0.0" if ok else "1.0.0",
        contract_release="1.2.0",
        standby_version="",
        pending_package_id="",
        attempt_ok=ok,
        attempt_at=dt.datetime(2026, 12, 6, 3, 0, at, tzinfo=dt.UTC),
        reason="" if ok else "HEALTH_GATE_FAILED",
        message="",
        attempt_version=version,
        package_id="p",
        package_kind=kind,
    )


async def _offered(rollouts: Rollouts) -> list[str]:
    return [h for h in HOSPITALS if await rollouts.assignment(h) is not None]


async def test_waves_open_as_the_open_wave_succeeds_and_the_rollout_completes(
    engine: AsyncEngine,
) -> None:
    rollouts = Rollouts(engine)
    info = await rollouts.create(
        target_version="2.0.0", waves="1,25%,100%", max_failures=1, hospitals=HOSPITALS
    )
    assert info.waves == (1, 5, 20)
    assert info.state == "running"
    offered = await _offered(rollouts)
    assert len(offered) == 1  # the canary alone
    canary = offered[0]
    assert (
        await _reason(
            rollouts.create(
                target_version="2.0.0", waves="100%", max_failures=0, hospitals=HOSPITALS
            )
        )
        == "ROLLOUT_LIVE"
    )
    await rollouts.record_report(_report(canary, "2.0.0", True, at=1))
    await rollouts.record_report(_report(canary, "2.0.0", True, at=1))  # repeated: ignored
    assert len(await rollouts.reports(canary)) == 1
    second = await _offered(rollouts)
    assert len(second) == 4
    assert canary not in second
    # One failure is within the budget; the wave still opens the next when all are done.
    await rollouts.record_report(_report(second[0], "2.0.0", False, at=2))
    for i, h in enumerate(second[1:]):
        await rollouts.record_report(_report(h, "2.0.0", True, at=3 + i))
    assert len(await _offered(rollouts)) == 15
    paused = await rollouts.pause(info.rollout_id)
    assert paused.state == "paused"
    assert await _offered(rollouts) == []
    await rollouts.resume(info.rollout_id)
    for i, h in enumerate(await _offered(rollouts)):
        await rollouts.record_report(_report(h, "2.0.0", True, at=10 + i))
    done = await rollouts.get(info.rollout_id)
    assert done.state == "completed"
    assert done.counts == {"succeeded": 19, "failed": 1}
    status = await rollouts.hospitals(info.rollout_id)
    assert status[0].hospital_id == canary
    assert status[0].version == "2.0.0"
    assert status[0].last_report is not None


async def test_a_failed_canary_stops_the_rollout_and_nothing_else_is_offered(
    engine: AsyncEngine,
) -> None:
    rollouts = Rollouts(engine)
    info = await rollouts.create(
        target_version="2.0.0", waves="1,100%", max_failures=5, hospitals=HOSPITALS
    )
    canary = (await _offered(rollouts))[0]
    # A refused delta is evidence only; the failure is the full package's gate.
    await rollouts.record_report(_report(canary, "2.0.0", False, at=1, kind="DELTA"))
    assert (await rollouts.get(info.rollout_id)).state == "running"
    await rollouts.record_report(_report(canary, "2.0.0", False, at=2))
    stopped = await rollouts.get(info.rollout_id)
    assert stopped.state == "stopped"
    assert canary in stopped.stop_reason
    assert await _offered(rollouts) == []
    aborted = await rollouts.abort(info.rollout_id)
    assert aborted.state == "aborted"
    assert await _reason(rollouts.resume(info.rollout_id)) == "ROLLOUT_STATE"


async def test_failures_beyond_the_budget_stop_the_rollout(engine: AsyncEngine) -> None:
    rollouts = Rollouts(engine)
    info = await rollouts.create(
        target_version="2.0.0", waves="1,100%", max_failures=1, hospitals=HOSPITALS[:6]
    )
    canary = (await _offered(rollouts))[0]
    await rollouts.record_report(_report(canary, "2.0.0", True, at=1))
    rest = await _offered(rollouts)
    await rollouts.record_report(_report(rest[0], "2.0.0", False, at=2))
    assert (await rollouts.get(info.rollout_id)).state == "running"
    await rollouts.record_report(_report(rest[1], "2.0.0", False, at=3))
    stopped = await rollouts.get(info.rollout_id)
    assert stopped.state == "stopped"
    assert "more than --max-failures 1" in stopped.stop_reason


async def test_outdated_hospitals_go_first(engine: AsyncEngine) -> None:
    rollouts = Rollouts(engine)
    late = {"h-017", "h-003"}
    info = await rollouts.create(
        target_version="2.0.0",
        waves="1,2,100%",
        max_failures=0,
        hospitals=HOSPITALS,
        outdated=late,
        outdated_first=True,
    )
    status = await rollouts.hospitals(info.rollout_id)
    assert {s.hospital_id for s in status[:2]} == late
    assert all(s.outdated for s in status[:2])
    assert not any(s.outdated for s in status[2:])

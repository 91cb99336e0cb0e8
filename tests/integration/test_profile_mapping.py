"""A vendor upgrade renames a field; the hospital's profile, not code, fixes it.

Each test runs a simulated HIS, builds the adapter the way the edge does (load the example
hospital's profile, :func:`dialect_settings`, :func:`make_adapter`), and makes the
simulator rename a field on the wire. The call then fails with a protocol error naming
the field; a hospital override that maps the new name, in TOML only, makes the same call
succeed again with the same answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from frontend_server.adapters import HisAdapter, HisProtocolError, make_adapter
from frontend_server.profile import Profile, load_profile
from frontend_server.services import dialect_settings
from hplus.hospital.v1 import directory_pb2
from tests.integration.hospital_env import hospital, simulator, write_profile
from tools.his_sim import DbHis, RenameField, SimBase

PREFIX = "T7_"


async def departments(adapter: HisAdapter) -> Any:
    return await adapter.list_departments()


async def schedules(adapter: HisAdapter) -> Any:
    return await adapter.list_schedules()


# dialect, vendor name, its name after the upgrade, the profile's fix, the call that reads it
CASES = [
    ("rest", "deptName", "deptTitle", '[fields.department]\nname = "deptTitle"\n', departments),
    ("rest", "totalNum", "quotaNum", '[fields.schedule]\nquota = "quotaNum"\n', schedules),
    ("soap", "KSMC", "KSMC2", '[fields.department]\nname = "KSMC2"\n', departments),
    ("soap", "ZHS", "ZHS2", '[fields.schedule]\nquota = "ZHS2"\n', schedules),
    ("db", "DEPT_NAME", "DEPT_TITLE", '[fields.department]\nname = "DEPT_TITLE"\n', departments),
    ("db", "TOTAL_NUM", "TOTAL_QTY", '[fields.schedule]\nquota = "TOTAL_QTY"\n', schedules),
]


def url_and_prefix(his: SimBase) -> tuple[str, str]:
    """The URL of the HIS and a profile section naming its table prefix (database only)."""
    if isinstance(his, DbHis):
        return his.db_url, f'[his.db]\ntable_prefix = "{his.prefix}"\n'
    return his.base_url, ""


def sim(dialect: str) -> SimBase:
    if dialect == "db":
        return DbHis(seed=11, table_prefix=PREFIX, poll_interval=0.005)
    return simulator(dialect)


def profile_of(directory: Path, dialect: str, his: SimBase, extra: str) -> Profile:
    """The example hospital's profile pointed at ``his``, with ``extra`` TOML appended."""
    url, prefix = url_and_prefix(his)
    directory.mkdir()
    return load_profile(write_profile(directory, dialect, url, extra=prefix + extra))


async def call(profile: Profile, read: Callable[[HisAdapter], Awaitable[Any]]) -> Any:
    """Build the adapter through the bridge, as the edge does, and make one call."""
    async with make_adapter(dialect_settings(profile)) as adapter:
        return await read(adapter)


@pytest.mark.parametrize(
    ("dialect", "old", "new", "fix", "read"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
async def test_a_renamed_field_is_fixed_by_the_hospital_profile(
    tmp_path: Path,
    dialect: str,
    old: str,
    new: str,
    fix: str,
    read: Callable[[HisAdapter], Awaitable[Any]],
) -> None:
    async with sim(dialect) as his:
        before = await call(profile_of(tmp_path / "before", dialect, his, ""), read)
        assert before  # the seed has departments and schedules

        await his.inject(RenameField(old=old, new=new))
        with pytest.raises(HisProtocolError) as info:
            await call(profile_of(tmp_path / "upgraded", dialect, his, ""), read)
        assert info.value.field == old
        assert old in str(info.value)

        # Only the hospital's TOML changes: the same call reads the same records again.
        assert await call(profile_of(tmp_path / "fixed", dialect, his, fix), read) == before


async def test_the_edge_serves_through_a_renamed_field_mapped_in_its_profile(
    tmp_path: Path,
) -> None:
    """End to end: the edge (EdgeApp) built from the fixed profile answers the cloud."""
    fix = '[fields.department]\nname = "deptTitle"\n'
    async with hospital("rest", tmp_path, extra=fix) as env:
        await env.his.inject(RenameField(old="deptName", new="deptTitle"))
        reply = await env.directory.ListDepartments(
            directory_pb2.ListDepartmentsRequest(), timeout=15.0
        )
        names = {d.department_id: d.name for d in reply.departments}
        expected = {d.dept_id: d.name for d in env.his.core.departments.values()}
        # Parent departments are not bookable, so the edge lists the others.
        assert names
        assert names.items() <= expected.items()
        assert env.his.request_log[-1].outcome == "ok"

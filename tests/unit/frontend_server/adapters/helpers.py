"""Helpers of the HIS adapter contract suite (imported by the tests and the fixtures)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from frontend_server.adapters import DialectSettings, HisRejected, make_adapter
from tests.support.ports import refused_port
from tools.his_sim import DbHis, SimBase


def settings_for(his: SimBase, **overrides: Any) -> DialectSettings:
    """Settings that reach ``his``; ``overrides`` replace any field."""
    values: dict[str, Any] = {
        "dialect": his.dialect,
        "url": his.db_url if isinstance(his, DbHis) else his.base_url,
        "read_timeout_seconds": 5.0,
        "write_timeout_seconds": 5.0,
        "db_poll_initial_seconds": 0.002,
        "db_poll_max_seconds": 0.02,
    }
    if isinstance(his, DbHis):
        values["table_prefix"] = his.prefix
    values.update(overrides)
    return DialectSettings(**values)


async def mirror(his: SimBase) -> None:
    """Waits until the database HIS has copied direct core edits into its views.

    A change made straight on ``his.core`` (a clerk suspending a session, an archive fault)
    reaches the views on the simulator's next cycle. The HIS mirrors every pending change
    before it writes a procedure's response row, so one procedure round trip (here a
    harmless lookup of a report that does not exist) is a deterministic barrier.
    """
    if isinstance(his, DbHis):
        async with make_adapter(settings_for(his)) as a:
            with contextlib.suppress(HisRejected):
                await a.get_report("NO-SUCH-REPORT", patient_id="NO-SUCH-PATIENT")


@contextlib.contextmanager
def dead_url(dialect: str, tmp: str) -> Iterator[str]:
    """A URL where nothing answers: a refusing local port, or a database that cannot open."""
    if dialect == "db":
        yield f"sqlite+aiosqlite:///{tmp}/missing-dir/his.db"
        return
    with refused_port() as port:
        yield f"http://127.0.0.1:{port}"

"""The node's span store: the recent failed calls of one hospital (the dashboard's links)."""

from __future__ import annotations

import secrets
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.traces import NodeSpanStore, migrate_traces
from mesh.observability import SpanRecord


def record(
    trace_id: str, hospital: str, *, code: int, age: float, name: str = "svc/M"
) -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id,
        span_id=secrets.token_hex(8),
        parent_span_id="",
        name=name,
        kind="client",
        node="n1",
        hospital_id=hospital,
        start_ns=time.time_ns() - int(age * 1e9),
        duration_ns=1000,
        code=code,
        message="UNAVAILABLE" if code else "",
        attributes={},
    )


async def test_recent_failures_are_the_hospitals_newest_one_per_trace(
    db_engine: AsyncEngine,
) -> None:
    await migrate_traces(db_engine)
    store = NodeSpanStore(db_engine, max_spans=10_000, retention=600.0, prune_interval=1e9)
    t1, t2, t3, other, ok, old = (secrets.token_hex(16) for _ in range(6))
    await store.write(
        [
            # t1 failed twice (server and client spans), the newest of them is kept.
            record(t1, "h-1", code=14, age=30, name="first"),
            record(t1, "h-1", code=14, age=29, name="second"),
            record(t2, "h-1", code=4, age=20),
            record(t3, "h-1", code=14, age=10),
            record(ok, "h-1", code=0, age=5),  # succeeded: not a failure
            record(other, "h-2", code=14, age=1),  # another hospital's
            record(old, "h-1", code=14, age=900),  # past retention
        ]
    )
    found = await store.recent_failures("h-1")
    assert [f.trace_id for f in found] == [t3, t2, t1]
    assert found[2].name == "second"
    assert (found[0].code, found[0].message, found[0].node) == (14, "UNAVAILABLE", "n1")
    assert [f.trace_id for f in await store.recent_failures("h-1", limit=2)] == [t3, t2]
    assert [f.trace_id for f in await store.recent_failures("h-2")] == [other]
    assert await store.recent_failures("h-3") == []

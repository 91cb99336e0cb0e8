"""Both span stores stay within their bounds: the edge's ring and the node's table."""

from __future__ import annotations

import secrets
import stat
import time
from pathlib import Path

from cloud.db import create_engine
from cloud.traces import NodeSpanStore, migrate_traces
from frontend_server.traces import SpanRing
from mesh.observability import SpanRecord, Tracing


def _record(trace_id: str, *, age: float = 0.0, name: str = "x.Y/Z") -> SpanRecord:
    return SpanRecord(
        trace_id=trace_id,
        span_id=secrets.token_hex(8),
        parent_span_id="",
        name=name,
        kind="server",
        node="n1",
        hospital_id="h-1",
        start_ns=time.time_ns() - int(age * 1e9),
        duration_ns=1_000_000,
        code=0,
        message="",
        attributes={"k": "v"},
    )


async def test_the_edge_ring_never_holds_more_than_its_capacity(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    ring = SpanRing(path, capacity=50, retention=3600.0)
    ring.open()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old, new = secrets.token_hex(16), secrets.token_hex(16)
    await ring.write([_record(old) for _ in range(30)])
    for _ in range(5):
        await ring.write([_record(new) for _ in range(20)])
    assert ring.count() == 50
    assert await ring.lookup(old) == []  # overwritten
    assert len(await ring.lookup(new)) == 50
    ring.close()
    path.chmod(0o644)  # as an older release might have left it
    # Reopened, it goes on from where it was (slots keep rotating), owner-only again.
    again = SpanRing(path, capacity=50, retention=3600.0)
    again.open()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await again.write([_record(old) for _ in range(10)])
    assert again.count() == 50
    assert len(await again.lookup(old)) == 10
    again.close()


async def test_the_edge_ring_drops_spans_past_their_retention(tmp_path: Path) -> None:
    ring = SpanRing(tmp_path / "traces.db", capacity=100, retention=60.0)
    ring.open()
    trace_id = secrets.token_hex(16)
    await ring.write([_record(trace_id, age=120.0), _record(trace_id)])
    assert len(await ring.lookup(trace_id)) == 1
    assert ring.count() == 1  # the first write prunes what is past retention
    ring.close()


async def test_a_damaged_ring_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "traces.db"
    path.write_bytes(b"not a database at all" * 100)
    ring = SpanRing(path, capacity=10)
    ring.open()
    await ring.write([_record(secrets.token_hex(16))])
    assert ring.count() == 1
    assert (tmp_path / "traces.db.damaged").exists()
    ring.close()


async def test_the_node_table_is_pruned_to_its_count_and_age(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'traces.db'}")
    try:
        await migrate_traces(engine)
        store = NodeSpanStore(engine, max_spans=100, retention=60.0, prune_interval=0.0)
        old, new = secrets.token_hex(16), secrets.token_hex(16)
        await store.write([_record(old, age=120.0) for _ in range(10)])
        assert await store.count() == 0  # past retention: pruned after the write
        for _ in range(4):
            await store.write([_record(new) for _ in range(40)])
        assert await store.count() == 100
        assert len(await store.lookup(new)) == 100
        assert await store.lookup(old) == []
    finally:
        await engine.dispose()


async def test_tracing_flushes_ended_spans_to_its_store_with_a_bounded_queue(
    tmp_path: Path,
) -> None:
    ring = SpanRing(None, capacity=1000)
    ring.open()
    tracing = Tracing(service="test", node="edge-1", sink=ring, queue_capacity=5)
    with tracing.tracer.start_as_current_span("outer") as outer:
        for i in range(9):
            tracing.tracer.start_span(f"inner-{i}").end()
    assert tracing.pending == 5  # the oldest waiting spans were dropped, not held
    await tracing.flush()
    trace_id = format(outer.get_span_context().trace_id, "032x")
    stored = await ring.lookup(trace_id)
    assert sorted(r.name for r in stored) == ["inner-5", "inner-6", "inner-7", "inner-8", "outer"]
    assert all(r.node == "edge-1" for r in stored)
    await tracing.shutdown()
    ring.close()

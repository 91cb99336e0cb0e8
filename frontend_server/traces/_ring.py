"""The edge's span store: a SQLite ring buffer of fixed capacity.

Row ``seq % capacity`` is overwritten by span number ``seq``, so the file never holds more
than ``capacity`` spans whatever the traffic; spans older than ``retention`` are neither
returned nor kept (deleted on the next write after a minute). The file lives in the data
directory, owner-only; without one (an edge with no profile) the buffer is in memory.
Blocking SQLite work runs in a worker thread, one statement batch at a time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mesh.files import ensure_private_file, sqlite_files, tighten
from mesh.observability import SpanRecord

__all__ = ["SpanRing"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    slot INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    node TEXT NOT NULL,
    hospital_id TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    code INTEGER NOT NULL,
    message TEXT NOT NULL,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
"""


class SpanRing:
    """A bounded span store for one edge.

    Args:
        path: the SQLite file (created owner-only), or ``None`` for memory.
        capacity: spans kept at most.
        retention: seconds a span is kept.
    """

    def __init__(
        self, path: Path | None, *, capacity: int = 100_000, retention: float = 86400.0
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.retention = retention
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._next = 0
        self._last_prune = 0.0

    def open(self) -> None:
        """Opens (creates) the file; until then writes wait in the tracer's queue.

        A file that is not a span ring (damaged, or another kind) is set aside as
        ``traces.db.damaged`` and begun anew: spans are diagnostics, not evidence.
        """
        if self._db is not None:
            return
        path = self._path
        if path is not None:
            # An older looser mode is tightened (spans name hospitals and operations).
            tighten(sqlite_files(path))
            ensure_private_file(path)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError:
            if path is None:
                raise
            path.replace(path.with_name(path.name + ".damaged"))
            ensure_private_file(path)
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        path = self._path
        db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False)
        try:
            with self._lock:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # spans are not evidence
                db.executescript(_SCHEMA)
                row = db.execute("SELECT MAX(seq) FROM spans").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._next = 0 if row[0] is None else int(row[0]) + 1
        return db

    def _write(self, records: Sequence[SpanRecord]) -> None:
        rows = []
        for r in records:
            seq = self._next
            self._next += 1
            rows.append(
                (
                    seq % self.capacity, seq, r.trace_id, r.span_id, r.parent_span_id, r.name,
                    r.kind, r.node, r.hospital_id, r.start_ns, r.duration_ns, r.code,
                    r.message, r.attributes_json(),
                )
            )  # fmt: skip
        db = self._db
        if db is None:
            raise RuntimeError("span ring is not open")
        with self._lock, db:
            db.executemany(
                "INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
            )
            now = time.monotonic()
            if now - self._last_prune >= 60.0:
                self._last_prune = now
                cutoff = time.time_ns() - int(self.retention * 1e9)
                db.execute("DELETE FROM spans WHERE start_ns < ?", (cutoff,))

    async def write(self, records: Sequence[SpanRecord]) -> None:
        """Stores a batch (overwriting the oldest slots once full)."""
        if records:
            await asyncio.to_thread(self._write, records)

    def _lookup(self, trace_id: str, limit: int, offset: int) -> list[SpanRecord]:
        cutoff = time.time_ns() - int(self.retention * 1e9)
        if self._db is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT trace_id, span_id, parent_span_id, name, kind, node, hospital_id, "
                "start_ns, duration_ns, code, message, attributes FROM spans "
                "WHERE trace_id = ? AND start_ns >= ? ORDER BY start_ns, seq LIMIT ? OFFSET ?",
                (trace_id, cutoff, limit, offset),
            ).fetchall()
        return [
            SpanRecord(
                trace_id=r[0], span_id=r[1], parent_span_id=r[2], name=r[3], kind=r[4],
                node=r[5], hospital_id=r[6], start_ns=r[7], duration_ns=r[8], code=r[9],
                message=r[10], attributes=json.loads(r[11] or "{}"),
            )
            for r in rows
        ]  # fmt: skip

    async def lookup(
        self, trace_id: str, *, limit: int = 5000, offset: int = 0
    ) -> list[SpanRecord]:
        """Spans of ``trace_id`` within the retention, by start time."""
        return await asyncio.to_thread(self._lookup, trace_id, limit, offset)

    def count(self) -> int:
        """Rows held (at most ``capacity``)."""
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM spans").fetchone()[0])

    def close(self) -> None:
        """Closes the file."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

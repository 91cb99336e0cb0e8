"""The payment simulator's state in SQLite: payments, refunds, notifications survive a restart."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["CST", "NotificationRow", "RefundRow", "SimStore", "TradeRow"]

CST = dt.timezone(dt.timedelta(hours=8), "UTC+8")
"""The channel's time zone: business dates and statement files are in UTC+8."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trades (
    out_trade_no TEXT PRIMARY KEY,
    prepay_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL,
    payer TEXT NOT NULL,
    amount INTEGER NOT NULL,
    notify_url TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    success_time TEXT
);
CREATE TABLE IF NOT EXISTS refunds (
    out_refund_no TEXT PRIMARY KEY,
    out_trade_no TEXT NOT NULL,
    refund_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    total INTEGER NOT NULL,
    reason TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    status TEXT NOT NULL,
    create_time TEXT NOT NULL,
    success_time TEXT,
    due_at REAL,
    held INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    ref TEXT NOT NULL,
    url TEXT NOT NULL,
    event_type TEXT NOT NULL,
    resource TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL,
    copies INTEGER NOT NULL DEFAULT 1,
    bad_signature TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
"""


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


@dataclasses.dataclass(frozen=True)
class TradeRow:
    """One payment (JSAPI order) as the channel holds it."""

    out_trade_no: str
    prepay_id: str
    transaction_id: str
    description: str
    payer: str
    amount: int
    notify_url: str
    state: str
    created_at: dt.datetime
    expires_at: dt.datetime
    success_time: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class RefundRow:
    """One refund as the channel holds it."""

    out_refund_no: str
    out_trade_no: str
    refund_id: str
    amount: int
    total: int
    reason: str
    notify_url: str
    status: str
    create_time: dt.datetime
    success_time: dt.datetime | None
    due_at: float | None
    held: bool


@dataclasses.dataclass(frozen=True)
class NotificationRow:
    """One notification the channel owes the merchant, and how its delivery went."""

    id: str
    event: str
    ref: str
    url: str
    event_type: str
    resource: str
    state: str
    """``pending``, ``held``, ``delivered``, ``lost`` or ``failed`` (retries used up)."""
    attempts: int
    due_at: float | None
    copies: int
    bad_signature: str
    created_at: dt.datetime


class SimStore:
    """A SQLite file (or memory) holding everything the simulator knows.

    Calls are synchronous and short; the simulator runs them in its event loop.
    """

    def __init__(self, path: Path | None) -> None:
        self._db = sqlite3.connect(str(path) if path is not None else ":memory:")
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        """Closes the database."""
        self._db.close()

    # ---------------------------------------------------------------- meta

    def meta(self, key: str) -> str | None:
        """A stored setting (keys, counters), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        """Stores a setting."""
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        self._db.commit()

    def next_serial(self, name: str) -> int:
        """The next number of a persistent counter (ids stay unique across restarts)."""
        current = int(self.meta(f"serial:{name}") or "0") + 1
        self.set_meta(f"serial:{name}", str(current))
        return current

    # ---------------------------------------------------------------- trades

    def trade(self, out_trade_no: str) -> TradeRow | None:
        """The payment with this out-trade number, or None."""
        row = self._db.execute(
            "SELECT * FROM trades WHERE out_trade_no = ?", (out_trade_no,)
        ).fetchone()
        return None if row is None else _trade(row)

    def trades(self) -> list[TradeRow]:
        """Every payment, oldest first."""
        return [_trade(r) for r in self._db.execute("SELECT * FROM trades ORDER BY rowid")]

    def insert_trade(self, trade: TradeRow) -> None:
        """Records a new payment."""
        self._db.execute(
            "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                trade.out_trade_no,
                trade.prepay_id,
                trade.transaction_id,
                trade.description,
                trade.payer,
                trade.amount,
                trade.notify_url,
                trade.state,
                trade.created_at.isoformat(),
                trade.expires_at.isoformat(),
                trade.success_time.isoformat() if trade.success_time else None,
            ),
        )
        self._db.commit()

    def update_trade(self, out_trade_no: str, **changes: Any) -> None:
        """Changes columns of a payment."""
        _update(self._db, "trades", "out_trade_no", out_trade_no, changes)

    # ---------------------------------------------------------------- refunds

    def refund(self, out_refund_no: str) -> RefundRow | None:
        """The refund with this out-refund number, or None."""
        row = self._db.execute(
            "SELECT * FROM refunds WHERE out_refund_no = ?", (out_refund_no,)
        ).fetchone()
        return None if row is None else _refund(row)

    def refunds(self, out_trade_no: str | None = None) -> list[RefundRow]:
        """Refunds (of one payment), oldest first."""
        if out_trade_no is None:
            rows = self._db.execute("SELECT * FROM refunds ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT * FROM refunds WHERE out_trade_no = ? ORDER BY rowid", (out_trade_no,)
            )
        return [_refund(r) for r in rows]

    def insert_refund(self, refund: RefundRow) -> None:
        """Records a new refund."""
        self._db.execute(
            "INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                refund.out_refund_no,
                refund.out_trade_no,
                refund.refund_id,
                refund.amount,
                refund.total,
                refund.reason,
                refund.notify_url,
                refund.status,
                refund.create_time.isoformat(),
                refund.success_time.isoformat() if refund.success_time else None,
                refund.due_at,
                int(refund.held),
            ),
        )
        self._db.commit()

    def update_refund(self, out_refund_no: str, **changes: Any) -> None:
        """Changes columns of a refund."""
        _update(self._db, "refunds", "out_refund_no", out_refund_no, changes)

    # ---------------------------------------------------------------- notifications

    def insert_notification(self, note: NotificationRow) -> None:
        """Records a notification to deliver."""
        self._db.execute(
            "INSERT INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                note.id,
                note.event,
                note.ref,
                note.url,
                note.event_type,
                note.resource,
                note.state,
                note.attempts,
                note.due_at,
                note.copies,
                note.bad_signature,
                note.created_at.isoformat(),
            ),
        )
        self._db.commit()

    def notifications(self, state: str | None = None) -> list[NotificationRow]:
        """Notifications (in one state), oldest first."""
        if state is None:
            rows = self._db.execute("SELECT * FROM notifications ORDER BY rowid")
        else:
            rows = self._db.execute(
                "SELECT * FROM notifications WHERE state = ? ORDER BY rowid", (state,)
            )
        return [_note(r) for r in rows]

    def update_notification(self, note_id: str, **changes: Any) -> None:
        """Changes columns of a notification."""
        _update(self._db, "notifications", "id", note_id, changes)


def _update(db: sqlite3.Connection, table: str, key: str, value: str, changes: Any) -> None:
    cols = ", ".join(f"{name} = ?" for name in changes)
    values = [v.isoformat() if isinstance(v, dt.datetime) else v for v in changes.values()]
    db.execute(f"UPDATE {table} SET {cols} WHERE {key} = ?", (*values, value))
    db.commit()


def _trade(row: sqlite3.Row) -> TradeRow:
    created = _time(row["created_at"])
    expires = _time(row["expires_at"])
    assert created is not None
    assert expires is not None
    return TradeRow(
        out_trade_no=row["out_trade_no"],
        prepay_id=row["prepay_id"],
        transaction_id=row["transaction_id"],
        description=row["description"],
        payer=row["payer"],
        amount=int(row["amount"]),
        notify_url=row["notify_url"],
        state=row["state"],
        created_at=created,
        expires_at=expires,
        success_time=_time(row["success_time"]),
    )


def _refund(row: sqlite3.Row) -> RefundRow:
    created = _time(row["create_time"])
    assert created is not None
    return RefundRow(
        out_refund_no=row["out_refund_no"],
        out_trade_no=row["out_trade_no"],
        refund_id=row["refund_id"],
        amount=int(row["amount"]),
        total=int(row["total"]),
        reason=row["reason"],
        notify_url=row["notify_url"],
        status=row["status"],
        create_time=created,
        success_time=_time(row["success_time"]),
        due_at=row["due_at"],
        held=bool(row["held"]),
    )


def _note(row: sqlite3.Row) -> NotificationRow:
    created = _time(row["created_at"])
    assert created is not None
    return NotificationRow(
        id=row["id"],
        event=row["event"],
        ref=row["ref"],
        url=row["url"],
        event_type=row["event_type"],
        resource=row["resource"],
        state=row["state"],
        attempts=int(row["attempts"]),
        due_at=row["due_at"],
        copies=int(row["copies"]),
        bad_signature=row["bad_signature"],
        created_at=created,
    )

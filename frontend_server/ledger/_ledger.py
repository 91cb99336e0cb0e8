"""The idempotency ledger: the cloud's keys, what happened under each, durably.

Protocol for a write (what :meth:`Ledger.execute` does):

1. Record the key, method and request fingerprint as IN_PROGRESS, and commit, *before*
   calling the HIS. A concurrent or later request with the key finds the entry: same
   parameters and finished → the original result is replayed; still running or unresolved →
   :class:`IdempotencyKeyInProgress`; other parameters → :class:`IdempotencyKeyReused`;
   fenced → :class:`IdempotencyKeyFenced`.
2. Call the HIS.
3. Record the outcome: SUCCEEDED with the HIS receipt and the response; FAILED for a
   definitive refusal (:class:`Refused`); key released for a call that provably had no
   effect (:class:`NoEffect`); UNKNOWN for anything else (timeout, broken connection,
   cancellation).

A crash between 2 and 3 leaves IN_PROGRESS in the file; :meth:`Ledger.recover` (run at
start) turns it into UNKNOWN, which the edge resolves by asking the HIS. So a retried write
is never sent twice, and "did key K happen?" always has an honest answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from frontend_server.ledger._errors import (
    IdempotencyKeyFenced,
    IdempotencyKeyInProgress,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    LedgerDamaged,
    NoEffect,
    OperationError,
    OperationNotOpen,
    OperationUnknown,
    Refused,
)
from frontend_server.ledger._model import HisOutcome, OperationRecord, OperationState
from frontend_server.sqlite import StoreHealth, StoreKind, sqlite_engine

__all__ = ["LEDGER_STORE", "FenceResult", "Ledger"]

_MAX_KEY_LENGTH = 128
_OPEN = (OperationState.IN_PROGRESS.value, OperationState.UNKNOWN.value)

_metadata = MetaData()
_operations = Table(
    "operations",
    _metadata,
    Column("idempotency_key", String(_MAX_KEY_LENGTH), primary_key=True),
    Column("method", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("receive_time", Float, nullable=False),
    Column("update_time", Float, nullable=False),
    Column("complete_time", Float),
    Column("his_attempts", Integer, nullable=False, default=0),
    Column("trace_id", Text, nullable=False, default=""),
    Column("receipt", Text),
    Column("result", LargeBinary),
    Column("error", Text),
    # The request as first received (serialized), so an UNKNOWN write can be probed by its
    # parameters after a restart (a HIS that cannot be asked by key). Added without a new
    # schema version: a nullable column older releases ignore (`Ledger.start` adds it).
    Column("request", LargeBinary),
)

LEDGER_STORE = StoreKind(
    name="ledger",
    title="the ledger",
    application_id=int.from_bytes(b"hplL", "big"),
    schema_version=1,
    tables=frozenset({"operations"}),
    entries_table="operations",
)
"""The ledger's file on disk: its SQLite ``application_id`` and schema version (checked at
the edge's start; version 1 is the ``operations`` table plus the store's stamp)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FenceResult:
    """What a compensation found under the key it names."""

    empty: bool
    """True when nothing happened under the key (never received, fenced now or before, or
    definitively failed): the compensation succeeds empty."""
    record: OperationRecord
    """The key's entry; for ``empty=False`` (SUCCEEDED) it holds the receipt to undo."""


def _check_key(key: str) -> None:
    if not key:
        raise InvalidIdempotencyKey(key, "idempotency key is empty")
    if len(key) > _MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(key, f"idempotency key is longer than {_MAX_KEY_LENGTH}")
    if not all(" " < ch <= "~" for ch in key):
        raise InvalidIdempotencyKey(key, "idempotency key must be printable ASCII")


def _error_json(error: OperationError | None) -> str | None:
    return None if error is None else json.dumps(dataclasses.asdict(error), sort_keys=True)


def _record(row: Row[Any]) -> OperationRecord:
    error = OperationError(**json.loads(row.error)) if row.error else None
    return OperationRecord(
        idempotency_key=row.idempotency_key,
        method=row.method,
        fingerprint=row.fingerprint,
        state=OperationState(row.state),
        receive_time=row.receive_time,
        update_time=row.update_time,
        complete_time=row.complete_time,
        his_attempts=row.his_attempts,
        trace_id=row.trace_id,
        receipt=row.receipt,
        result=row.result,
        error=error,
        request=row.request,
    )


class Ledger:
    """The edge's durable record of write operations by idempotency key.

    Use as ``async with Ledger.open(path) as ledger:``; entering creates the table if needed
    and runs :meth:`recover`.

    Args:
        engine: an async SQLAlchemy engine on the ledger's SQLite file.
        clock: wall clock in epoch seconds (tests pass their own).
        retry_after_seconds: the delay suggested to a caller that finds its key in progress.
        owns_engine: dispose of ``engine`` on close.
        health: the engine's damage record (see :meth:`open`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        retry_after_seconds: float = 1.0,
        owns_engine: bool = False,
        health: StoreHealth | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._retry_after = retry_after_seconds
        self._owns_engine = owns_engine
        self._health = health

    @classmethod
    def open(cls, path: Path | str, *, clock: Callable[[], float] = time.time) -> Ledger:
        """A ledger on the SQLite file ``path`` (created mode 0600 if missing), owning its engine.

        Should SQLite find the file damaged, that call and every later one raise
        :class:`LedgerDamaged` (DATA_LOSS) and :attr:`damage` says so.
        """
        health = None if str(path) == ":memory:" else StoreHealth(Path(path), LedgerDamaged)
        return cls(sqlite_engine(path, health=health), clock=clock, owns_engine=True, health=health)

    @property
    def damage(self) -> str | None:
        """What damage SQLite found in the file while running; ``None`` while healthy."""
        return None if self._health is None else self._health.damage

    async def start(self) -> int:
        """Create the table if needed and recover from a crash (see :meth:`recover`).

        Returns:
            How many entries were found IN_PROGRESS and made UNKNOWN.
        """
        async with self._engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)
            columns = await conn.execute(text("PRAGMA table_info(operations)"))
            if "request" not in {c[1] for c in columns}:
                await conn.execute(text("ALTER TABLE operations ADD COLUMN request BLOB"))
        return await self.recover()

    async def aclose(self) -> None:
        """Release the database (the ledger has no tasks of its own)."""
        if self._owns_engine:
            await self._engine.dispose()

    async def __aenter__(self) -> Ledger:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the whole protocol --------------------------------------------------------------

    async def execute(
        self,
        key: str,
        *,
        method: str,
        fingerprint: str,
        call: Callable[[], Awaitable[HisOutcome]],
        trace_id: str = "",
        request: bytes | None = None,
    ) -> OperationRecord:
        """Run a HIS write at most once per key (see the module docstring).

        Args:
            key: the cloud's idempotency key.
            method: full RPC name.
            fingerprint: the request's fingerprint (``message_fingerprint``).
            call: makes the HIS call; returns the receipt and response, raises
                :class:`Refused` for a definitive refusal, :class:`NoEffect` when nothing
                reached the HIS; anything else means "may have happened".
            trace_id: W3C trace id of the request.
            request: the serialized request, kept with the entry (see ``request``).

        Returns:
            The entry in state SUCCEEDED or FAILED, fresh or replayed; the servicer answers
            from it (``result`` or ``error``) either way.

        Raises:
            InvalidIdempotencyKey, IdempotencyKeyReused, IdempotencyKeyInProgress,
            IdempotencyKeyFenced: see :meth:`begin`.
            NoEffect: re-raised from ``call``; the key is free again.
            OperationUnknown: ``call`` failed in a way that may have had an effect; the
                key is UNKNOWN.
        """
        record, fresh = await self.begin(
            key,
            method=method,
            fingerprint=fingerprint,
            trace_id=trace_id,
            his_attempts=1,
            request=request,
        )
        if not fresh:
            return record
        try:
            outcome = await call()
        except Refused as refused:
            return await asyncio.shield(self.fail(key, refused.error))
        except NoEffect:
            await asyncio.shield(self.release(key))
            raise
        except asyncio.CancelledError:
            await asyncio.shield(
                self.mark_unknown(
                    key, OperationError(code="CANCELLED", reason="", message="call cancelled")
                )
            )
            raise
        except Exception as err:
            await asyncio.shield(
                self.mark_unknown(
                    key,
                    OperationError(
                        code="UNAVAILABLE",
                        reason="",
                        message=f"HIS call failed: {type(err).__name__}",
                    ),
                )
            )
            raise OperationUnknown(key, "the HIS call's outcome is unknown") from err
        return await asyncio.shield(self.succeed(key, outcome))

    # -- steps ---------------------------------------------------------------------------

    async def begin(
        self,
        key: str,
        *,
        method: str,
        fingerprint: str,
        trace_id: str = "",
        his_attempts: int = 0,
        request: bytes | None = None,
    ) -> tuple[OperationRecord, bool]:
        """Record ``key`` as IN_PROGRESS unless it is known.

        Returns:
            The entry and ``True`` when it is new (the caller now owns the operation), or the
            finished (SUCCEEDED or FAILED) entry and ``False`` (the caller replays it).

        Raises:
            InvalidIdempotencyKey: empty, too long or not printable ASCII.
            IdempotencyKeyFenced: a compensation fenced the key.
            IdempotencyKeyReused: known with another method or other parameters.
            IdempotencyKeyInProgress: known and still running or UNKNOWN.
        """
        _check_key(key)
        now = self._clock()
        statement = (
            sqlite_insert(_operations)
            .values(
                idempotency_key=key,
                method=method,
                fingerprint=fingerprint,
                state=OperationState.IN_PROGRESS.value,
                receive_time=now,
                update_time=now,
                his_attempts=his_attempts,
                trace_id=trace_id,
                request=request,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
        async with self._engine.begin() as conn:
            inserted = (await conn.execute(statement)).rowcount == 1
            row = (
                await conn.execute(select(_operations).where(_operations.c.idempotency_key == key))
            ).one()
        record = _record(row)
        if inserted:
            return record, True
        if record.state is OperationState.FENCED:
            raise IdempotencyKeyFenced(key, "a compensation fenced this key")
        if record.method != method or record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(key, "the key was used with other parameters")
        if record.state.value in _OPEN:
            raise IdempotencyKeyInProgress(
                key, "the operation is in progress", retry_after_seconds=self._retry_after
            )
        return record, False

    async def succeed(
        self, key: str, outcome: HisOutcome, *, attempt: OperationRecord | None = None
    ) -> OperationRecord:
        """Record the HIS's confirmation of an IN_PROGRESS or UNKNOWN operation.

        ``attempt``: only if the key is still this UNKNOWN entry (see `resolve`).

        Raises:
            LedgerError: the key is not IN_PROGRESS or UNKNOWN (or not ``attempt``).
        """
        return await self._finish(
            key,
            state=OperationState.SUCCEEDED,
            receipt=outcome.receipt,
            result=outcome.result,
            error=None,
            complete_time=self._clock(),
            attempt=attempt,
        )

    async def fail(
        self, key: str, error: OperationError, *, attempt: OperationRecord | None = None
    ) -> OperationRecord:
        """Record a definitive refusal of an IN_PROGRESS or UNKNOWN operation.

        ``attempt``: only if the key is still this UNKNOWN entry (see `resolve`).

        Raises:
            LedgerError: the key is not IN_PROGRESS or UNKNOWN (or not ``attempt``).
        """
        return await self._finish(
            key,
            state=OperationState.FAILED,
            receipt=None,
            result=None,
            error=_error_json(error),
            complete_time=self._clock(),
            attempt=attempt,
        )

    async def mark_unknown(
        self, key: str, error: OperationError, *, attempt: OperationRecord | None = None
    ) -> OperationRecord:
        """Record that the HIS call's outcome is unknown (``error`` says what went wrong).

        Args:
            key: the key.
            error: what went wrong.
            attempt: only if the key is still this UNKNOWN entry (a resolver's note).

        Raises:
            LedgerError: the key is not IN_PROGRESS or UNKNOWN (or not ``attempt``).
        """
        return await self._finish(
            key,
            state=OperationState.UNKNOWN,
            receipt=None,
            result=None,
            error=_error_json(error),
            complete_time=None,
            attempt=attempt,
        )

    async def release(self, key: str, *, attempt: OperationRecord | None = None) -> bool:
        """Forget an IN_PROGRESS or UNKNOWN operation that provably had no effect.

        Args:
            key: the key.
            attempt: only if the key is still this UNKNOWN entry (see `resolve`).

        Returns:
            Whether an entry was removed.
        """
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(_operations).where(
                    _operations.c.idempotency_key == key, self._still_open(attempt)
                )
            )
        return result.rowcount == 1

    async def resolve(
        self,
        key: str,
        outcome: HisOutcome | OperationError | None,
        *,
        attempt: OperationRecord | None = None,
    ) -> OperationRecord | None:
        """Settle an UNKNOWN (or IN_PROGRESS) operation from what the HIS now says.

        Args:
            key: the key.
            outcome: the HIS has it (receipt), refused it (error), or has no trace of it
                (``None``: the key is released and a retry runs afresh).
            attempt: the UNKNOWN entry the HIS was asked about. The answer settles only
                that entry: if meanwhile it was settled, released and sent again, the new
                attempt (which may be reaching the HIS right now) is left alone, since
                the HIS's "no trace" was about the old one.

        Returns:
            The settled entry, or ``None`` when released.

        Raises:
            OperationNotOpen: the key is not open (or, with ``attempt``, not that entry).
        """
        if outcome is None:
            if not await self.release(key, attempt=attempt) and attempt is not None:
                raise OperationNotOpen(key, "cannot release: the key is no longer that attempt")
            return None
        if isinstance(outcome, HisOutcome):
            return await self.succeed(key, outcome, attempt=attempt)
        return await self.fail(key, outcome, attempt=attempt)

    @staticmethod
    def _still_open(attempt: OperationRecord | None) -> Any:
        """The WHERE clause of a change to an open entry (``attempt``: that UNKNOWN one)."""
        if attempt is None:
            return _operations.c.state.in_(_OPEN)
        return (_operations.c.state == OperationState.UNKNOWN.value) & (
            _operations.c.receive_time == attempt.receive_time
        )

    async def note_attempt(self, key: str) -> None:
        """Count one more HIS call for ``key`` (e.g. a resolution query)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(_operations)
                .where(_operations.c.idempotency_key == key)
                .values(his_attempts=_operations.c.his_attempts + 1, update_time=self._clock())
            )

    async def fence(self, key: str, *, method: str, trace_id: str = "") -> FenceResult:
        """Apply a compensation's view of ``key`` (CancelAppointment / RefundCharge naming it).

        If the edge never received the key, it is fenced: a late copy of the write will be
        refused with :class:`IdempotencyKeyFenced`.

        Args:
            key: the idempotency key of the write being compensated.
            method: full RPC name of that write, recorded with the fence.
            trace_id: W3C trace id of the compensation.

        Returns:
            ``empty=True`` when there is nothing to undo; otherwise the SUCCEEDED entry.

        Raises:
            InvalidIdempotencyKey: the key is malformed.
            IdempotencyKeyInProgress: the write is running or UNKNOWN; ask again later.
        """
        _check_key(key)
        now = self._clock()
        statement = (
            sqlite_insert(_operations)
            .values(
                idempotency_key=key,
                method=method,
                fingerprint="",
                state=OperationState.FENCED.value,
                receive_time=now,
                update_time=now,
                complete_time=now,
                his_attempts=0,
                trace_id=trace_id,
            )
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)
            row = (
                await conn.execute(select(_operations).where(_operations.c.idempotency_key == key))
            ).one()
        record = _record(row)
        if record.state.value in _OPEN:
            raise IdempotencyKeyInProgress(
                key, "the operation is in progress", retry_after_seconds=self._retry_after
            )
        return FenceResult(empty=record.state is not OperationState.SUCCEEDED, record=record)

    # -- reads and housekeeping ----------------------------------------------------------

    async def get(self, key: str) -> OperationRecord | None:
        """The entry for ``key``; ``None`` means never received (NOT_RECEIVED, not fenced)."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(_operations).where(_operations.c.idempotency_key == key))
            ).one_or_none()
        return None if row is None else _record(row)

    async def unresolved(self, *, limit: int = 100) -> list[OperationRecord]:
        """UNKNOWN entries, oldest first: the work of the edge's resolver."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(_operations)
                    .where(_operations.c.state == OperationState.UNKNOWN.value)
                    .order_by(_operations.c.receive_time)
                    .limit(limit)
                )
            ).all()
        return [_record(r) for r in rows]

    async def recover(self) -> int:
        """Turn every IN_PROGRESS entry into UNKNOWN.

        Run at start, when no call of this process can be running: an IN_PROGRESS entry
        then means the process died during the HIS call or before recording its outcome.

        Returns:
            How many entries changed.
        """
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(_operations)
                .where(_operations.c.state == OperationState.IN_PROGRESS.value)
                .values(
                    state=OperationState.UNKNOWN.value,
                    update_time=self._clock(),
                    error=_error_json(
                        OperationError(
                            code="UNAVAILABLE", reason="", message="edge restarted during the call"
                        )
                    ),
                )
            )
        return int(result.rowcount)

    async def purge(self, *, older_than: float) -> int:
        """Delete settled entries completed before ``older_than`` (epoch seconds).

        The contract keeps keys at least 90 days; call with ``now - 90 days`` or earlier.

        Returns:
            How many entries were deleted.
        """
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(_operations).where(
                    _operations.c.state.not_in(_OPEN),
                    _operations.c.complete_time < older_than,
                )
            )
        return int(result.rowcount)

    async def _finish(
        self,
        key: str,
        *,
        state: OperationState,
        receipt: str | None,
        result: bytes | None,
        error: str | None,
        complete_time: float | None,
        attempt: OperationRecord | None = None,
    ) -> OperationRecord:
        async with self._engine.begin() as conn:
            updated = await conn.execute(
                update(_operations)
                .where(_operations.c.idempotency_key == key, self._still_open(attempt))
                .values(
                    state=state.value,
                    receipt=receipt,
                    result=result,
                    error=error,
                    complete_time=complete_time,
                    update_time=self._clock(),
                )
            )
            row = (
                await conn.execute(select(_operations).where(_operations.c.idempotency_key == key))
            ).one_or_none()
        if updated.rowcount != 1 or row is None:
            raise OperationNotOpen(key, f"cannot record {state.value}: the operation is not open")
        return _record(row)

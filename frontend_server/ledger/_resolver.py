"""Settling UNKNOWN operations by asking the HIS, until each has an answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType

from frontend_server.ledger._errors import LedgerDamaged, OperationError, OperationNotOpen
from frontend_server.ledger._ledger import Ledger
from frontend_server.ledger._model import HisOutcome, OperationRecord

__all__ = ["Probe", "Resolver"]

log = logging.getLogger(__name__)

Probe = Callable[[OperationRecord], Awaitable[HisOutcome | OperationError | None]]
"""Asks the HIS what became of an operation (the adapter's job: by our key where the HIS
can, else by other evidence such as the patient's bookings for that slot). Returns the
receipt (done), an error (definitively refused) or ``None`` (the HIS has no trace: not
done). Raises when it still cannot tell (HIS down, ambiguous evidence)."""


class Resolver:
    """Resolves the ledger's UNKNOWN operations in the background.

    Use as ``async with Resolver(ledger, probe):`` or call :meth:`run` / :meth:`shutdown`.

    Args:
        ledger: the ledger to settle.
        probe: asks the HIS about one operation.
        interval_seconds: pause between rounds.
        batch: operations per round, oldest first.
    """

    def __init__(
        self,
        ledger: Ledger,
        probe: Probe,
        *,
        interval_seconds: float = 30.0,
        batch: int = 50,
    ) -> None:
        self._ledger = ledger
        self._probe = probe
        self._interval = interval_seconds
        self._batch = batch
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def resolve_once(self) -> int:
        """One round: probe every UNKNOWN operation once.

        Returns:
            How many operations were settled.
        """
        settled = 0
        for record in await self._ledger.unresolved(limit=self._batch):
            key = record.idempotency_key
            await self._ledger.note_attempt(key)
            try:
                outcome = await self._probe(record)
            except Exception as err:
                # Still unknown; keep the latest reason for the evidence read.
                with contextlib.suppress(OperationNotOpen):  # settled or sent again meanwhile
                    await self._ledger.mark_unknown(
                        key,
                        OperationError(
                            code="UNAVAILABLE",
                            reason="",
                            message=f"resolving failed: {type(err).__name__}",
                        ),
                        attempt=record,
                    )
                continue
            try:
                await self._ledger.resolve(key, outcome, attempt=record)
            except OperationNotOpen:
                # The write's own path (its retry, or the settle of a retry that found the
                # key in progress) settled it while the HIS was asked, or released it and
                # sent it again: the answer was about an attempt that is no more, and the
                # new one is left alone. Found by the chaos run: this race ended the
                # resolver (and the edge with it), and a release here once erased a resent
                # write the HIS then committed.
                log.info("resolving %s: already settled meanwhile", key)
                continue
            settled += 1
        return settled

    async def run(self) -> None:
        """Resolve in rounds until :meth:`shutdown`; a ledger failure ends the run.

        A damaged ledger ends it quietly: the damage is logged where it was found, and the
        edge reports it (GetEdgeInfo); there is nothing left to resolve against.
        """
        while not self._stopping.is_set():
            try:
                await self.resolve_once()
            except LedgerDamaged:
                return
            except Exception:
                log.exception("resolving unknown operations failed")
                raise
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopping.wait()

    async def shutdown(self) -> None:
        """Stop after the current round."""
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner

    async def __aenter__(self) -> Resolver:
        self._runner = asyncio.create_task(self.run(), name="ledger-resolver")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

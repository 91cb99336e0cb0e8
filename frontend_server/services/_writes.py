"""Writes through the idempotency ledger: record before the call, replay, resolve UNKNOWN.

:class:`WriteRunner` is what every write RPC calls. It wraps the HIS call for
:meth:`Ledger.execute <frontend_server.ledger.Ledger.execute>`:

* a HIS refusal is recorded (FAILED) and replayed with its code and reason;
* so is a refusal by the hospital's appointment rules, checked at the edge inside the
  ledger entry (``check``) just before the HIS call: a definitive refusal (common.proto)
  that had no effect on the HIS, so the key is FAILED (evidence), never UNKNOWN; a replay
  of a key that succeeded is answered from the ledger without re-checking the rules;
* a failed read of that check (``HisTimeout`` included) happened before any write: the
  key is freed, as for ``HisUnavailable``;
* ``HisUnavailable`` and the edge's own refusals had no effect: the key is freed;
* anything else (``HisTimeout``, a broken connection, an unreadable answer) leaves the key
  UNKNOWN, and the caller gets UNAVAILABLE ``OPERATION_OUTCOME_UNKNOWN``.

An UNKNOWN key is resolved by a *probe* registered per RPC: it asks the HIS by our key
where the adapter can, else by other evidence (the patient's bookings, the day's ledger).
Probes run when a retry with the key arrives (so the retry gets the original receipt, or
runs afresh when the HIS provably has nothing), when an evidence read asks with
``refresh``, and in the background through the ledger's
:class:`~frontend_server.ledger.Resolver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf import descriptor_pool, message_factory
from google.protobuf import message as pb_message

from frontend_server.adapters import HisRejected, HisUnavailable, RejectReason
from frontend_server.ledger import (
    HisOutcome,
    IdempotencyKeyInProgress,
    Ledger,
    LedgerError,
    NoEffect,
    OperationError,
    OperationRecord,
    OperationState,
    Refused,
    message_fingerprint,
)
from frontend_server.rules import RuleRefusal
from frontend_server.services._errors import rejection, replayed, rule_refusal
from mesh import errors

__all__ = ["Probe", "WriteRunner"]

log = logging.getLogger("frontend_server.services")

R = TypeVar("R", bound=pb_message.Message)

Probe = Callable[[str, pb_message.Message | None], Awaitable[HisOutcome | OperationError | None]]
"""Asks the HIS what became of the write with this key (the original request when this
process still has it): the receipt and response (done), an error (refused) or ``None``
(provably not done). Raises when it cannot tell yet."""


class _NoEffectCause(NoEffect):
    """Carries the error that proved a write had no effect through the ledger."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _DuplicateKey(Exception):
    """The HIS says our key already holds a write: the outcome is to be read, not assumed."""


class WriteRunner:
    """Runs write RPCs through the ledger and resolves their unknown outcomes.

    Args:
        ledger: the edge's idempotency ledger.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._probes: dict[str, Probe] = {}
        self._requests: dict[str, pb_message.Message] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def ledger(self) -> Ledger:
        """The ledger."""
        return self._ledger

    def register_probe(self, method: str, probe: Probe) -> None:
        """Declares how to resolve an UNKNOWN write of ``method``.

        Args:
            method: full RPC name.
            probe: see :data:`Probe`.
        """
        self._probes[method] = probe

    def probe_table(self) -> dict[str, Probe]:
        """A copy of the registered probes (method → probe), to restore with :meth:`use_probes`."""
        return dict(self._probes)

    def use_probes(self, table: dict[str, Probe]) -> None:
        """Replaces the registered probes, e.g. with another profile's servicers' probes.

        Live configuration: the probes follow the active profile's adapter.
        """
        self._probes = dict(table)

    async def run(
        self,
        method: str,
        request: pb_message.Message,
        response_type: type[R],
        call: Callable[[], Awaitable[R]],
        receipt: Callable[[R], str],
        *,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> R:
        """Runs one write at most once per idempotency key.

        Args:
            method: full RPC name.
            request: the request (its ``idempotency_key`` field is the key).
            response_type: the RPC's response message class (to replay).
            call: makes the HIS call and builds the response.
            receipt: the HIS receipt of a response (its id or receipt number).
            check: the edge's own rule check, run (once per key) before ``call``; it may
                read the HIS but never write. ``RuleRefusal`` or a HIS refusal is recorded
                as FAILED; any other error frees the key.

        Returns:
            The response, fresh or replayed.

        Raises:
            mesh.errors.StatusError: the write was refused (now or originally: the recorded
                refusal is replayed), or the edge refused it before the HIS call (no effect;
                the key is free).
            LedgerError: key errors, or the outcome is unknown.
            HisUnavailable: the write had no effect; the key is free.
        """
        key: str = getattr(request, "idempotency_key")  # noqa: B009 - every write has one
        fingerprint = message_fingerprint(method, request)

        async def his_call() -> HisOutcome:
            if check is not None:
                try:
                    await check()
                except RuleRefusal as err:
                    raise Refused(rule_refusal(err)) from err
                except HisRejected as err:
                    raise Refused(rejection(err)) from err
                except Exception as err:  # nothing was written: the key is free again
                    raise _NoEffectCause(err) from err
            try:
                response = await call()
            except HisRejected as err:
                if err.reason is RejectReason.DUPLICATE_KEY:
                    # The HIS holds a write with our key: evidence that an earlier attempt
                    # happened, not a refusal. Left UNKNOWN, the probe reads what it holds
                    # (found by the chaos run: recorded as FAILED, it made the cloud refund
                    # a booking the hospital kept).
                    raise _DuplicateKey(str(err)) from err
                raise Refused(rejection(err)) from err
            except (HisUnavailable, errors.StatusError) as err:
                raise _NoEffectCause(err) from err
            return HisOutcome(receipt=receipt(response), result=response.SerializeToString())

        async def execute() -> OperationRecord:
            # Keep the first request of an open key: it is what the HIS may have received
            # (a repeat with other parameters is refused by the ledger anyway).
            self._requests.setdefault(key, request)
            return await self._ledger.execute(
                key,
                method=method,
                fingerprint=fingerprint,
                call=his_call,
                request=request.SerializeToString(),
            )

        try:
            try:
                record = await execute()
            except IdempotencyKeyInProgress:
                if not await self.settle(key):
                    raise
                record = await execute()
        except _NoEffectCause as err:
            self._requests.pop(key, None)
            raise err.cause from None
        if record.state is OperationState.SUCCEEDED:
            self._requests.pop(key, None)
            return response_type.FromString(record.result or b"")
        self._requests.pop(key, None)
        assert record.error is not None  # FAILED always records why
        raise replayed(record.error)

    async def settle(self, key: str) -> bool:
        """Tries once to resolve an UNKNOWN key by probing the HIS.

        Args:
            key: the idempotency key.

        Returns:
            Whether the key is now settled (evidence recorded, or freed as not done);
            ``False`` while it is still running or the HIS cannot tell yet.
        """
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._settle(key)
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    async def _settle(self, key: str) -> bool:
        record = await self._ledger.get(key)
        if record is None or record.is_evidence:
            return True
        if record.state is not OperationState.UNKNOWN:
            return False
        await self._ledger.note_attempt(key)
        try:
            outcome = await self.probe(record)
        except Exception as err:  # any failure means "cannot tell yet"
            log.info("resolving %s: still unknown (%s)", record.method, type(err).__name__)
            return False
        # Settles only the attempt that was probed: settled meanwhile by the resolver, or
        # released and sent again (the new attempt is not touched), is not an error.
        with contextlib.suppress(LedgerError):
            if outcome is None:
                if await self._ledger.release(key, attempt=record):
                    self._requests.pop(key, None)
            else:
                await self._ledger.resolve(key, outcome, attempt=record)
        return True

    async def probe(self, record: OperationRecord) -> HisOutcome | OperationError | None:
        """The ledger resolver's probe: asks the HIS about one operation.

        Args:
            record: the UNKNOWN entry.

        Returns:
            See :data:`Probe`.

        Raises:
            LookupError: no probe is registered for the entry's method.
        """
        probe = self._probes.get(record.method)
        if probe is None:
            raise LookupError(f"no probe for {record.method}")
        request = self._requests.get(record.idempotency_key) or _request_of(record)
        try:
            return await probe(record.idempotency_key, request)
        except HisRejected as err:
            # The probe's own lookup was refused: a definitive answer only when the
            # probe says so by returning; here the HIS could not tell.
            raise LookupError(f"probe refused: {err.reason}") from err


def _request_of(record: OperationRecord) -> pb_message.Message | None:
    """The request kept with the entry, parsed by its method's input type.

    After a restart the in-memory copy is gone; a probe that reads the HIS by the write's
    parameters (a HIS that cannot be asked by key) needs it (found by the chaos run: an edge
    killed during a hold at the SOAP hospital left the hold UNKNOWN for good).
    """
    if not record.request:
        return None
    service, _, name = record.method.rpartition("/")
    try:
        method = descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)
    except KeyError:
        return None
    message = message_factory.GetMessageClass(method.input_type)()
    message.ParseFromString(record.request)
    return message

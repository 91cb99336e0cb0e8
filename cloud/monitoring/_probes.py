"""Business probes: a known read per hospital and interface, fingerprinted, on a schedule.

Interfaces: ``departments`` (DirectoryService.ListDepartments), ``reports`` (GetReport of a
known report of a test patient) and ``bills`` (ListPayableBills of that patient); the
latter two only where ``[probes.hospitals.<ID>] patient_id`` is configured. Each answer's
content fingerprint (SHA-256 of the deterministic serialisation of what matters) is compared
with the last good answer's:

=============  ==========  =====================================================
outcome        available   when
=============  ==========  =====================================================
``OK``         yes         answered, same content (or the first answer)
``CHANGED``    depends     answered, different content: a known report's content
                           should not change (unavailable, logged); departments
                           and bills change by themselves (available, recorded)
``EMPTY``      no          answered with nothing where the last good answer had
                           something (the "report query that silently returns
                           nothing")
``ROTATED``    yes         the known report was archived by the HIS: a fresh one
                           of the patient becomes the case (no alarm)
``MISSING``    no          the known report vanished without being archived; a
                           fresh case is picked for the next round
``NO_CASE``    yes         the patient has no readable report to probe
``ERROR``      no          the call failed (status code in the detail)
=============  ==========  =====================================================

Availability of a (hospital, interface) pair is the share of available outcomes in the
window; the overall number is the share of pairs whose latest outcome is available.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
import sqlalchemy as sa
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import writer_turn
from cloud.edgeconfig import ProbeCase, ProbesConfig
from cloud.monitoring._schema import PROBE_RESULTS, PROBE_STATE
from hplus.hospital.v1 import (
    billing_pb2,
    billing_pb2_grpc,
    common_pb2,
    directory_pb2,
    directory_pb2_grpc,
    report_pb2,
    report_pb2_grpc,
)
from mesh import errors

__all__ = ["INTERFACES", "Availability", "ProbeResult", "Prober", "read_availability"]

log = logging.getLogger(__name__)

INTERFACES = ("departments", "reports", "bills")
"""The probed interfaces, in display order."""

ChannelFor = Callable[[str], Awaitable[grpc.aio.Channel]]
Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def fingerprint(parts: Iterable[bytes]) -> str:
    """SHA-256 over length-prefixed parts (order matters; callers sort what has none)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """One probe's outcome."""

    hospital_id: str
    """The hospital."""
    interface: str
    """One of `INTERFACES`."""
    outcome: str
    """See the module docstring."""
    available: bool
    """Whether it counts as available."""
    latency_ms: float
    """Time of the probe's calls."""
    case_id: str = ""
    """The probed case (a report id), if any."""
    fingerprint: str = ""
    """The answer's fingerprint, if it answered."""
    detail: str = ""
    """Why, for anything but OK (no patient data)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _State:
    case_id: str
    good: str


class _Answer(Exception):
    """Raised inside a probe to end it with an outcome."""

    def __init__(self, outcome: str, available: bool, detail: str = "", case_id: str = "") -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.available = available
        self.detail = detail
        self.case_id = case_id


class Prober:
    """Runs probe rounds and stores their results (a background loop of the node).

    Args:
        engine: the fleet database (migrated with `migrate_monitoring`).
        config: schedule, deadline, window and each hospital's known cases.
        hospitals: the hospitals to probe this round (the node: those whose tunnels it
            holds, plus those with configured cases).
        channel_for: a channel to a hospital (the router's ``channel_for``).
        clock: the current time.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        config: ProbesConfig,
        *,
        hospitals: Callable[[], Awaitable[list[str]]],
        channel_for: ChannelFor,
        clock: Clock = _utcnow,
    ) -> None:
        self._engine = engine
        self._config = config
        self._hospitals = hospitals
        self._channel_for = channel_for
        self._clock = clock
        self._turn = writer_turn(engine)
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """A round every ``interval`` until `shutdown`; a failed round is logged, not fatal.

        The first round runs ``interval`` after the start, once the edges have connected.
        """
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._config.interval)
            if self._stop.is_set():
                return
            try:
                await self.run_round()
            except Exception:
                log.exception("probe round failed")

    async def shutdown(self) -> None:
        """Stop after the current round."""
        self._stop.set()

    async def run_round(self) -> list[ProbeResult]:
        """Probe every hospital once; store and return the results."""
        results: list[ProbeResult] = []
        for hospital_id in sorted(set(await self._hospitals())):
            results.extend(await self.probe_hospital(hospital_id))
        await self._purge()
        return results

    async def probe_hospital(self, hospital_id: str) -> list[ProbeResult]:
        """Probe each interface of one hospital; store and return the results."""
        case = self._config.hospitals.get(hospital_id, ProbeCase())
        interfaces = ["departments"]
        if case.patient_id:
            interfaces += ["reports", "bills"]
        out = []
        for interface in interfaces:
            result = await self._probe(hospital_id, interface, case)
            await self._record(result)
            out.append(result)
        return out

    async def _probe(self, hospital_id: str, interface: str, case: ProbeCase) -> ProbeResult:
        state = await self._state(hospital_id, interface)
        started = time.perf_counter()
        outcome, available, detail = "OK", True, ""
        case_id = state.case_id if state else ""
        printed = ""
        try:
            channel = await self._channel_for(hospital_id)
            if interface == "departments":
                printed = await self._departments(channel)
            elif interface == "bills":
                printed = await self._bills(channel, case.patient_id)
            else:
                case_id, printed, outcome, detail = await self._reports(
                    channel, case, state.case_id if state else ""
                )
        except _Answer as answer:
            outcome, available, detail = answer.outcome, answer.available, answer.detail
            case_id = answer.case_id or case_id
        except errors.StatusError as err:
            outcome, available = "ERROR", False
            detail = f"{err.code.name}: {err.message}"[:300]
        except grpc.aio.AioRpcError as err:
            outcome, available = "ERROR", False
            detail = f"{err.code().name}: {err.details() or ''}"[:300]
        latency = (time.perf_counter() - started) * 1000.0
        if printed:
            good = state.good if state is not None and state.case_id == case_id else ""
            if outcome == "OK" and good and printed != good:
                outcome = "CHANGED"
                available = interface != "reports"
                detail = "the answer differs from the last good one"
            if printed == _EMPTY and good and good != _EMPTY:
                outcome, available = "EMPTY", False
                detail = "answered with nothing where the last good answer had content"
        result = ProbeResult(
            hospital_id=hospital_id,
            interface=interface,
            outcome=outcome,
            available=available,
            latency_ms=latency,
            case_id=case_id,
            fingerprint=printed,
            detail=detail,
        )
        if not available or outcome in ("CHANGED", "ROTATED", "MISSING"):
            log.warning(
                "probe %s/%s: %s%s",
                hospital_id,
                interface,
                outcome,
                f" ({detail})" if detail else "",
            )
        if available and printed and printed != _EMPTY:
            await self._save_state(hospital_id, interface, case_id, printed)
        elif outcome == "MISSING":
            await self._save_state(hospital_id, interface, case_id, "")
        return result

    def _deadline(self) -> float:
        return self._config.call_timeout

    async def _departments(self, channel: grpc.aio.Channel) -> str:
        stub = errors.wrap(directory_pb2_grpc.DirectoryServiceStub(channel))
        reply = await stub.ListDepartments(
            directory_pb2.ListDepartmentsRequest(include_unbookable=True, page_size=1000),
            timeout=self._deadline(),
        )
        parts = sorted(d.SerializeToString(deterministic=True) for d in reply.departments)
        return fingerprint(parts) if parts else _EMPTY

    async def _bills(self, channel: grpc.aio.Channel, patient_id: str) -> str:
        stub = errors.wrap(billing_pb2_grpc.BillingServiceStub(channel))
        reply = await stub.ListPayableBills(
            billing_pb2.ListPayableBillsRequest(
                patient=common_pb2.PatientRef(patient_id=patient_id), page_size=200
            ),
            timeout=self._deadline(),
        )
        parts = sorted(b.SerializeToString(deterministic=True) for b in reply.bills)
        # A paid bill leaves the list: an empty list is an answer, not a silence.
        return fingerprint(parts) if parts else fingerprint([b"no payable bills"])

    async def _reports(
        self, channel: grpc.aio.Channel, case: ProbeCase, current: str
    ) -> tuple[str, str, str, str]:
        """``(case id, fingerprint, outcome, detail)`` of the report probe."""
        stub = errors.wrap(report_pb2_grpc.ReportServiceStub(channel))
        patient = common_pb2.PatientRef(patient_id=case.patient_id)
        report_id = current or case.report_id
        if not report_id:
            fresh = await self._fresh_report(stub, patient, exclude="")
            return fresh, await self._read_report(stub, patient, fresh), "OK", "first case"
        try:
            reply = await stub.GetReport(
                report_pb2.GetReportRequest(report_id=report_id, patient=patient),
                timeout=self._deadline(),
            )
            archived = reply.report.summary.availability == report_pb2.REPORT_AVAILABILITY_ARCHIVED
        except errors.NotFound:
            archived = await self._listed_archived(stub, patient, report_id)
            if not archived:
                fresh = await self._fresh_report(stub, patient, exclude=report_id, quiet=True)
                raise _Answer(
                    "MISSING",
                    False,
                    f"known report {report_id} vanished without being archived",
                    case_id=fresh or report_id,
                ) from None
        if archived:
            fresh = await self._fresh_report(stub, patient, exclude=report_id)
            printed = await self._read_report(stub, patient, fresh)
            return (
                fresh,
                printed,
                "ROTATED",
                f"report {report_id} was archived; now probing {fresh}",
            )
        return report_id, _report_print(reply.report), "OK", ""

    async def _listed_archived(
        self, stub: Any, patient: common_pb2.PatientRef, report_id: str
    ) -> bool:
        listed = await self._list(stub, patient)
        return any(
            s.report_id == report_id and s.availability == report_pb2.REPORT_AVAILABILITY_ARCHIVED
            for s in listed
        )

    async def _list(self, stub: Any, patient: common_pb2.PatientRef) -> list[Any]:
        start = self._clock().date() - dt.timedelta(days=3650)
        reply = await stub.ListReports(
            report_pb2.ListReportsRequest(
                patient=patient,
                start_date=date_pb2.Date(year=start.year, month=start.month, day=start.day),
                page_size=200,
            ),
            timeout=self._deadline(),
        )
        return list(reply.reports)

    async def _fresh_report(
        self, stub: Any, patient: common_pb2.PatientRef, *, exclude: str, quiet: bool = False
    ) -> str:
        """The newest readable report of the patient other than ``exclude``."""
        for summary in await self._list(stub, patient):
            if (
                summary.report_id != exclude
                and summary.availability == report_pb2.REPORT_AVAILABILITY_AVAILABLE
            ):
                return str(summary.report_id)
        if quiet:
            return ""
        raise _Answer("NO_CASE", True, "the probe patient has no readable report")

    async def _read_report(self, stub: Any, patient: common_pb2.PatientRef, report_id: str) -> str:
        reply = await stub.GetReport(
            report_pb2.GetReportRequest(report_id=report_id, patient=patient),
            timeout=self._deadline(),
        )
        return _report_print(reply.report)

    async def _state(self, hospital_id: str, interface: str) -> _State | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(PROBE_STATE).where(
                        PROBE_STATE.c.hospital_id == hospital_id,
                        PROBE_STATE.c.interface == interface,
                    )
                )
            ).first()
        return None if row is None else _State(case_id=row.case_id, good=row.good_fingerprint)

    async def _save_state(self, hospital_id: str, interface: str, case_id: str, good: str) -> None:
        now = self._clock()
        values = {
            "case_id": case_id,
            "good_fingerprint": good,
            "good_at": now if good else None,
            "updated_at": now,
        }
        async with self._turn, self._engine.begin() as conn:
            done = await conn.execute(
                PROBE_STATE.update()
                .where(
                    PROBE_STATE.c.hospital_id == hospital_id, PROBE_STATE.c.interface == interface
                )
                .values(**values)
            )
            if done.rowcount == 0:
                await conn.execute(
                    PROBE_STATE.insert().values(
                        hospital_id=hospital_id, interface=interface, **values
                    )
                )

    async def _record(self, result: ProbeResult) -> None:
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(
                PROBE_RESULTS.insert().values(
                    hospital_id=result.hospital_id,
                    interface=result.interface,
                    at=self._clock(),
                    outcome=result.outcome,
                    available=result.available,
                    latency_ms=result.latency_ms,
                    case_id=result.case_id[:128],
                    fingerprint=result.fingerprint,
                    detail=result.detail[:500],
                )
            )

    async def _purge(self) -> None:
        cutoff = self._clock() - dt.timedelta(seconds=self._config.keep)
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(PROBE_RESULTS.delete().where(PROBE_RESULTS.c.at < cutoff))


_EMPTY = fingerprint([])
"""The fingerprint of an answer with nothing in it."""


def _report_print(report: report_pb2.Report) -> str:
    content = report.WhichOneof("content")
    if content is None:
        return _EMPTY
    body = getattr(report, content)
    return fingerprint(
        [
            report.summary.report_id.encode(),
            content.encode(),
            body.SerializeToString(deterministic=True),
        ]
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Availability:
    """Probe availability over a window."""

    pairs: dict[tuple[str, str], dict[str, Any]]
    """Per (hospital, interface): ``probes``, ``available``, ``share``, ``latest`` outcome,
    ``latest_at``, ``detail``."""
    share: float | None
    """Share of pairs whose latest outcome is available; ``None`` without pairs."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "available_share": self.share,
            "pairs": [
                {"hospital_id": h, "interface": i, **v} for (h, i), v in sorted(self.pairs.items())
            ],
        }


async def read_availability(
    engine: AsyncEngine,
    *,
    window: float,
    hospital_id: str | None = None,
    now: dt.datetime | None = None,
) -> Availability:
    """Availability per (hospital, interface) over ``window`` seconds, and overall."""
    now = now or _utcnow()
    query = (
        sa.select(PROBE_RESULTS)
        .where(PROBE_RESULTS.c.at >= now - dt.timedelta(seconds=window))
        .order_by(PROBE_RESULTS.c.seq)
    )
    if hospital_id is not None:
        query = query.where(PROBE_RESULTS.c.hospital_id == hospital_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        entry = pairs.setdefault((row.hospital_id, row.interface), {"probes": 0, "available": 0})
        entry["probes"] += 1
        entry["available"] += int(bool(row.available))
        entry["latest"] = row.outcome
        entry["latest_available"] = bool(row.available)
        entry["latest_at"] = _aware(row.at).isoformat()
        entry["detail"] = row.detail
        entry["latency_ms"] = round(row.latency_ms, 1)
    for entry in pairs.values():
        entry["share"] = entry["available"] / entry["probes"]
    share = sum(1 for e in pairs.values() if e["latest_available"]) / len(pairs) if pairs else None
    return Availability(pairs=pairs, share=share)

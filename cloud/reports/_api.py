"""ListReports / GetReport through the edges' pending-task queues (issue 12 item 5)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc
import sqlalchemy as sa
from google.protobuf import any_pb2, duration_pb2
from google.protobuf import message as pb_message
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.accounts import Caller, mask_id_number
from cloud.db import writer_turn
from cloud.edge_api import Accepted, Rejected, Verdict
from cloud.edgeconfig import ReportsConfig
from cloud.errors import ERROR_DOMAIN
from cloud.reports import _convert as convert
from cloud.reports._schema import LOOKUPS
from hplus.cloud.v1 import account_pb2, edge_pb2, patient_pb2
from hplus.hospital.v1 import common_pb2, report_pb2, task_pb2, task_pb2_grpc
from mesh import errors

__all__ = ["KEY_PREFIX", "ReportApi"]

log = logging.getLogger(__name__)

KEY_PREFIX = "rpt"
"""Idempotency keys of report lookups start with ``rpt-`` (how results find their way back)."""

_REPORT_ID_PREFIX = "rp1_"
_SEP = "\x1f"
_PAGE_DEFAULT = 20
_PAGE_MAX = 100

ChannelFor = Callable[[str], Awaitable[grpc.aio.Channel]]
Clock = Callable[[], dt.datetime]


class _Patients(Protocol):
    async def list(self, session: Any) -> list[account_pb2.BoundPatient]: ...


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _subject(*parts: str) -> str:
    return hashlib.sha256(_SEP.join(parts).encode()).hexdigest()


def encode_report_id(hospital_id: str, patient_id: str, his_report_id: str) -> str:
    """The patient API's opaque report id: which hospital, which bound patient, which report."""
    raw = _SEP.join((hospital_id, patient_id, his_report_id)).encode()
    return _REPORT_ID_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_report_id(report_id: str) -> tuple[str, str, str] | None:
    """``(hospital, bound patient, HIS report id)`` of an id from `encode_report_id`."""
    if not report_id.startswith(_REPORT_ID_PREFIX) or len(report_id) > 400:
        return None
    body = report_id[len(_REPORT_ID_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = raw.split(_SEP)
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


class ReportApi:
    """The patient API's ListReports and GetReport, answered through the edge's task queue.

    A call finds the account's patient at the hospital (`cloud.accounts.Patients`), then the
    lookup for it: none yet → a task is submitted to the edge (``TaskService.SubmitTask``
    through the router, idempotency key ``rpt-<uuid>``) and the answer is ``lookup_pending``
    with ``retry_after`` (GetReport, whose response has no such field, answers UNAVAILABLE
    with reason ``REPORT_LOOKUP_PENDING`` and a ``RetryInfo``); pending → the same; done →
    the edge's result, pushed through ``EdgeService.ReportTaskResults`` (`on_result`). A
    result is kept for ``result_ttl`` and then purged (`purge`, run by `run`).

    Lookups are deduplicated per account, patient and hospital (ListReports) or report
    (GetReport); an account has at most ``max_pending_per_account`` pending.

    Args:
        engine: the reports database (migrated with `migrate_reports`).
        patients: the accounts' bound patients.
        channel_for: a channel to a hospital's edge (the router's ``channel_for``).
        config: the ``[reports]`` settings.
        clock: the current time.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        patients: _Patients,
        channel_for: ChannelFor,
        config: ReportsConfig,
        *,
        clock: Clock = _utcnow,
    ) -> None:
        self._engine = engine
        self._patients = patients
        self._channel_for = channel_for
        self._config = config
        self._clock = clock
        self._turn = writer_turn(engine)
        self._stopping = asyncio.Event()

    # -- the patient API ------------------------------------------------------------------

    async def list_reports(
        self, request: patient_pb2.ListReportsRequest, caller: Caller
    ) -> patient_pb2.ListReportsResponse:
        """ListReports (see the class docstring and the contract's comments)."""
        session = _session(caller)
        problems: list[tuple[str, str]] = []
        if not request.hospital_id:
            problems.append(("hospital_id", "required"))
        who = request.patient
        if not who.name:
            problems.append(("patient.name", "required"))
        if not who.id_card_number and not who.medical_card_number:
            problems.append(
                ("patient.id_card_number", "id_card_number or medical_card_number required")
            )
        if not 0 <= request.page_size <= 1000:
            problems.append(("page_size", "must be within [0, 1000]"))
        offset = 0
        if request.page_token:
            try:
                offset = int(request.page_token)
                if offset < 0:
                    raise ValueError
            except ValueError:
                problems.append(("page_token", "not a token from a previous response"))
        if problems:
            raise errors.InvalidArgument(
                "invalid ListReports request", domain=ERROR_DOMAIN, field_violations=problems
            )
        bound, his_patient = await self._find_patient(session, request.hospital_id, who)
        subject = _subject(session.account_id, request.hospital_id, his_patient, "list")
        spec = report_pb2.ListReportsRequest(patient=common_pb2.PatientRef(patient_id=his_patient))
        row = await self._lookup(session.account_id, request.hospital_id, "list", subject, spec)
        out = patient_pb2.ListReportsResponse()
        if row is None:
            out.lookup_pending = True
            out.retry_after.CopyFrom(self._retry_after())
            return out
        listed = report_pb2.ListReportsResponse.FromString(row.result)
        completed = _aware(row.completed_at)
        assert completed is not None
        out.as_of.FromDatetime(completed)
        kinds = set(request.kinds)
        start = _date(request.start_date, "start_date") if request.HasField("start_date") else None
        end = _date(request.end_date, "end_date") if request.HasField("end_date") else None
        chosen = []
        for s in listed.reports:
            if kinds and convert.kind_of(s) not in kinds:
                continue
            day = s.issue_time.ToDatetime().date() if s.HasField("issue_time") else None
            if day is not None and ((start and day < start) or (end and day > end)):
                continue
            chosen.append(
                convert.summary(
                    s,
                    report_id=encode_report_id(request.hospital_id, bound, s.report_id),
                    hospital_id=request.hospital_id,
                )
            )
        size = min(request.page_size or _PAGE_DEFAULT, _PAGE_MAX)
        out.reports.extend(chosen[offset : offset + size])
        if offset + size < len(chosen):
            out.next_page_token = str(offset + size)
        return out

    async def get_report(
        self, request: patient_pb2.GetReportRequest, caller: Caller
    ) -> patient_pb2.GetReportResponse:
        """GetReport: NOT_FOUND unless the report is of a patient the account may see."""
        session = _session(caller)
        if not request.report_id:
            raise errors.InvalidArgument(
                "report_id is required",
                domain=ERROR_DOMAIN,
                field_violations=[("report_id", "required")],
            )
        decoded = decode_report_id(request.report_id)
        not_found = errors.NotFound(
            "no such report", reason="REPORT_NOT_FOUND", domain=ERROR_DOMAIN
        )
        if decoded is None:
            raise not_found
        hospital_id, bound, his_report = decoded
        his_patient = ""
        for patient in await self._patients.list(session):
            if patient.patient_id == bound:
                his_patient = next(
                    (
                        h.hospital_patient_id
                        for h in patient.hospitals
                        if h.hospital_id == hospital_id
                    ),
                    "",
                )
        if not his_patient:
            raise not_found
        subject = _subject(session.account_id, hospital_id, his_patient, "get", his_report)
        spec = report_pb2.GetReportRequest(
            report_id=his_report, patient=common_pb2.PatientRef(patient_id=his_patient)
        )
        row = await self._lookup(session.account_id, hospital_id, "get", subject, spec)
        if row is None:
            raise errors.Unavailable(
                "the report is being fetched from the hospital; call again after the retry delay",
                reason="REPORT_LOOKUP_PENDING",
                domain=ERROR_DOMAIN,
                retry_delay=self._config.retry_after,
            )
        found = report_pb2.GetReportResponse.FromString(row.result)
        out = patient_pb2.GetReportResponse(
            report=convert.report(
                found.report, report_id=request.report_id, hospital_id=hospital_id
            )
        )
        completed = _aware(row.completed_at)
        assert completed is not None
        out.as_of.FromDatetime(completed)
        return out

    # -- lookups --------------------------------------------------------------------------

    def _retry_after(self) -> duration_pb2.Duration:
        out = duration_pb2.Duration()
        out.FromNanoseconds(round(self._config.retry_after * 1e9))
        return out

    async def _find_patient(
        self, session: Any, hospital_id: str, who: patient_pb2.PatientIdentity
    ) -> tuple[str, str]:
        """``(bound patient id, the hospital's patient id)`` of the account's patient."""
        matches = []
        for patient in await self._patients.list(session):
            if patient.name != who.name:
                continue
            if who.id_card_number and (
                patient.id_card_type != who.id_card_type
                or patient.id_card_number_masked != mask_id_number(who.id_card_number)
            ):
                continue
            at = [h.hospital_patient_id for h in patient.hospitals if h.hospital_id == hospital_id]
            if at:
                matches.append((patient.patient_id, at[0]))
        if len(matches) != 1:
            raise errors.NotFound(
                "no patient of this account is bound at that hospital with that identity",
                reason="PATIENT_NOT_BOUND",
                domain=ERROR_DOMAIN,
            )
        return matches[0]

    async def _lookup(
        self,
        account_id: str,
        hospital_id: str,
        kind: str,
        subject: str,
        spec: pb_message.Message,
    ) -> Any:
        """The DONE lookup for ``subject``, or ``None`` while one is pending.

        A pending lookup without a task is submitted (again) now.

        Raises:
            mesh.errors.Unavailable: the hospital is offline (nothing was queued), or the
                lookup failed at the hospital (the next call starts a new one).
            mesh.errors.ResourceExhausted: the account has too many lookups pending.
        """
        now = self._clock()
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(LOOKUPS).where(
                        LOOKUPS.c.subject == subject, LOOKUPS.c.expires_at > now
                    )
                )
            ).first()
        if row is not None and row.state == "DONE":
            return row
        if row is not None and row.state == "FAILED":
            await self._delete(row.lookup_key)
            raise errors.Unavailable(
                f"the hospital could not look this up: {row.error}",
                reason="REPORT_LOOKUP_FAILED",
                domain=ERROR_DOMAIN,
                retry_delay=self._config.retry_after,
            )
        if row is not None and row.task_id:
            return None
        key = (
            row.lookup_key
            if row is not None
            else await self._create(account_id, hospital_id, kind, subject, now)
        )
        await self._submit(key, hospital_id, kind, spec)
        return None

    async def _create(
        self, account_id: str, hospital_id: str, kind: str, subject: str, now: dt.datetime
    ) -> str:
        key = f"{KEY_PREFIX}-{uuid.uuid4().hex}"
        ttl = dt.timedelta(seconds=self._config.task_deadline + self._config.result_ttl)
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(
                LOOKUPS.delete().where(LOOKUPS.c.subject == subject, LOOKUPS.c.expires_at <= now)
            )
            pending = (
                await conn.execute(
                    sa.select(sa.func.count()).where(
                        LOOKUPS.c.account_id == account_id,
                        LOOKUPS.c.state == "PENDING",
                        LOOKUPS.c.expires_at > now,
                    )
                )
            ).scalar_one()
            if pending >= self._config.max_pending_per_account:
                raise errors.ResourceExhausted(
                    f"{pending} report lookups of this account are pending",
                    reason="TOO_MANY_LOOKUPS",
                    domain=ERROR_DOMAIN,
                    retry_delay=self._config.retry_after,
                )
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        LOOKUPS.insert().values(
                            lookup_key=key,
                            subject=subject,
                            hospital_id=hospital_id,
                            account_id=account_id,
                            kind=kind,
                            state="PENDING",
                            task_id="",
                            submitted_at=now,
                            expires_at=now + ttl,
                            error="",
                        )
                    )
            except sa.exc.IntegrityError:
                # A concurrent call made it: submit under its key (SubmitTask is idempotent).
                found = (
                    await conn.execute(
                        sa.select(LOOKUPS.c.lookup_key).where(LOOKUPS.c.subject == subject)
                    )
                ).scalar_one()
                return str(found)
        return key

    async def _submit(
        self, key: str, hospital_id: str, kind: str, spec: pb_message.Message
    ) -> None:
        custom = any_pb2.Any()
        custom.Pack(spec)
        deadline = self._clock() + dt.timedelta(seconds=self._config.task_deadline)
        request = task_pb2.SubmitTaskRequest(
            idempotency_key=key, custom=custom, kind=task_pb2.TASK_KIND_CUSTOM, priority=5
        )
        request.deadline.FromDatetime(deadline)
        try:
            channel = await self._channel_for(hospital_id)
            stub = errors.wrap(task_pb2_grpc.TaskServiceStub(channel))
            reply = await stub.SubmitTask(request, timeout=self._config.call_timeout)
        except (errors.Unavailable, errors.DeadlineExceeded):
            # Maybe queued, maybe not: the row stays without a task id, and the next call
            # submits again under the same key (the edge answers with the same task).
            raise
        except errors.InvalidArgument as err:
            await self._delete(key)
            log.warning("reports: %s refused a %s lookup: %s", hospital_id, kind, err.message)
            raise errors.FailedPrecondition(
                "this hospital's front-end server cannot look up reports through its queue "
                "yet (it needs an upgrade)",
                reason="REPORT_LOOKUP_UNSUPPORTED",
                domain=ERROR_DOMAIN,
            ) from None
        except errors.ResourceExhausted as err:
            await self._delete(key)
            raise errors.Unavailable(
                "the hospital's queue is full; try again later",
                reason="HOSPITAL_QUEUE_FULL",
                domain=ERROR_DOMAIN,
                retry_delay=max(err.retry_delay or 0.0, self._config.retry_after),
            ) from None
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(
                LOOKUPS.update()
                .where(LOOKUPS.c.lookup_key == key, LOOKUPS.c.task_id == "")
                .values(task_id=reply.task.task_id[:64])
            )

    async def _delete(self, key: str) -> None:
        async with self._turn, self._engine.begin() as conn:
            await conn.execute(LOOKUPS.delete().where(LOOKUPS.c.lookup_key == key))

    # -- results from edges ---------------------------------------------------------------

    async def on_result(self, hospital_id: str, result: edge_pb2.TaskResult) -> Verdict:
        """Store a lookup's result pushed by an edge of ``hospital_id`` (a `ResultSink`).

        Returns `cloud.edge_api.Accepted`, or `~cloud.edge_api.Rejected` with NOT_FOUND for a
        key this hospital never got (or whose lookup expired), INVALID_ARGUMENT for a result
        of the wrong type, UNAVAILABLE when the database cannot take it now.
        """
        now = self._clock()
        try:
            async with self._turn, self._engine.begin() as conn:
                row = (
                    await conn.execute(
                        sa.select(LOOKUPS).where(
                            LOOKUPS.c.lookup_key == result.idempotency_key,
                            LOOKUPS.c.hospital_id == hospital_id,
                            LOOKUPS.c.expires_at > now,
                        )
                    )
                ).first()
                if row is None:
                    return Rejected(grpc.StatusCode.NOT_FOUND, "no pending lookup has that key")
                if row.state != "PENDING":
                    return Accepted()  # delivered before: harmless
                values: dict[str, Any] = {"completed_at": now, "task_id": result.task_id[:64]}
                if result.outcome == edge_pb2.TASK_OUTCOME_SUCCEEDED:
                    wanted = (
                        report_pb2.ListReportsResponse
                        if row.kind == "list"
                        else report_pb2.GetReportResponse
                    )
                    if not result.result.Is(wanted.DESCRIPTOR):
                        return Rejected(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"result: expected {wanted.DESCRIPTOR.full_name}",
                        )
                    decoded = wanted()
                    if not result.result.Unpack(decoded):
                        return Rejected(grpc.StatusCode.INVALID_ARGUMENT, "result: undecodable")
                    values.update(
                        state="DONE",
                        result=decoded.SerializeToString(),
                        expires_at=now + dt.timedelta(seconds=self._config.result_ttl),
                    )
                elif result.outcome == edge_pb2.TASK_OUTCOME_FAILED:
                    values.update(
                        state="FAILED",
                        error=(result.error.message or "failed")[:300],
                        expires_at=now + dt.timedelta(seconds=self._config.result_ttl),
                    )
                else:
                    return Accepted()  # parked: a later result follows if it succeeds
                await conn.execute(
                    LOOKUPS.update().where(LOOKUPS.c.lookup_key == row.lookup_key).values(**values)
                )
        except SQLAlchemyError as err:
            log.warning("reports: storing a result failed: %s", type(err).__name__)
            return Rejected(grpc.StatusCode.UNAVAILABLE, "the result could not be stored now")
        return Accepted()

    # -- expiry ---------------------------------------------------------------------------

    async def purge(self) -> int:
        """Delete lookups (and their results) whose time is up."""
        async with self._turn, self._engine.begin() as conn:
            done = await conn.execute(LOOKUPS.delete().where(LOOKUPS.c.expires_at <= self._clock()))
        return int(done.rowcount)

    async def run(self) -> None:
        """Purge every ``purge_interval`` until `shutdown` (a background loop of the node)."""
        while not self._stopping.is_set():
            try:
                purged = await self.purge()
                if purged:
                    log.info("reports: purged %d expired lookups", purged)
            except SQLAlchemyError:
                log.exception("reports: purge failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._config.purge_interval)

    async def shutdown(self) -> None:
        """Stop the purge loop."""
        self._stopping.set()


def _session(caller: Caller) -> Any:
    if caller.session is None:
        raise errors.Unauthenticated(
            "sign in first: reports are read by a signed-in account",
            reason="SESSION_REQUIRED",
            domain=ERROR_DOMAIN,
        )
    return caller.session


def _date(value: Any, field: str) -> dt.date:
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        raise errors.InvalidArgument(
            "invalid date", domain=ERROR_DOMAIN, field_violations=[(field, "not a date")]
        ) from None

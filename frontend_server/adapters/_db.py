"""Adapter for database HIS dialects: ``V_HIS_*`` views to read, procedure tables to write.

A write inserts a row into the request table and polls the response table by request id
with exponential backoff until the deadline. The HIS keeps no caller key: after a lost
answer, only its views (and our own ledger) tell whether the write happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from sqlalchemy import BindParameter, Date, DateTime, bindparam, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from frontend_server.adapters import _entities as E
from frontend_server.adapters._base import WRITE_OPERATIONS, BaseAdapter, converted
from frontend_server.adapters._codec import Record
from frontend_server.adapters._domain import (
    Appointment,
    Bill,
    BillItem,
    Capabilities,
    Changes,
    Charge,
    DailyLedger,
    DeletedEntity,
    Department,
    Doctor,
    Money,
    Patient,
    PatientRegistration,
    Payment,
    Quote,
    Refund,
    RegisteredPatient,
    Report,
    ReportSummary,
    Schedule,
    Slot,
)
from frontend_server.adapters._errors import (
    HisError,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.adapters._fieldmaps import DOCUMENTED_FIELDS
from frontend_server.adapters._settings import DialectSettings

__all__ = ["DbHisAdapter"]

FIELDS = DOCUMENTED_FIELDS["db"]

DEPT = FIELDS["department"]
DOCTOR = FIELDS["doctor"]
SCHEDULE = FIELDS["schedule"]
SLOT = FIELDS["slot"]
APPOINTMENT = FIELDS["appointment"]
BILL = FIELDS["bill"]
BILL_ITEM = FIELDS["bill_item"]
QUOTE = FIELDS["quote"]
CHARGE = FIELDS["charge"]
REFUND = FIELDS["refund"]
LEDGER = FIELDS["ledger_entry"]
REPORT_SUMMARY = FIELDS["report_summary"]
REPORT = FIELDS["report"]
OBSERVATION = FIELDS["observation"]
IMAGING = FIELDS["imaging"]
PATIENT = FIELDS["patient"]
_DELETED_KINDS = {"SCHEDULE": "SCHEDULE", "SLOT": "SLOT"}
_MISSING_COLUMN = re.compile(
    r'no such column: (?:\w+\.)?"?(\w+)"?|column "?(?:\w+\.)?(\w+)"? does not exist', re.I
)
_MISSING_OBJECT = re.compile(
    r'no such table: (?:\w+\.)?"?(\w+)"?|relation "?(?:\w+\.)?(\w+)"? does not exist', re.I
)
_WATERMARK_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class _DropStatementLogs(logging.Filter):
    """Drops aiosqlite's records (all DEBUG).

    They print every statement with its parameters, which here are patient identifiers
    (ID numbers, phones, names).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return False


_AIOSQLITE_FILTER = _DropStatementLogs()


def _guard_driver_logs() -> None:
    """Installs the aiosqlite filter once (idempotent: filters are kept in a list)."""
    driver_log = logging.getLogger("aiosqlite")
    if _AIOSQLITE_FILTER not in driver_log.filters:
        driver_log.addFilter(_AIOSQLITE_FILTER)


class DbHisAdapter(BaseAdapter):
    """Speaks a database HIS through SQLAlchemy 2 (async): views and procedure tables.

    Args:
        settings: Settings with ``dialect="db"`` and ``url`` an async SQLAlchemy URL.
    """

    DIALECT: ClassVar[str] = "db"
    MONEY_IN_FEN: ClassVar[bool] = True
    DIALECT_CAPABILITIES: ClassVar[Capabilities] = Capabilities(
        incremental_changes=True,
        appointment_query_by_key=False,
        charge_query_by_key=False,
        refund_query_by_key=False,
        bulk_slots=True,
    )

    def __init__(self, settings: DialectSettings) -> None:
        super().__init__(settings)
        url = make_url(settings.url)
        connect_args: dict[str, Any] = {}
        pool: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            # sqlite3's timeout is its busy timeout: wait for the HIS's write lock.
            connect_args["timeout"] = settings.connect_timeout_seconds
            _guard_driver_logs()
        else:
            connect_args["timeout"] = settings.connect_timeout_seconds
            pool = {"pool_size": settings.max_connections, "pool_pre_ping": True}
        # hide_parameters: statement parameters are patient identifiers; keep them out of
        # SQLAlchemy's logs and exception texts.
        self._engine: AsyncEngine = create_async_engine(
            url, connect_args=connect_args, hide_parameters=True, **pool
        )

    async def aclose(self) -> None:
        """Disposes of the engine's connections."""
        await super().aclose()
        await self._engine.dispose()

    # ------------------------------------------------------------------ plumbing

    def _obj(self, name: str) -> str:
        """Quoted, prefixed view/table name."""
        return f'"{self.settings.table_prefix}{self._codec.name(name)}"'

    def _col(self, name: str) -> str:
        return f'"{self._codec.name(name)}"'

    def _db_error(self, err: BaseException, op: str, *, write: bool, sent: bool) -> HisError:
        found = _MISSING_COLUMN.search(str(err))
        if found:
            column = found.group(1) or found.group(2)
            return HisProtocolError(
                f"field {column!r} of the {op} query: missing (a renamed vendor column? map it "
                "in DialectSettings.field_names)",
                field=column,
                operation=op,
                dialect=self.DIALECT,
            )
        found = _MISSING_OBJECT.search(str(err))
        if found:
            table = found.group(1) or found.group(2)
            return HisProtocolError(
                f"view or table {table!r} of the {op} query: missing (check table_prefix and "
                "the view names in DialectSettings.field_names)",
                field=table,
                operation=op,
                dialect=self.DIALECT,
            )
        if write and sent:
            return HisTimeout(
                f"{op}: database failure after the request was sent ({type(err).__name__}); "
                "the write may have happened",
                operation=op,
                dialect=self.DIALECT,
                write=True,
            )
        return HisUnavailable(
            f"{op}: database unavailable ({type(err).__name__})",
            operation=op,
            dialect=self.DIALECT,
        )

    async def _select(
        self,
        op: str,
        view: str,
        where: Sequence[tuple[str, str, Any]] = (),
        *,
        order_by: str = "",
    ) -> list[Record]:
        """Reads rows of a view: ``where`` is (column, operator, value); dates typed.

        Raises:
            HisTimeout: No result within the read deadline.
            HisUnavailable: The database cannot be reached.
            HisProtocolError: A column is missing.
        """
        clauses = []
        params: dict[str, Any] = {}
        binds: list[BindParameter[Any]] = []
        for i, (column, operator, value) in enumerate(where):
            name = f"p{i}"
            if operator == "IN":
                clauses.append(f"{self._col(column)} IN :{name}")
                binds.append(bindparam(name, expanding=True))
            else:
                clauses.append(f"{self._col(column)} {operator} :{name}")
                if isinstance(value, dt.datetime):
                    binds.append(bindparam(name, type_=DateTime()))
                elif isinstance(value, dt.date):
                    binds.append(bindparam(name, type_=Date()))
            params[name] = value
        sql = f"SELECT * FROM {self._obj(view)}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        if order_by:
            sql += f" ORDER BY {order_by}"
        statement = text(sql).bindparams(*binds) if binds else text(sql)
        deadline = self.settings.read_timeout_seconds
        try:
            async with asyncio.timeout(deadline), self._engine.connect() as conn:
                rows = (await conn.execute(statement, params)).mappings().all()
        except TimeoutError as err:
            raise HisTimeout(
                f"{op}: no result within {deadline}s", operation=op, dialect=self.DIALECT
            ) from err
        except (SQLAlchemyError, OSError) as err:
            raise self._db_error(err, op, write=False, sent=False) from err
        return [self._codec.record(dict(r), op, where=view) for r in rows]

    async def _proc(self, op: str, procedure: str, params: Mapping[str, Any]) -> Record:
        """Runs a procedure: insert the request, poll the response with backoff.

        Raises:
            HisTimeout: No response row within the deadline (for a write: it may have
                happened; the HIS may still pick the request up later).
            HisUnavailable: The database cannot be reached before the request was stored,
                or the HIS answered its outage code.
            HisRejected: A business ``RET_CODE``.
            HisProtocolError: The response is unreadable.
        """
        write = op in WRITE_OPERATIONS
        deadline = self._deadline(op)
        req_id = uuid.uuid4().hex
        in_params = {self._codec.name(k): v for k, v in params.items() if v is not None and v != ""}
        requests = self._obj("T_PROC_REQUEST")
        responses = self._obj("T_PROC_RESPONSE")
        c = self._col
        insert = text(
            f"INSERT INTO {requests} ({c('REQ_ID')}, {c('PROC_NAME')}, {c('IN_PARAMS')}, "
            f"{c('REQ_TIME')}, {c('STATUS')}) VALUES (:req_id, :proc, :params, :req_time, 'N')"
        ).bindparams(bindparam("req_time", type_=DateTime()))
        poll = text(
            f"SELECT {c('RET_CODE')} AS ret_code, {c('RET_MSG')} AS ret_msg, "
            f"{c('OUT_PARAMS')} AS out_params FROM {responses} WHERE {c('REQ_ID')} = :req_id"
        )
        sent = False
        row: Any = None
        try:
            async with asyncio.timeout(deadline):
                async with self._engine.begin() as conn:
                    await conn.execute(
                        insert,
                        {
                            "req_id": req_id,
                            "proc": self._codec.name(procedure),
                            "params": json.dumps(in_params, ensure_ascii=False),
                            "req_time": dt.datetime.now(self._codec.zone).replace(tzinfo=None),
                        },
                    )
                    # From here on the HIS may see the request.
                    sent = True
                delay = self.settings.db_poll_initial_seconds
                while True:
                    async with self._engine.connect() as conn:
                        row = (await conn.execute(poll, {"req_id": req_id})).mappings().first()
                    if row is not None:
                        break
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.db_poll_max_seconds)
        except TimeoutError as err:
            if not sent:
                raise HisUnavailable(
                    f"{op}: could not store the request within {deadline}s",
                    operation=op,
                    dialect=self.DIALECT,
                ) from err
            raise HisTimeout(
                f"{op}: no response within {deadline}s"
                + (" (the write may have happened)" if write else ""),
                operation=op,
                dialect=self.DIALECT,
                write=write,
            ) from err
        except (SQLAlchemyError, OSError) as err:
            raise self._db_error(err, op, write=write, sent=sent) from err
        code = str(row["ret_code"]).strip()
        if code != "0":
            raise self._refusal(code, str(row["ret_msg"] or ""), op)
        try:
            out = json.loads(row["out_params"] or "{}")
        except ValueError:
            raise HisProtocolError(
                f"{op}: OUT_PARAMS is not JSON",
                field=self._codec.name("OUT_PARAMS"),
                operation=op,
                dialect=self.DIALECT,
            ) from None
        return self._codec.record(out, op, where="OUT_PARAMS")

    def _code(self, table: str, neutral: str, operation: str) -> str:
        return self._codec.encode(table, neutral, operation=operation)

    def _not_found(self, op: str, what: str) -> HisRejected:
        return HisRejected(
            RejectReason.NOT_FOUND, "", f"{what} not found", operation=op, dialect=self.DIALECT
        )

    # ------------------------------------------------------------------ directory

    async def list_departments(self) -> tuple[Department, ...]:
        """Lists every department.

        Returns:
            The departments.
        """
        op = "list_departments"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_DEPT")
            return tuple(E.department(r, DEPT) for r in rows)

    def _doctors(self, rows: list[Record]) -> list[Doctor]:
        """Merges the one-row-per-department view into doctors."""
        merged: dict[str, Doctor] = {}
        for r in rows:
            d = E.doctor(r, DOCTOR)
            seen = merged.get(d.doctor_id)
            if seen is None:
                merged[d.doctor_id] = d
            elif d.department_ids[0] not in seen.department_ids:
                merged[d.doctor_id] = replace(
                    seen, department_ids=seen.department_ids + d.department_ids
                )
        return list(merged.values())

    async def list_doctors(self, *, department_id: str = "") -> tuple[Doctor, ...]:
        """Lists doctors.

        Args:
            department_id: Department filter.

        Returns:
            The doctors.
        """
        op = "list_doctors"
        with self._logged(op):
            doctors = self._doctors(await self._select(op, "V_HIS_DOCTOR"))
            return tuple(
                d for d in doctors if not department_id or department_id in d.department_ids
            )

    async def list_schedules(
        self,
        *,
        department_id: str = "",
        doctor_id: str = "",
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> tuple[Schedule, ...]:
        """Lists clinic sessions.

        Args:
            department_id: Department filter.
            doctor_id: Doctor filter.
            start: First date.
            end: Last date.

        Returns:
            The sessions.
        """
        op = "list_schedules"
        with self._logged(op):
            where: list[tuple[str, str, Any]] = []
            if department_id:
                where.append(("DEPT_ID", "=", department_id))
            if doctor_id:
                where.append(("DOC_ID", "=", doctor_id))
            if start:
                where.append(("WORK_DATE", ">=", start))
            if end:
                where.append(("WORK_DATE", "<=", end))
            rows = await self._select(op, "V_HIS_DOCTOR_SCHEDULE", where)
            return tuple(E.schedule(r, SCHEDULE) for r in rows)

    async def list_slots(self, schedule_id: str) -> tuple[Slot, ...]:
        """Lists the places of one session.

        Args:
            schedule_id: The session.

        Returns:
            The slots.
        """
        op = "list_slots"
        with self._logged(op):
            rows = await self._select(
                op, "V_HIS_SCHEDULE_SOURCE", [("SCHEDULE_ID", "=", schedule_id)]
            )
            return tuple(E.slot(r, SLOT) for r in rows)

    async def list_slots_between(
        self, *, start: dt.date, end: dt.date | None = None
    ) -> tuple[Slot, ...]:
        """Lists the places of every session dated in a range (one SELECT by start time).

        Args:
            start: First date (inclusive).
            end: Last date (inclusive); None for no upper bound.

        Returns:
            The slots.
        """
        op = "list_slots_between"
        self._require("bulk_slots", op)
        with self._logged(op):
            where: list[tuple[str, str, Any]] = [
                ("BEGIN_TIME", ">=", dt.datetime.combine(start, dt.time()))
            ]
            if end is not None:
                after = dt.datetime.combine(end + dt.timedelta(days=1), dt.time())
                where.append(("BEGIN_TIME", "<", after))
            rows = await self._select(op, "V_HIS_SCHEDULE_SOURCE", where)
            return await converted(rows, lambda r: E.slot(r, SLOT))

    async def get_changes(self, since: str | None = None) -> Changes:
        """Directory changes after a watermark (``MODIFY_TIME`` and the deletion log).

        Args:
            since: Watermark from the previous call; None for everything.

        Returns:
            The changes; the watermark is the latest change time seen.

        Raises:
            ValueError: ``since`` is not a watermark this adapter issued.
        """
        op = "get_changes"
        self._require("incremental_changes", op)
        mark = dt.datetime.strptime(since, _WATERMARK_FORMAT) if since else None
        with self._logged(op):

            def after(column: str) -> list[tuple[str, str, Any]]:
                return [(column, ">", mark)] if mark is not None else []

            modified = after("MODIFY_TIME")
            depts = [E.department(r, DEPT) for r in await self._select(op, "V_HIS_DEPT", modified)]
            doctors = self._doctors(await self._select(op, "V_HIS_DOCTOR", modified))
            schedules = [
                E.schedule(r, SCHEDULE)
                for r in await self._select(op, "V_HIS_DOCTOR_SCHEDULE", modified)
            ]
            slots = [
                E.slot(r, SLOT) for r in await self._select(op, "V_HIS_SCHEDULE_SOURCE", modified)
            ]
            deleted = []
            for r in await self._select(op, "V_HIS_DELETED_LOG", after("DELETE_TIME")):
                raw_kind = r.text("ENTITY_TYPE")
                kind = _DELETED_KINDS.get(raw_kind)
                if kind is None:
                    raise r.error("ENTITY_TYPE", f"unknown entity type {raw_kind!r}")
                deleted.append(DeletedEntity(kind, r.text("ENTITY_ID"), r.datetime("DELETE_TIME")))
            stamps: list[dt.datetime | None] = [x.modified_at for x in depts]
            stamps += [x.modified_at for x in doctors]
            stamps += [x.modified_at for x in schedules]
            stamps += [x.modified_at for x in slots]
            stamps += [x.deleted_at for x in deleted]
            times = [t for t in stamps if t is not None]
            latest = max(times).replace(tzinfo=None) if times else mark
            return Changes(
                departments=tuple(depts),
                doctors=tuple(doctors),
                schedules=tuple(schedules),
                slots=tuple(slots),
                deleted=tuple(deleted),
                watermark=latest.strftime(_WATERMARK_FORMAT) if latest else "",
            )

    # ------------------------------------------------------------------ appointments

    async def hold(
        self, *, slot_id: str, patient_id: str, key: str, payer: str = "SELF", minutes: int = 0
    ) -> Appointment:
        """Holds one place of a slot (the key is not stored: this HIS keeps none).

        Args:
            slot_id: The slot.
            patient_id: The patient.
            key: Idempotency key (unused by this dialect).
            payer: Neutral payer type.
            minutes: Hold time; 0 for the HIS's default.

        Returns:
            The hold.
        """
        op = "hold"
        with self._logged(op):
            params = {
                "SOURCE_ID": slot_id,
                "PATIENT_ID": patient_id,
                "FEE_TYPE": self._code("payer", payer, op),
                "LOCK_MINUTES": minutes or None,
            }
            return E.appointment(await self._proc(op, "P_LOCK_SOURCE", params), APPOINTMENT)

    async def release_hold(self, hold_id: str) -> Appointment:
        """Releases a hold.

        Args:
            hold_id: The hold.

        Returns:
            The appointment.
        """
        op = "release_hold"
        with self._logged(op):
            out = await self._proc(op, "P_UNLOCK_SOURCE", {"LOCK_ID": hold_id})
            return E.appointment(out, APPOINTMENT)

    async def book(
        self,
        *,
        patient_id: str,
        key: str,
        hold_id: str = "",
        slot_id: str = "",
        payer: str = "SELF",
        payment: Payment | None = None,
    ) -> Appointment:
        """Books a held place or a slot directly.

        Args:
            patient_id: The patient.
            key: Idempotency key (unused by this dialect).
            hold_id: Hold to confirm.
            slot_id: Slot when there is no hold.
            payer: Neutral payer type.
            payment: Payment; None when paying at the hospital.

        Returns:
            The booking.
        """
        op = "book"
        with self._logged(op):
            params: dict[str, Any] = {
                "LOCK_ID": hold_id,
                "SOURCE_ID": "" if hold_id else slot_id,
                "PATIENT_ID": patient_id,
                "FEE_TYPE": self._code("payer", payer, op),
            }
            if payment is not None:
                params.update(self._payment(payment, op))
            return E.appointment(await self._proc(op, "P_REGISTER", params), APPOINTMENT)

    def _payment(self, payment: Payment, op: str) -> dict[str, Any]:
        return {
            "PAY_MODE": self._code("payment_method", payment.method, op),
            "PAY_TRADE_NO": payment.transaction_id,
            "MERCHANT_ORDER_NO": payment.merchant_order_id,
            "PAY_AMOUNT_FEN": self._codec.money_out(payment.amount),
            "PAY_TIME": self._codec.datetime_out(payment.paid_at) if payment.paid_at else "",
        }

    async def cancel(
        self, *, appointment_id: str, patient_id: str, key: str, reason: str = ""
    ) -> Appointment:
        """Cancels a booking.

        Args:
            appointment_id: Booking or hold id.
            patient_id: Owner.
            key: Idempotency key (unused by this dialect).
            reason: Why.

        Returns:
            The appointment.
        """
        op = "cancel"
        with self._logged(op):
            params = {"REG_ID": appointment_id, "PATIENT_ID": patient_id, "REASON": reason}
            return E.appointment(await self._proc(op, "P_CANCEL_REG", params), APPOINTMENT)

    async def get_appointment(self, appointment_id: str) -> Appointment:
        """Reads a booking or hold (by registration or hold id).

        Args:
            appointment_id: Booking or hold id.

        Returns:
            The appointment.

        Raises:
            HisRejected: NOT_FOUND.
        """
        op = "get_appointment"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_REG_RECORD", [("REG_ID", "=", appointment_id)])
            if not rows:
                rows = await self._select(
                    op, "V_HIS_REG_RECORD", [("LOCK_ID", "=", appointment_id)]
                )
            if not rows:
                raise self._not_found(op, "appointment")
            return E.appointment(rows[0], APPOINTMENT)

    async def find_appointment_by_key(self, key: str) -> Appointment | None:
        """Not offered: this HIS stores no caller key.

        Args:
            key: Idempotency key.

        Raises:
            HisCapabilityError: Always (unless a future version adds the capability).
        """
        op = "get_appointment"
        self._require("appointment_query_by_key", op)
        raise AssertionError("unreachable: the database dialect stores no caller key")

    async def list_appointments(self, patient_id: str) -> tuple[Appointment, ...]:
        """Lists a patient's appointments.

        Args:
            patient_id: The patient.

        Returns:
            Newest visit first.
        """
        op = "list_appointments"
        with self._logged(op):
            order = f"{self._col('VISIT_BEGIN')} DESC, {self._col('CREATE_TIME')} DESC"
            rows = await self._select(
                op, "V_HIS_REG_RECORD", [("PATIENT_ID", "=", patient_id)], order_by=order
            )
            return tuple(E.appointment(r, APPOINTMENT) for r in rows)

    # ------------------------------------------------------------------ billing

    async def list_bills(self, patient_id: str) -> tuple[Bill, ...]:
        """Lists unpaid bills (lines from the item view).

        Args:
            patient_id: The patient.

        Returns:
            The bills.
        """
        op = "list_bills"
        with self._logged(op):
            bills = await self._select(op, "V_HIS_UNPAID_RECIPE", [("PATIENT_ID", "=", patient_id)])
            ids = [b.text("RECIPE_NO") for b in bills]
            lines: dict[str, list[tuple[int, BillItem]]] = {}
            if ids:
                for r in await self._select(op, "V_HIS_RECIPE_ITEM", [("RECIPE_NO", "IN", ids)]):
                    lines.setdefault(r.text("RECIPE_NO"), []).append(
                        (r.integer("ITEM_NO"), E.bill_item(r, BILL_ITEM))
                    )
            return tuple(
                E.bill(
                    b,
                    BILL,
                    BILL_ITEM,
                    tuple(item for _, item in sorted(lines.get(bill_id, []), key=lambda x: x[0])),
                )
                for b, bill_id in zip(bills, ids, strict=True)
            )

    async def quote(
        self, *, patient_id: str, bill_ids: Sequence[str], payer: str = "SELF"
    ) -> Quote:
        """Pre-settles bills.

        Args:
            patient_id: The patient.
            bill_ids: Bills.
            payer: Neutral payer type.

        Returns:
            The quote.
        """
        op = "quote"
        with self._logged(op):
            params = {
                "PATIENT_ID": patient_id,
                "RECIPE_NOS": ",".join(bill_ids),
                "FEE_TYPE": self._code("payer", payer, op),
            }
            return E.quote(await self._proc(op, "P_PRE_SETTLE", params), QUOTE)

    async def settle(
        self,
        *,
        patient_id: str,
        bill_ids: Sequence[str],
        payment: Payment,
        key: str,
        payer: str = "SELF",
    ) -> Charge:
        """Settles bills.

        Args:
            patient_id: The patient.
            bill_ids: Bills.
            payment: Payment.
            key: Idempotency key (unused by this dialect).
            payer: Neutral payer type.

        Returns:
            The charge.
        """
        op = "settle"
        with self._logged(op):
            params = {
                "PATIENT_ID": patient_id,
                "RECIPE_NOS": ",".join(bill_ids),
                "FEE_TYPE": self._code("payer", payer, op),
                **self._payment(payment, op),
            }
            return E.charge(await self._proc(op, "P_SETTLE", params), CHARGE)

    async def get_charge(self, charge_id: str) -> Charge:
        """Reads a charge.

        Args:
            charge_id: The HIS's id.

        Returns:
            The charge.

        Raises:
            HisRejected: NOT_FOUND.
        """
        op = "get_charge"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_SETTLE", [("SETTLE_ID", "=", charge_id)])
            if not rows:
                raise self._not_found(op, "charge")
            return E.charge(rows[0], CHARGE)

    async def find_charge_by_key(self, key: str) -> Charge | None:
        """Not offered: this HIS stores no caller key.

        Args:
            key: Idempotency key.

        Raises:
            HisCapabilityError: Always.
        """
        self._require("charge_query_by_key", "get_charge")
        raise AssertionError("unreachable: the database dialect stores no caller key")

    async def refund(
        self, *, charge_id: str, key: str, amount: Money | None = None, reason: str = ""
    ) -> Refund:
        """Refunds (part of) a charge.

        Args:
            charge_id: The charge.
            key: Idempotency key (unused by this dialect).
            amount: Cash to refund; None for all that is left.
            reason: Why.

        Returns:
            The refund.
        """
        op = "refund"
        with self._logged(op):
            params = {
                "SETTLE_ID": charge_id,
                "REFUND_FEN": self._codec.money_out(amount) if amount is not None else None,
                "REASON": reason,
            }
            return E.refund(await self._proc(op, "P_REFUND", params), REFUND)

    async def get_refund(self, refund_id: str) -> Refund:
        """Reads a refund.

        Args:
            refund_id: The HIS's id.

        Returns:
            The refund.

        Raises:
            HisRejected: NOT_FOUND.
        """
        op = "get_refund"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_REFUND", [("REFUND_ID", "=", refund_id)])
            if not rows:
                raise self._not_found(op, "refund")
            return E.refund(rows[0], REFUND)

    async def find_refund_by_key(self, key: str) -> Refund | None:
        """Not offered: this HIS stores no caller key.

        Args:
            key: Idempotency key.

        Raises:
            HisCapabilityError: Always.
        """
        self._require("refund_query_by_key", "get_refund")
        raise AssertionError("unreachable: the database dialect stores no caller key")

    async def daily_ledger(self, day: dt.date) -> DailyLedger:
        """The HIS's ledger of one day.

        Args:
            day: The day.

        Returns:
            The ledger; ``closed`` once the day is over in the HIS's zone.
        """
        op = "daily_ledger"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_DAY_LEDGER", [("BIZ_DATE", "=", day)])
            return DailyLedger(
                date=day,
                closed=day < self._codec.today(),
                entries=tuple(E.ledger_entry(r, LEDGER) for r in rows),
            )

    # ------------------------------------------------------------------ reports

    async def list_reports(self, patient_id: str) -> tuple[ReportSummary, ...]:
        """Lists a patient's reports.

        Args:
            patient_id: The patient.

        Returns:
            The reports.
        """
        op = "list_reports"
        with self._logged(op):
            rows = await self._select(op, "V_HIS_REPORT", [("PATIENT_ID", "=", patient_id)])
            return tuple(E.report_summary(r, REPORT_SUMMARY) for r in rows)

    async def get_report(self, report_id: str, *, patient_id: str) -> Report:
        """Reads a report.

        Args:
            report_id: The report.
            patient_id: Its patient.

        Returns:
            The report.
        """
        op = "get_report"
        with self._logged(op):
            params = {"REPORT_ID": report_id, "PATIENT_ID": patient_id}
            out = await self._proc(op, "P_GET_REPORT", params)
            return E.report(out, REPORT, OBSERVATION, IMAGING)

    async def get_archived_report(self, report_id: str, *, patient_id: str) -> Report:
        """Reads a report through the archive.

        Args:
            report_id: The report.
            patient_id: Its patient.

        Returns:
            The report.
        """
        op = "get_archived_report"
        self._require("archived_reports", op)
        with self._logged(op):
            params = {"REPORT_ID": report_id, "PATIENT_ID": patient_id}
            out = await self._proc(op, "P_GET_ARCHIVED_REPORT", params)
            return E.report(out, REPORT, OBSERVATION, IMAGING)

    # ------------------------------------------------------------------ patients

    async def register_patient(self, registration: PatientRegistration) -> RegisteredPatient:
        """Registers a patient, then reads the record from the patient view.

        Args:
            registration: Who.

        Returns:
            The record and whether it was created now.
        """
        op = "register_patient"
        reg = registration
        with self._logged(op):
            params = {
                "PATIENT_NAME": reg.name,
                "SEX": self._code("gender", reg.gender, op) if reg.gender else "",
                "BIRTHDAY": reg.birth_date.isoformat() if reg.birth_date else "",
                "CERT_TYPE": self._code("id_type", reg.id_type, op),
                "CERT_NO": reg.id_number,
                "MOBILE": reg.phone,
                "ADDRESS": reg.address,
                "NATION": reg.ethnicity,
                "CARD_TYPE": self._code("card_type", reg.card_type, op) if reg.card_number else "",
                "CARD_NO": reg.card_number,
                "FEE_TYPE": self._code("payer", reg.payer, op),
            }
            out = await self._proc(op, "P_CREATE_PATIENT", params)
            patient_id = out.text("PATIENT_ID")
            rows = await self._select(op, "V_HIS_PATIENT", [("PATIENT_ID", "=", patient_id)])
            if not rows:
                raise HisProtocolError(
                    f"{op}: patient created but not in the patient view",
                    field="PATIENT_ID",
                    operation=op,
                    dialect=self.DIALECT,
                )
            return RegisteredPatient(E.patient(rows[0], PATIENT), out.flag("IS_NEW"))

    async def find_patients(
        self, *, id_number: str = "", card_number: str = "", phone: str = "", name: str = ""
    ) -> tuple[Patient, ...]:
        """Finds patients.

        Args:
            id_number: Document number.
            card_number: Hospital card or a bound card.
            phone: Mobile (needs ``name``).
            name: Name.

        Returns:
            The matches.

        Raises:
            ValueError: Not exactly one criterion (or a phone without the name).
        """
        op = "find_patients"
        self._check_find_args(id_number, card_number, phone, name)
        with self._logged(op):
            where: list[tuple[str, str, Any]] = []
            if id_number:
                where.append(("CERT_NO", "=", id_number.upper()))
            elif phone:
                where.append(("MOBILE", "=", phone))
            if name:
                where.append(("PATIENT_NAME", "=", name))
            if card_number:
                # Cards live in two columns; match exactly after a coarse SQL filter.
                where.append(("BIND_CARDS", "LIKE", f"%{card_number}%"))
                rows = await self._select(op, "V_HIS_PATIENT", where)
                rows += await self._select(
                    op, "V_HIS_PATIENT", [*where[:-1], ("CARD_NO", "=", card_number)]
                )
            else:
                rows = await self._select(op, "V_HIS_PATIENT", where)
            found: dict[str, Patient] = {}
            for r in rows:
                p = E.patient(r, PATIENT)
                if card_number and card_number not in {
                    p.card_number,
                    *(c.card_number for c in p.cards),
                }:
                    continue
                found.setdefault(p.patient_id, p)
            return tuple(sorted(found.values(), key=lambda p: p.patient_id))

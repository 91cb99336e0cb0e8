"""The database HIS ("RuiDa HIS"): views to read, procedure tables to write.

The caller reads reference and business data from ``V_HIS_*`` views, and runs a
"stored procedure" by inserting a row into ``T_PROC_REQUEST`` and polling
``T_PROC_RESPONSE`` for the row with the same ``REQ_ID``. The HIS keeps its state in the
shared core and mirrors every change into base tables ``HIS_*`` that the views select from.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tools.his_sim._base import SimBase, guarded
from tools.his_sim._dbschema import (
    CARD,
    CERT,
    ERRORS,
    FEE_TYPE,
    KEYS,
    LEVEL,
    MODE,
    NOON,
    OUTAGE_CODE,
    PARAMS,
    PAY_MODE,
    REG_STATUS,
    SEX,
    SOURCE_STATUS,
    TABLES,
    TITLE,
    VIEWS,
    int_param,
    naive,
    rev,
    yn,
)
from tools.his_sim._faults import Fault, RequestRecord, now_cst
from tools.his_sim._model import (
    Appointment,
    Bill,
    Charge,
    Doctor,
    HisError,
    Patient,
    Payment,
    Refund,
    Report,
    Schedule,
    Slot,
)
from tools.his_sim._wire import opt, parse_date, parse_dt, req

__all__ = ["VIEWS", "DbHis"]

_log = logging.getLogger(__name__)


class DbHis(SimBase):
    """A database HIS reached through SQLAlchemy 2 (SQLite by default, PostgreSQL by URL).

    Args:
        db_url: Async SQLAlchemy URL; None creates a SQLite file in a temporary directory
            (removed on stop).
        table_prefix: Prefix for every table and view name (e.g. ``"T1_"``), so several
            simulators or test runs can share one database.
        drop_on_stop: Drop this simulator's tables and views when it stops.
        poll_interval: Seconds between two scans of ``T_PROC_REQUEST``.
        **kwargs: Passed to :class:`SimBase` (seed, host, port, today, clock, admin_port).
    """

    dialect: ClassVar[str] = "db"

    def __init__(
        self,
        *,
        db_url: str | None = None,
        table_prefix: str = "",
        drop_on_stop: bool = False,
        poll_interval: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._tmpdir: str | None = None
        if db_url is None:
            self._tmpdir = tempfile.mkdtemp(prefix="his_sim_")
            db_url = f"sqlite+aiosqlite:///{Path(self._tmpdir) / 'his.db'}"
        self.db_url = db_url
        """The SQLAlchemy URL callers connect to."""
        self.prefix = table_prefix
        self._drop_on_stop = drop_on_stop or self._tmpdir is not None
        self._poll = poll_interval
        self._engine: AsyncEngine | None = None
        self._meta = MetaData()
        self._t: dict[str, Table] = {}
        for name, cols in TABLES.items():
            self._t[name] = Table(
                self.prefix + name,
                self._meta,
                *(Column(c, typ, primary_key=False) for c, typ in cols),
            )
        self.requests_table = Table(
            self.prefix + "T_PROC_REQUEST",
            self._meta,
            Column("REQ_ID", String(64), primary_key=True),
            Column("PROC_NAME", String(40), nullable=False),
            Column("IN_PARAMS", Text()),
            Column("REQ_TIME", DateTime()),
            Column("STATUS", String(1), nullable=False, server_default="N"),
        )
        """``T_PROC_REQUEST``: callers insert here."""
        self.responses_table = Table(
            self.prefix + "T_PROC_RESPONSE",
            self._meta,
            Column("REQ_ID", String(64), primary_key=True),
            Column("RET_CODE", String(10), nullable=False),
            Column("RET_MSG", Text()),
            Column("OUT_PARAMS", Text()),
            Column("RESP_TIME", DateTime()),
        )
        """``T_PROC_RESPONSE``: the HIS answers here."""
        self._procs: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]], bool]] = {
            "P_LOCK_SOURCE": ("hold", self._p_lock, True),
            "P_UNLOCK_SOURCE": ("release_hold", self._p_unlock, True),
            "P_REGISTER": ("book", self._p_register, True),
            "P_CANCEL_REG": ("cancel", self._p_cancel, True),
            "P_PRE_SETTLE": ("quote", self._p_pre_settle, True),
            "P_SETTLE": ("settle", self._p_settle, True),
            "P_REFUND": ("refund", self._p_refund, True),
            "P_CREATE_PATIENT": ("register_patient", self._p_create_patient, True),
            "P_GET_REPORT": ("get_report", self._p_get_report, False),
            "P_GET_ARCHIVED_REPORT": ("retrieve_archived_report", self._p_get_archived, False),
        }
        self._view_lock = asyncio.Lock()

    def table(self, name: str) -> str:
        """Returns the real name of a table or view (with the prefix).

        Args:
            name: Name without prefix, e.g. ``"V_HIS_DEPT"``.

        Returns:
            The prefixed name.
        """
        return self.prefix + name

    def _extra_info(self) -> dict[str, Any]:
        return {"db_url": self.db_url, "table_prefix": self.prefix}

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Creates the schema, loads the data, starts the admin API and the worker."""
        engine = create_async_engine(self.db_url)
        if engine.dialect.name == "sqlite":

            def pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=5000")
                cur.close()

            event.listen(engine.sync_engine, "connect", pragmas)
        self._engine = engine
        async with engine.begin() as conn:
            await self._drop_views(conn)
            await conn.run_sync(self._meta.drop_all)
            await conn.run_sync(self._meta.create_all)
            await self._create_views(conn)
            await self._load_all(conn)
        self.core.take_dirty()
        await super().start()
        self._spawn(self._worker())

    async def stop(self) -> None:
        """Stops the worker and the admin API; drops the schema when asked to."""
        await super().stop()
        if self._engine is not None:
            if self._drop_on_stop:
                async with self._engine.begin() as conn:
                    await self._drop_views(conn)
                    await conn.run_sync(self._meta.drop_all)
            await self._engine.dispose()
            self._engine = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    async def inject(self, fault: Fault) -> None:
        """Puts a fault in force; a rename rebuilds the views at once.

        Args:
            fault: The fault.
        """
        await super().inject(fault)
        await self._rebuild_views()
        await self._flush()

    async def clear_faults(self) -> None:
        """Ends every fault and restores the views."""
        await super().clear_faults()
        await self._rebuild_views()

    async def _rebuild_views(self) -> None:
        assert self._engine is not None
        async with self._view_lock, self._engine.begin() as conn:
            await self._drop_views(conn)
            await self._create_views(conn)

    async def _drop_views(self, conn: AsyncConnection) -> None:
        for view in VIEWS:
            await conn.execute(text(f'DROP VIEW IF EXISTS "{self.prefix}{view}"'))

    async def _create_views(self, conn: AsyncConnection) -> None:
        for view, (base, where) in VIEWS.items():
            cols = ", ".join(f'"{c}" AS "{self.faults.renames.get(c, c)}"' for c, _ in TABLES[base])
            clause = f" WHERE {where}" if where else ""
            await conn.execute(
                text(
                    f'CREATE VIEW "{self.prefix}{view}" AS SELECT {cols} '
                    f'FROM "{self.prefix}{base}"{clause}'
                )
            )

    # ----------------------------------------------------------------- mirror

    def _rows_for(self, kind: str, key: str) -> tuple[str, str, list[dict[str, Any]]]:
        core = self.core
        if kind == "DEPT":
            d = core.departments.get(key)
            rows = (
                []
                if d is None
                else [
                    {
                        "DEPT_ID": d.dept_id,
                        "DEPT_NAME": d.name,
                        "PARENT_ID": d.parent_id,
                        "SUBJECT_CODE": d.subject_code,
                        "DEPT_ADDR": d.location,
                        "DEPT_DESC": d.description,
                        "IS_ONLINE": yn(d.bookable),
                        "SORT_NO": d.order,
                        "MODIFY_TIME": naive(d.update_time),
                    }
                ]
            )
            return "HIS_DEPT", key, rows
        if kind == "DOCTOR":
            doc = core.doctors.get(key)
            return "HIS_DOCTOR", key, [] if doc is None else self._doctor_rows(doc)
        if kind == "SCHEDULE":
            s = core.schedules.get(key)
            return "HIS_SCHEDULE", key, [] if s is None else [self._schedule_row(s)]
        if kind == "SLOT":
            slot = core.slots.get(key)
            return "HIS_SOURCE", key, [] if slot is None else [self._source_row(slot)]
        if kind == "APPT":
            a = core.appointments.get(key)
            return "HIS_REG", key, [] if a is None else [self._reg_row(a)]
        if kind == "BILL":
            return "HIS_RECIPE", key, [self._recipe_row(core.bills[key])]
        if kind == "CHARGE":
            return "HIS_SETTLE", key, [self._settle_row(core.charges[key])]
        if kind == "REFUND":
            return "HIS_REFUND", key, [self._refund_row(core.refunds[key])]
        if kind == "PATIENT":
            return "HIS_PATIENT", key, [self._patient_row(core.patients[key])]
        return "HIS_REPORT", key, [self._report_row(core.reports[key])]

    def _doctor_rows(self, d: Doctor) -> list[dict[str, Any]]:
        return [
            {
                "DOC_ID": d.doctor_id,
                "DEPT_ID": dept,
                "DOC_NAME": d.name,
                "TITLE_CODE": TITLE[d.title],
                "TITLE_NAME": d.title_text,
                "SEX": SEX[d.gender],
                "GOOD_AT": d.specialty,
                "DOC_DESC": d.introduction,
                "PHOTO_URL": d.photo_url,
                "IS_ONLINE": yn(d.bookable),
                "MODIFY_TIME": naive(d.update_time),
            }
            for dept in d.dept_ids
        ]

    def _schedule_row(self, s: Schedule) -> dict[str, Any]:
        return {
            "SCHEDULE_ID": s.schedule_id,
            "DEPT_ID": s.dept_id,
            "DOC_ID": s.doctor_id,
            "WORK_DATE": s.date,
            "NOON_CODE": NOON[s.period],
            "BEGIN_TIME": s.start.strftime("%H:%M"),
            "END_TIME": s.end.strftime("%H:%M"),
            "ROOM": s.location,
            "REG_LEVEL": LEVEL[s.clinic_type],
            "REG_FEE_FEN": s.reg_fee,
            "DIAG_FEE_FEN": s.diag_fee,
            "SOURCE_MODE": MODE[s.slot_mode],
            "TOTAL_NUM": self.core.schedule_capacity(s),
            "REMAIN_NUM": self.core.schedule_remaining(s),
            "STOP_FLAG": yn(s.suspended),
            "STOP_REASON": s.suspend_reason,
            "AGE_MIN": s.min_age,
            "AGE_MAX": s.max_age,
            "SEX_LIMIT": SEX[s.required_gender],
            "MODIFY_TIME": naive(s.update_time),
        }

    def _source_row(self, s: Slot) -> dict[str, Any]:
        state = self.core.slot_state(s)
        return {
            "SOURCE_ID": s.slot_id,
            "SCHEDULE_ID": s.schedule_id,
            "SEQ_NO": s.ticket_number,
            "BEGIN_TIME": naive(s.start),
            "END_TIME": naive(s.end),
            "TOTAL_NUM": s.capacity,
            "REMAIN_NUM": state.remaining,
            "LOCK_NUM": state.held,
            "STATUS": SOURCE_STATUS[state.status],
            "MODIFY_TIME": naive(s.update_time),
        }

    def _reg_row(self, a: Appointment) -> dict[str, Any]:
        sched = self.core.schedules.get(a.schedule_id)
        pay = a.payment
        return {
            "REG_ID": a.appt_id,
            "LOCK_ID": a.hold_id,
            "REG_STATUS": REG_STATUS[a.status],
            "PATIENT_ID": a.patient_id,
            "PATIENT_NAME": self.core.patients[a.patient_id].name,
            "DEPT_ID": sched.dept_id if sched else "",
            "DOC_ID": sched.doctor_id if sched else "",
            "SCHEDULE_ID": a.schedule_id,
            "SOURCE_ID": a.slot_id,
            "VISIT_DATE": a.visit_start.date(),
            "NOON_CODE": NOON[sched.period] if sched else "",
            "VISIT_BEGIN": naive(a.visit_start),
            "VISIT_END": naive(a.visit_end),
            "SEQ_NO": a.ticket_number,
            "ROOM": sched.location if sched else "",
            "TAKE_PWD": a.check_in_code,
            "FEE_TYPE": FEE_TYPE[a.payer],
            "TOTAL_FEE_FEN": a.fee_total,
            "INSUR_FEE_FEN": a.fee_fund,
            "SELF_FEE_FEN": a.fee_cash,
            "PAY_MODE": PAY_MODE[pay.method] if pay else "",
            "PAY_TRADE_NO": pay.transaction_id if pay else "",
            "RECEIPT_NO": a.receipt_number,
            "LOCK_EXPIRE": naive(a.hold_expire),
            "CANCEL_TIME": naive(a.cancel_time),
            "CANCEL_REASON": a.cancel_reason,
            "REFUND_RECEIPT_NO": a.refund_receipt,
            "CREATE_TIME": naive(a.create_time),
            "MODIFY_TIME": naive(a.update_time),
        }

    def _recipe_row(self, b: Bill) -> dict[str, Any]:
        return {
            "RECIPE_NO": b.bill_id,
            "PATIENT_ID": b.patient_id,
            "REG_ID": b.appt_id,
            "DEPT_ID": b.dept_id,
            "DOC_ID": b.doctor_id,
            "RECIPE_TITLE": b.title,
            "ORDER_TIME": naive(b.order_time),
            "TOTAL_FEN": b.total,
            "PAY_FLAG": yn(b.status == "PAID"),
        }

    def _item_rows(self, b: Bill) -> list[dict[str, Any]]:
        return [
            {
                "RECIPE_NO": b.bill_id,
                "ITEM_NO": n,
                "ITEM_CODE": i.code,
                "ITEM_NAME": i.name,
                "FEE_CLASS": i.category,
                "QTY": i.quantity,
                "UNIT": i.unit,
                "PRICE_FEN": i.unit_price,
                "AMOUNT_FEN": i.amount,
            }
            for n, i in enumerate(b.items, 1)
        ]

    def _settle_row(self, c: Charge) -> dict[str, Any]:
        return {
            "SETTLE_ID": c.charge_id,
            "PATIENT_ID": c.patient_id,
            "RECIPE_NOS": ",".join(c.bill_ids),
            "FEE_TYPE": FEE_TYPE[c.payer],
            "TOTAL_FEN": c.total,
            "FUND_FEN": c.fund,
            "ACCOUNT_FEN": c.account,
            "CASH_FEN": c.cash,
            "PAY_MODE": PAY_MODE[c.payment.method],
            "PAY_TRADE_NO": c.payment.transaction_id,
            "MERCHANT_ORDER_NO": c.payment.merchant_order_id,
            "SETTLE_STATUS": {"SETTLED": "1", "PARTIALLY_REFUNDED": "2", "REFUNDED": "3"}[c.status],
            "REFUNDED_FEN": c.refunded_cash,
            "INVOICE_NO": c.invoice_number,
            "GUIDE": c.guidance,
            "SETTLE_TIME": naive(c.settle_time),
        }

    def _refund_row(self, r: Refund) -> dict[str, Any]:
        return {
            "REFUND_ID": r.refund_id,
            "SETTLE_ID": r.charge_id,
            "PATIENT_ID": r.patient_id,
            "REFUND_STATUS": "1",
            "REFUND_FEN": r.cash,
            "REFUND_TOTAL_FEN": r.total,
            "REASON": r.reason,
            "APPLY_TIME": naive(r.create_time),
            "FINISH_TIME": naive(r.complete_time),
        }

    def _patient_row(self, p: Patient) -> dict[str, Any]:
        return {
            "PATIENT_ID": p.patient_id,
            "PATIENT_NAME": p.name,
            "SEX": SEX[p.gender],
            "BIRTHDAY": p.birth_date,
            "CERT_TYPE": CERT[p.id_type],
            "CERT_NO": p.id_number,
            "MOBILE": p.phone,
            "ADDRESS": p.address,
            "NATION": p.ethnicity,
            "CARD_NO": p.card_number,
            "BIND_CARDS": ",".join(f"{CARD.get(t, 'QT')}:{n}" for t, n in p.bound_cards),
            "FEE_TYPE": FEE_TYPE[p.payer],
            "INSUR_NO": p.insurance_number,
            "CREATE_TIME": naive(p.create_time),
            "MODIFY_TIME": naive(p.update_time),
        }

    def _report_row(self, r: Report) -> dict[str, Any]:
        return {
            "REPORT_ID": r.report_id,
            "REPORT_TYPE": "LIS" if r.kind == "LAB" else "PACS",
            "REPORT_NAME": r.title,
            "PATIENT_ID": r.patient_id,
            "REPORT_STATUS": "1" if r.status == "FINAL" else "0",
            "ARCHIVE_FLAG": yn(r.archived),
            "DEPT_ID": r.dept_id,
            "REG_ID": r.appt_id,
            "REPORT_TIME": naive(r.issue_time),
            "EXPECT_TIME": naive(r.expected_time),
            "ABNORMAL_FLAG": yn(r.has_abnormal),
        }

    def _ledger_rows(self, day: dt.date) -> list[dict[str, Any]]:
        kinds = {"REG": "GH", "REG_REFUND": "TH", "CHARGE": "SF", "CHARGE_REFUND": "TF"}
        return [
            {
                "BIZ_DATE": day,
                "BIZ_TYPE": kinds[x.kind],
                "RECEIPT_NO": x.receipt,
                "PATIENT_ID": x.patient_id,
                "REG_ID": x.appt_id,
                "FEE_TYPE": FEE_TYPE[x.payer],
                "TOTAL_FEN": x.total,
                "CASH_FEN": x.cash,
                "PAY_MODE": PAY_MODE[x.method],
                "PAY_TRADE_NO": x.transaction_id,
                "BIZ_TIME": naive(x.time),
            }
            for x in self.core.ledger(day)
        ]

    async def _insert(self, conn: AsyncConnection, name: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            await conn.execute(insert(self._t[name]), rows)

    async def _load_all(self, conn: AsyncConnection) -> None:
        core = self.core
        await self._insert(
            conn, "HIS_DEPT", [self._rows_for("DEPT", k)[2][0] for k in core.departments]
        )
        await self._insert(
            conn, "HIS_DOCTOR", [r for d in core.doctors.values() for r in self._doctor_rows(d)]
        )
        await self._insert(
            conn, "HIS_SCHEDULE", [self._schedule_row(s) for s in core.schedules.values()]
        )
        await self._insert(conn, "HIS_SOURCE", [self._source_row(s) for s in core.slots.values()])
        await self._insert(conn, "HIS_RECIPE", [self._recipe_row(b) for b in core.bills.values()])
        await self._insert(
            conn, "HIS_RECIPE_ITEM", [r for b in core.bills.values() for r in self._item_rows(b)]
        )
        await self._insert(
            conn, "HIS_PATIENT", [self._patient_row(p) for p in core.patients.values()]
        )
        await self._insert(conn, "HIS_REPORT", [self._report_row(r) for r in core.reports.values()])

    async def _apply_dirty(self, conn: AsyncConnection, dirty: Iterable[tuple[str, str]]) -> None:
        ledger = False
        for kind, key in sorted(dirty):
            name, _, rows = self._rows_for(kind, key)
            table = self._t[name]
            await conn.execute(delete(table).where(table.c[KEYS[name]] == key))
            await self._insert(conn, name, rows)
            if kind == "BILL":
                items = self._t["HIS_RECIPE_ITEM"]
                await conn.execute(delete(items).where(items.c["RECIPE_NO"] == key))
                await self._insert(conn, "HIS_RECIPE_ITEM", self._item_rows(self.core.bills[key]))
            if kind in ("SCHEDULE", "SLOT") and not rows:
                await self._insert(
                    conn,
                    "HIS_DELETED_LOG",
                    [
                        {"ENTITY_TYPE": kind, "ENTITY_ID": k, "DELETE_TIME": naive(t)}
                        for knd, k, t in self.core.deleted
                        if knd == kind and k == key
                    ],
                )
            ledger = ledger or kind in ("APPT", "CHARGE", "REFUND")
        if ledger:
            day = self.core.now().date()
            table = self._t["HIS_DAY_LEDGER"]
            await conn.execute(delete(table).where(table.c["BIZ_DATE"] == day))
            await self._insert(conn, "HIS_DAY_LEDGER", self._ledger_rows(day))

    async def _flush(self) -> None:
        assert self._engine is not None
        self.core.expire_holds()
        self.faults.apply_archives(self.core)
        dirty = self.core.take_dirty()
        if dirty:
            async with self._engine.begin() as conn:
                await self._apply_dirty(conn, dirty)

    # ----------------------------------------------------------------- worker

    async def _worker(self) -> None:
        while True:
            try:
                await self._cycle()
            except Exception:
                # A database hiccup (a lock held by a caller, a dropped PostgreSQL connection)
                # must not end the HIS: log it and try again on the next cycle.
                _log.exception("his_sim db worker cycle failed")
            await asyncio.sleep(self._poll)

    async def _cycle(self) -> None:
        assert self._engine is not None
        await self._flush()
        outage = self.faults.outage if self.faults.outage_active() else None
        if outage is not None and outage.mode == "refuse":
            return
        table = self.requests_table
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(table)
                    .where(table.c["STATUS"] == "N")
                    .order_by(table.c["REQ_TIME"], table.c["REQ_ID"])
                )
            ).all()
        for row in rows:
            await self._process(row.REQ_ID, row.PROC_NAME, row.IN_PARAMS)

    async def _respond(self, req_id: str, code: str, msg: str, out: dict[str, Any] | None) -> None:
        assert self._engine is not None
        async with self._engine.begin() as conn:
            await self._apply_dirty(conn, self.core.take_dirty())
            await conn.execute(
                insert(self.responses_table).values(
                    REQ_ID=req_id,
                    RET_CODE=code,
                    RET_MSG=msg,
                    OUT_PARAMS=None if out is None else json.dumps(out, ensure_ascii=False),
                    RESP_TIME=naive(now_cst()),
                )
            )
            await conn.execute(
                update(self.requests_table)
                .where(self.requests_table.c["REQ_ID"] == req_id)
                .values(STATUS="D" if code == "0" else "E")
            )

    async def _process(self, req_id: str, proc_name: str, raw_params: str | None) -> None:
        assert self._engine is not None
        async with self._engine.begin() as conn:
            await conn.execute(
                update(self.requests_table)
                .where(self.requests_table.c["REQ_ID"] == req_id)
                .values(STATUS="P")
            )
        operation, fn, write = self._procs.get(proc_name, ("invalid", self._p_unknown, False))
        record = RequestRecord(time.monotonic(), now_cst(), operation)
        self.request_log.append(record)
        if self.faults.outage_active():
            record.outcome = "outage"
            await self._respond(req_id, OUTAGE_CODE, "HIS服务不可用(系统维护)", None)
            return
        delay = self.faults.latency_for(operation)
        if delay > 0:
            await asyncio.sleep(delay)
        self.faults.apply_archives(self.core)
        try:
            try:
                params = json.loads(raw_params or "{}")
            except ValueError as err:
                raise HisError("INVALID", "IN_PARAMS不是合法的JSON") from err
            if not isinstance(params, dict):
                raise HisError("INVALID", "IN_PARAMS须为JSON对象")
            out = self.faults.rename_out(guarded(fn, self.faults.rename_in(params)))
        except HisError as err:
            code = ERRORS.get(err.code, "E999")
            record.outcome = f"error:{code}"
            refused = {"ERR_PARAM": PARAMS.get(err.param, err.param)} if err.param else None
            await self._respond(req_id, code, err.message, refused)
            return
        record.outcome = "ok"
        fault = self.faults.take_timeout(operation) if write else None
        if fault is None:
            await self._respond(req_id, "0", "成功", out)
            return
        record.outcome = "lost"
        # The write is committed (and mirrored); only the answer is withheld.
        async with self._engine.begin() as conn:
            await self._apply_dirty(conn, self.core.take_dirty())
        if fault.mode == "hang":
            hang = fault.hang_seconds

            async def late() -> None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), hang)
                if not self._closing.is_set():
                    await self._respond(req_id, "0", "成功", out)

            self._spawn(late())

    # ----------------------------------------------------------------- procedures

    def _p_unknown(self, q: dict[str, Any]) -> dict[str, Any]:
        raise HisError("INVALID", "存储过程不存在")

    def _fee(self, q: dict[str, Any]) -> str:
        return rev(FEE_TYPE, opt(q, "FEE_TYPE", "ZF"), "FEE_TYPE")

    def _reg_out(self, a: Appointment) -> dict[str, Any]:
        row = self._reg_row(a)
        return {
            k: (
                v.isoformat(sep=" ")
                if isinstance(v, dt.datetime)
                else v.isoformat()
                if isinstance(v, dt.date)
                else v
            )
            for k, v in row.items()
        }

    def _p_lock(self, q: dict[str, Any]) -> dict[str, Any]:
        minutes = int_param(q, "LOCK_MINUTES", required=False) or 0
        appt = self.core.hold(
            req(q, "SOURCE_ID"), req(q, "PATIENT_ID"), payer=self._fee(q), seconds=minutes * 60
        )
        return self._reg_out(appt)

    def _p_unlock(self, q: dict[str, Any]) -> dict[str, Any]:
        return self._reg_out(self.core.release(req(q, "LOCK_ID")))

    def _p_register(self, q: dict[str, Any]) -> dict[str, Any]:
        payment = None
        mode = opt(q, "PAY_MODE")
        if mode:
            paid = opt(q, "PAY_TIME")
            payment = Payment(
                rev(PAY_MODE, mode, "PAY_MODE"),
                opt(q, "PAY_TRADE_NO"),
                opt(q, "MERCHANT_ORDER_NO"),
                int_param(q, "PAY_AMOUNT_FEN", required=mode != "CASH") or 0,
                parse_dt(paid, "PAY_TIME") if paid else None,
            )
        appt = self.core.book(
            req(q, "PATIENT_ID"),
            hold_id=opt(q, "LOCK_ID"),
            slot_id=opt(q, "SOURCE_ID"),
            payer=self._fee(q),
            payment=payment,
        )
        return self._reg_out(appt)

    def _p_cancel(self, q: dict[str, Any]) -> dict[str, Any]:
        appt = self.core.cancel(req(q, "REG_ID"), req(q, "PATIENT_ID"), reason=opt(q, "REASON"))
        return self._reg_out(appt)

    def _recipes(self, q: dict[str, Any]) -> list[str]:
        return [n for n in req(q, "RECIPE_NOS").split(",") if n.strip()]

    def _p_pre_settle(self, q: dict[str, Any]) -> dict[str, Any]:
        quote = self.core.quote(req(q, "PATIENT_ID"), self._recipes(q), self._fee(q))
        return {
            "PRE_SETTLE_ID": quote.quote_id,
            "TOTAL_FEN": quote.total,
            "FUND_FEN": quote.fund,
            "ACCOUNT_FEN": quote.account,
            "CASH_FEN": quote.cash,
            "EXPIRE_TIME": quote.expire_time.replace(tzinfo=None).isoformat(sep=" "),
        }

    def _p_settle(self, q: dict[str, Any]) -> dict[str, Any]:
        paid = opt(q, "PAY_TIME")
        payment = Payment(
            rev(PAY_MODE, req(q, "PAY_MODE"), "PAY_MODE"),
            opt(q, "PAY_TRADE_NO"),
            opt(q, "MERCHANT_ORDER_NO"),
            int_param(q, "PAY_AMOUNT_FEN") or 0,
            parse_dt(paid, "PAY_TIME") if paid else None,
        )
        charge = self.core.settle(
            req(q, "PATIENT_ID"), self._recipes(q), payment, payer=self._fee(q)
        )
        row = self._settle_row(charge)
        row["SETTLE_TIME"] = charge.settle_time.replace(tzinfo=None).isoformat(sep=" ")
        return row

    def _p_refund(self, q: dict[str, Any]) -> dict[str, Any]:
        refund = self.core.refund(
            req(q, "SETTLE_ID"),
            amount=int_param(q, "REFUND_FEN", required=False),
            reason=opt(q, "REASON"),
        )
        row = self._refund_row(refund)
        for k in ("APPLY_TIME", "FINISH_TIME"):
            row[k] = row[k].isoformat(sep=" ")
        return row

    def _p_create_patient(self, q: dict[str, Any]) -> dict[str, Any]:
        birthday = opt(q, "BIRTHDAY")
        card = opt(q, "CARD_TYPE", "JZK")
        patient, created = self.core.register_patient(
            name=req(q, "PATIENT_NAME"),
            gender={"男": "M", "女": "F"}.get(opt(q, "SEX"), ""),
            birth_date=parse_date(birthday, "BIRTHDAY") if birthday else None,
            id_type=rev(CERT, opt(q, "CERT_TYPE", "SFZ"), "CERT_TYPE"),
            id_number=req(q, "CERT_NO"),
            phone=opt(q, "MOBILE"),
            address=opt(q, "ADDRESS"),
            ethnicity=opt(q, "NATION"),
            card_type=rev(CARD, card, "CARD_TYPE"),
            card_number=opt(q, "CARD_NO") if card != "JZK" else "",
            payer=self._fee(q),
        )
        return {
            "PATIENT_ID": patient.patient_id,
            "CARD_NO": patient.card_number,
            "IS_NEW": yn(created),
        }

    def _p_get_report(self, q: dict[str, Any]) -> dict[str, Any]:
        return self._report_out(self.core.read_report(req(q, "REPORT_ID"), req(q, "PATIENT_ID")))

    def _p_get_archived(self, q: dict[str, Any]) -> dict[str, Any]:
        r = self.core.retrieve_archived(req(q, "REPORT_ID"), req(q, "PATIENT_ID"))
        return self._report_out(r)

    def _report_out(self, r: Report) -> dict[str, Any]:
        out: dict[str, Any] = {
            "REPORT_ID": r.report_id,
            "REPORT_TYPE": "LIS" if r.kind == "LAB" else "PACS",
            "REPORT_NAME": r.title,
            "PATIENT_NAME": self.core.patients[r.patient_id].name,
            "DIAGNOSIS": r.diagnosis,
            "REPORT_DOC": r.reporter,
            "AUDIT_DOC": r.verifier,
            "REPORT_TIME": r.issue_time.replace(tzinfo=None).isoformat(sep=" ")
            if r.issue_time
            else "",
        }
        if r.lab is not None:
            out["SAMPLE_TYPE"] = r.lab.specimen
            out["SAMPLE_TIME"] = r.lab.collect_time.replace(tzinfo=None).isoformat(sep=" ")
            out["RESULTS"] = [
                {
                    "ITEM_CODE": o.code,
                    "ITEM_NAME": o.name,
                    "ITEM_ABBR": o.abbreviation,
                    "RESULT_VALUE": o.value,
                    "RESULT_UNIT": o.unit,
                    "REF_RANGE": o.range_text,
                    "REF_LOW": o.low,
                    "REF_HIGH": o.high,
                    "ABNORMAL_FLAG": o.flag,
                    "SEQ": o.order,
                }
                for o in r.lab.observations
            ]
        if r.imaging is not None:
            out.update(
                MODALITY=r.imaging.modality,
                EXAM_PART=r.imaging.body_site,
                EXAM_METHOD=r.imaging.method,
                EXAM_SEE=r.imaging.findings,
                EXAM_RESULT=r.imaging.conclusion,
                STUDY_UID=r.imaging.study_uid,
            )
        return out

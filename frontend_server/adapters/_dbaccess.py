"""How the database dialect talks SQL: the engine, view reads, procedure-table calls.

:class:`DbAccess` is the base of :class:`~frontend_server.adapters.DbHisAdapter`: it owns
the SQLAlchemy engine (statement parameters hidden from logs: they are patient
identifiers), reads a view with typed filters, runs a procedure by inserting a request row
and polling the response table, and maps driver errors onto the :class:`HisError` tree
(a missing column or view names it). The operations, mapped onto the vendor's views and
procedures, are in :mod:`frontend_server.adapters._db`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import BindParameter, Date, DateTime, bindparam, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typing_extensions import override

from frontend_server.adapters._base import WRITE_OPERATIONS, BaseAdapter
from frontend_server.adapters._codec import Record
from frontend_server.adapters._errors import HisError, HisProtocolError, HisTimeout, HisUnavailable
from frontend_server.adapters._settings import DialectSettings, within_caller
from mesh.observability import current_traceparent
from mesh.retry import RetryPolicy

__all__ = ["DbAccess"]

_MISSING_COLUMN = re.compile(
    r'no such column: (?:\w+\.)?"?(\w+)"?|column "?(?:\w+\.)?(\w+)"? does not exist', re.I
)
_MISSING_OBJECT = re.compile(
    r'no such table: (?:\w+\.)?"?(\w+)"?|relation "?(?:\w+\.)?(\w+)"? does not exist', re.I
)


class _DropStatementLogs(logging.Filter):
    """Drops aiosqlite's records (all DEBUG).

    They print every statement with its parameters, which here are patient identifiers
    (ID numbers, phones, names).
    """

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return False


_AIOSQLITE_FILTER = _DropStatementLogs()


def _no_row(row: Any) -> bool:
    """The response table has no row for the request yet: poll again."""
    return row is None


def _guard_driver_logs() -> None:
    """Installs the aiosqlite filter once (idempotent: filters are kept in a list)."""
    driver_log = logging.getLogger("aiosqlite")
    if _AIOSQLITE_FILTER not in driver_log.filters:
        driver_log.addFilter(_AIOSQLITE_FILTER)


class DbAccess(BaseAdapter):
    """The SQL side of the database dialect (see the module).

    Args:
        settings: Settings with ``dialect="db"`` and ``url`` an async SQLAlchemy URL.
    """

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
        # Reads of the response table until the HIS has answered; the call's deadline
        # (asyncio.timeout around it) ends the polling. No jitter: each call polls for its
        # own request, and waiting less than the window only means more reads.
        self._poll = RetryPolicy(
            initial=settings.db_poll_initial_seconds,
            maximum=settings.db_poll_max_seconds,
            jitter=False,
            deadline=None,
        )

    @override
    async def aclose(self) -> None:
        await super().aclose()
        await self._engine.dispose()

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
                cause="connection_lost",
            )
        return HisUnavailable(
            f"{op}: database unavailable ({type(err).__name__})",
            operation=op,
            dialect=self.DIALECT,
            cause=_db_cause(err),
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
        sql += _trace_comment()
        statement = text(sql).bindparams(*binds) if binds else text(sql)
        deadline = within_caller(self.settings.read_timeout_seconds)
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
            + _trace_comment()
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

                async def read_response() -> Any:
                    async with self._engine.connect() as conn:
                        return (await conn.execute(poll, {"req_id": req_id})).mappings().first()

                row = await self._poll.retrying(retry_result=_no_row)(read_response)
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
            raise self._refusal(code, str(row["ret_msg"] or ""), op, parameter=_refused(row))
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


def _trace_comment() -> str:
    """The call's W3C trace context as a trailing SQL comment (sqlcommenter's form).

    The HIS database's statement logs keep it; "" outside a trace.

    The value is our own hex and dashes only: nothing from a request reaches the SQL text.
    """
    traceparent = current_traceparent()
    if not traceparent:
        return ""
    return f" /*traceparent='{traceparent}'*/"


def _refused(row: Any) -> str:
    """The parameter a refusal names in its OUT_PARAMS (``ERR_PARAM``), or ""."""
    try:
        out = json.loads(row["out_params"] or "{}")
    except ValueError:
        return ""
    return str(out.get("ERR_PARAM", "")) if isinstance(out, dict) else ""


def _db_cause(err: BaseException) -> str:
    """The ``cause`` of a database HIS failure (see ``CAUSES``), from the error's chain."""
    seen: BaseException | None = err
    text = ""
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "refused"
        if isinstance(seen, OSError) and seen.errno in (
            errno.ENETUNREACH,
            errno.EHOSTUNREACH,
            errno.ENETDOWN,
            errno.EHOSTDOWN,
        ):
            return "unreachable"
        text += f" {seen}"
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__
    lowered = text.lower()
    if "connection refused" in lowered:
        return "refused"
    if "timeout" in lowered or "timed out" in lowered:
        return "connect_timeout"
    if "no route" in lowered or "could not translate host" in lowered:
        return "unreachable"
    return "connection_lost"

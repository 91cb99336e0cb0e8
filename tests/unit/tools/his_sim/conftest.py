"""Fixtures for the HIS simulator tests: running simulators and thin dialect clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from xml.etree.ElementTree import Element

import aiohttp
import defusedxml.ElementTree as SafeET
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tools.his_sim import SOAP_NS, SOAP_PATH, WS_NS, DbHis, RestHis, SoapHis

# Tests book sessions from tomorrow on, which are in the future whatever the wall clock says,
# so the booking and cancelling deadlines never interfere.
TODAY = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()


class RestClient:
    """Calls the REST HIS and unwraps its envelope."""

    def __init__(self, session: aiohttp.ClientSession, his: RestHis) -> None:
        self.session = session
        self.his = his

    async def call(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.request(
            method, self.his.base_url + "/openapi/v3" + path, json=body, params=params
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body = await self.call(method, path, **kwargs)
        assert status == 200, body
        assert body["code"] == 0, body
        return body["data"]


def _xml_to_obj(elem: Element) -> Any:
    children = list(elem)
    if not children:
        return elem.text or ""
    if all(c.tag.rsplit("}", 1)[-1] == "Item" for c in children):
        return [_xml_to_obj(c) for c in children]
    return {c.tag.rsplit("}", 1)[-1]: _xml_to_obj(c) for c in children}


class SoapClient:
    """Calls the SOAP HIS: builds the envelope, returns (ResultCode, ResultMsg, Data)."""

    def __init__(self, session: aiohttp.ClientSession, his: SoapHis) -> None:
        self.session = session
        self.his = his

    @staticmethod
    def envelope(trade_code: str, params: dict[str, Any]) -> bytes:
        parts = []
        for key, value in params.items():
            if isinstance(value, list):
                inner = "".join(f"<CFH>{v}</CFH>" for v in value)
                parts.append(f"<{key}>{inner}</{key}>")
            else:
                parts.append(f"<{key}>{value}</{key}>")
        return (
            f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
            f'<HisCall xmlns="{WS_NS}"><TradeCode>{trade_code}</TradeCode>'
            f"<Request>{''.join(parts)}</Request></HisCall></soap:Body></soap:Envelope>"
        ).encode()

    async def raw(self, data: bytes) -> tuple[int, str]:
        async with self.session.post(
            self.his.base_url + SOAP_PATH,
            data=data,
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": "HisCall"},
        ) as resp:
            return resp.status, await resp.text()

    async def call(self, trade_code: str, params: dict[str, Any]) -> tuple[str, str, Any]:
        status, body = await self.raw(self.envelope(trade_code, params))
        assert status == 200, body
        root = SafeET.fromstring(body)
        response = root.find(f"{{{SOAP_NS}}}Body/{{{WS_NS}}}HisCallResponse/{{{WS_NS}}}Response")
        assert response is not None, body
        data = response.find(f"{{{WS_NS}}}Data")
        return (
            response.findtext(f"{{{WS_NS}}}ResultCode") or "",
            response.findtext(f"{{{WS_NS}}}ResultMsg") or "",
            _xml_to_obj(data) if data is not None else None,
        )

    async def ok(self, trade_code: str, params: dict[str, Any]) -> Any:
        code, msg, data = await self.call(trade_code, params)
        assert code == "0", msg
        return data


class DbClient:
    """Runs the DB HIS's procedures the way an adapter would: insert, then poll."""

    def __init__(self, engine: AsyncEngine, his: DbHis) -> None:
        self.engine = engine
        self.his = his

    def t(self, name: str) -> str:
        return f'"{self.his.table(name)}"'

    async def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(sql), params)).mappings().all()
        return [dict(r) for r in rows]

    async def submit(self, proc: str, params: dict[str, Any] | str) -> str:
        req_id = uuid.uuid4().hex
        raw = params if isinstance(params, str) else json.dumps(params, ensure_ascii=False)
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"INSERT INTO {self.t('T_PROC_REQUEST')} "
                    '("REQ_ID", "PROC_NAME", "IN_PARAMS", "REQ_TIME", "STATUS") '
                    "VALUES (:r, :p, :i, :t, 'N')"
                ),
                {"r": req_id, "p": proc, "i": raw, "t": dt.datetime.now()},
            )
        return req_id

    async def response(self, req_id: str, wait: float = 5.0) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            rows = await self.query(
                f'SELECT * FROM {self.t("T_PROC_RESPONSE")} WHERE "REQ_ID" = :r', r=req_id
            )
            if rows:
                return rows[0]
            if loop.time() > deadline:
                return None
            # Polling is the dialect's protocol: the caller has no other way to be told.
            await asyncio.sleep(0.01)

    async def call(
        self, proc: str, params: dict[str, Any] | str, wait: float = 5.0
    ) -> tuple[str, str, Any]:
        row = await self.response(await self.submit(proc, params), wait)
        assert row is not None, f"no response to {proc}"
        out = json.loads(row["OUT_PARAMS"]) if row["OUT_PARAMS"] else None
        return row["RET_CODE"], row["RET_MSG"], out

    async def ok(self, proc: str, params: dict[str, Any]) -> Any:
        code, msg, out = await self.call(proc, params)
        assert code == "0", msg
        return out


@pytest.fixture
def today() -> dt.date:
    return TODAY


@pytest.fixture
def db_client() -> type[DbClient]:
    return DbClient


@pytest.fixture
def rest_client() -> type[RestClient]:
    return RestClient


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def rest(session: aiohttp.ClientSession) -> AsyncIterator[RestClient]:
    async with RestHis(seed=11, today=TODAY) as his:
        yield RestClient(session, his)


@pytest.fixture
async def soap(session: aiohttp.ClientSession) -> AsyncIterator[SoapClient]:
    async with SoapHis(seed=12, today=TODAY) as his:
        yield SoapClient(session, his)


@pytest.fixture
async def db() -> AsyncIterator[DbClient]:
    async with DbHis(seed=13, today=TODAY, poll_interval=0.005) as his:
        engine = create_async_engine(his.db_url)
        try:
            yield DbClient(engine, his)
        finally:
            await engine.dispose()

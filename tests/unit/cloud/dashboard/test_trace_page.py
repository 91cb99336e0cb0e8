"""The dashboard's trace page over HTTP, its lookup a stand-in (the seam is ours).

The real lookup across two nodes, an edge and an HIS, in Chromium, is
tests/integration/test_trace_page.py.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from cloud.dashboard import COOKIE, Dashboard, Overview
from cloud.traces import FailedCall
from hplus.cloud.v1 import operations_pb2
from mesh import errors
from tests.unit.cloud.traces.test_tree import T0, span

KNOWN = secrets.token_hex(16)
FAILED_ELSEWHERE = secrets.token_hex(16)


class Lookup:
    """Answers KNOWN; NOT_FOUND for others; raises ``broken`` when set."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, bool]] = []
        self.broken: Exception | None = None

    async def lookup(
        self, trace_id: str, *, local_only: bool
    ) -> operations_pb2.LookupTraceResponse:
        self.asked.append((trace_id, local_only))
        if self.broken is not None:
            raise self.broken
        if trace_id != KNOWN:
            raise errors.NotFound(f"no span of trace {trace_id} is known")
        spans = [
            span("a1", "", 0, 9, code=14, message="UNAVAILABLE: <b>down</b>"),
            span("b1", "a1", 1, 7, code=14, node="<i>node-b</i>", name="x/<script>alert(1)"),
        ]
        spans[1].hospital_id = "h-001"
        spans[1].attributes["note"] = "<img src=x onerror=alert(1)>"
        return operations_pb2.LookupTraceResponse(trace_id=trace_id, spans=spans, complete=True)

    async def recent_failures(self, hospital_id: str, *, limit: int = 20) -> list[FailedCall]:
        return [FailedCall(FAILED_ELSEWHERE, "svc/M", "node-a", T0, 14, "UNAVAILABLE")]


async def _no_hospitals() -> dict[str, dict[str, object]]:
    return {"h-001": {}}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[TestClient[object, object], Lookup]]:
    lookup = Lookup()
    overview = Overview(presence=None, readstore=None)
    overview.add_source("test", _no_hospitals, [])
    dashboard = Dashboard(overview, data_dir=tmp_path, traces=lookup)
    async with TestClient(TestServer(dashboard.app())) as http:
        http.session.cookie_jar.update_cookies({COOKIE: dashboard.session_cookie()})
        yield http, lookup


async def test_a_trace_is_shown_escaped_with_its_failing_hop_marked(
    client: tuple[TestClient[object, object], Lookup],
) -> None:
    http, lookup = client
    res = await http.get(f"/trace?id=%20{KNOWN.upper()}%20", allow_redirects=False)
    assert res.status == 303
    assert res.headers["Location"] == f"/trace/{KNOWN}"
    res = await http.get(f"/trace/{KNOWN}")
    assert res.status == 200
    page = await res.text()
    assert lookup.asked == [(KNOWN, False)]
    assert page.count('<tr class="hop') == 2
    assert '<tr class="hop culprit" data-span="b1"' in page
    assert "failed here" in page
    assert 'href="/hospital/h-001"' in page
    for raw in ("<script>alert", "<b>down</b>", "<i>node-b</i>", "<img src=x"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)" in page
    assert 'id="trace-search"' in page

    res = await http.get(f"/api/trace/{KNOWN}")
    data = await res.json()
    assert data["failing_span_id"] == "b1"
    assert [(h["span_id"], h["depth"], h["failed_here"]) for h in data["hops"]] == [
        ("a1", 0, False),
        ("b1", 1, True),
    ]
    assert data["hops"][1]["code"] == "UNAVAILABLE"


async def test_bad_unknown_and_failing_lookups_get_clear_pages(
    client: tuple[TestClient[object, object], Lookup],
) -> None:
    http, lookup = client
    for path in ("/trace?id=12345", "/trace/12345", "/trace/%3Cscript%3E"):
        res = await http.get(path)
        assert res.status == 400, path
        page = await res.text()
        assert "32 hexadecimal digits" in page
        assert "<script>" not in page.split("<body>")[1]
    res = await http.get("/api/trace/12345")
    assert res.status == 400
    assert "x-request-id" in (await res.json())["error"]
    assert lookup.asked == []  # refused before any lookup

    other = secrets.token_hex(16)
    res = await http.get(f"/trace/{other}")
    assert res.status == 404
    assert f"No span of request {other} is known" in await res.text()

    lookup.broken = OSError("database gone")
    res = await http.get(f"/trace/{KNOWN}")
    assert res.status == 503
    assert "The trace lookup failed (OSError)" in await res.text()


async def test_the_hospital_page_links_its_recent_failures_to_their_traces(
    client: tuple[TestClient[object, object], Lookup],
) -> None:
    http, _ = client
    res = await http.get("/hospital/h-001")
    page = await res.text()
    assert f'<a href="/trace/{FAILED_ELSEWHERE}">' in page


async def test_without_a_span_store_the_page_says_so(tmp_path: Path) -> None:
    dashboard = Dashboard(Overview(presence=None, readstore=None), data_dir=tmp_path)
    async with TestClient(TestServer(dashboard.app())) as http:
        http.session.cookie_jar.update_cookies({COOKIE: dashboard.session_cookie()})
        res = await http.get(f"/trace/{KNOWN}")
        assert res.status == 503
        assert "keeps no spans" in await res.text()
    async with TestClient(TestServer(dashboard.app())) as anonymous:
        res = await anonymous.get(f"/api/trace/{KNOWN}")
        assert res.status == 401

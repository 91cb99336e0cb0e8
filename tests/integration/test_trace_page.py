"""The dashboard's trace page: a request id an app received, traced end to end, in Chromium.

Two nodes share presence in the real Redis; the hospital's edge holds its tunnel on node B
only. An app signs in on node A's public endpoint and binds a patient: A asks the hospital
through the router, which forwards to B, through the tunnel to the edge, its servicer and
adapter, to the HIS simulator. The ``x-request-id`` the app got back is pasted into A's
dashboard search box (Debian's Chromium driven by Playwright), and the page must show every
hop — node A, node B, the edge, the HIS call. With the HIS failing, the failing hop is
marked, and the hospital's page links the failed call to its trace. Screenshots go to the
test's directory, like the other dashboard tests'.
"""

from __future__ import annotations

import json
import os
import ssl
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from cloud.edgeconfig import EdgeApiConfig
from frontend_server.uplink import UplinkConfig
from hplus.cloud.v1 import account_pb2, account_pb2_grpc, patient_pb2
from mesh.observability import REQUEST_ID_KEY
from tests.integration.test_accounts import App, connect
from tests.integration.test_dashboard import CHROMIUM, _playwright_available
from tests.integration.test_tracing import Cluster, cluster
from tools.his_sim import Outage


def _identity(patient: Any) -> patient_pb2.PatientIdentity:
    return patient_pb2.PatientIdentity(
        name=patient.name,
        id_card_type=patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
        id_card_number=patient.id_number,
    )


async def _bind(stub: Any, app: App, hospital_id: str, patient: Any) -> tuple[str, Any]:
    """Bind a patient as an app does; (the x-request-id the app got back, the error or None)."""
    call = stub.BindPatient(
        account_pb2.BindPatientRequest(
            request_id=str(uuid.uuid4()), hospital_id=hospital_id, patient=_identity(patient)
        ),
        metadata=app.md(),
        timeout=20,
    )
    failure = None
    try:
        await call
    except grpc.aio.AioRpcError as err:
        failure = err
    request_id = dict(await call.initial_metadata()).get(REQUEST_ID_KEY, "")
    assert isinstance(request_id, str)
    return request_id, failure


async def _app_calls(c: Cluster) -> tuple[str, str]:
    """A successful and a failing call of an app on node A: their request ids."""
    residents = [p for p in c.his.core.patients.values() if p.id_type == "RESIDENT"]
    channel, key = await connect(c.a)
    async with channel:
        app = App(c.a, channel, key)
        await app.sign_in("+8613800138000")
        stub = account_pb2_grpc.AccountServiceStub(channel)
        ok_id, failure = await _bind(stub, app, c.hospital_id, residents[0])
        assert failure is None, failure
        await c.his.inject(Outage(mode="503"))
        bad_id, failure = await _bind(stub, app, c.hospital_id, residents[1])
        assert failure is not None
        assert failure.code() is grpc.StatusCode.UNAVAILABLE, failure
        await c.his.clear_faults()
    assert len(ok_id) == 32
    assert len(bad_id) == 32
    assert ok_id != bad_id
    await c.flush()
    return ok_id, bad_id


def _browser() -> str:
    if CHROMIUM is None or not _playwright_available():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install chromium and playwright")
        pytest.skip("Chromium or Playwright is not installed (CI installs both)")
    return CHROMIUM


@pytest.mark.slow
async def test_a_request_id_from_an_app_is_traced_across_two_nodes_in_the_browser(
    tmp_path: Path, redis_url: str
) -> None:
    chromium = _browser()
    from playwright.async_api import async_playwright, expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with cluster(
        tmp_path,
        redis_url,
        "rest",
        a_config={
            "dashboard_listen": "127.0.0.1:0",
            "dashboard_refresh_seconds": 0.5,
            # The successful call's spans are kept (failed calls' always are).
            "observability": {"span_sample_rate": 1.0},
        },
    ) as c:
        ok_id, bad_id = await _app_calls(c)
        dashboard = c.a.dashboard
        assert dashboard is not None
        assert c.a.tls is not None
        url = f"https://localhost:{dashboard.port}"
        password = dashboard.password_file.read_text().strip()

        # The JSON form, over TLS checked against the node's CA: every hop of the call.
        tls = ssl.create_default_context(cafile=str(c.a.tls.ca_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            async with http.get(f"{url}/api/trace/{ok_id}") as res:
                assert res.status == 401  # behind the login like every page
            async with http.post(f"{url}/login", data={"password": password}) as res:
                assert res.status == 200
            async with http.get(f"{url}/api/trace/{ok_id}") as res:
                assert res.status == 200, await res.text()
                trace = await res.json()
            async with http.get(f"{url}/api/trace/{bad_id}") as res:
                failed = await res.json()
            async with http.get(f"{url}/api/trace/nope") as res:
                assert res.status == 400
                assert "32 hexadecimal digits" in (await res.json())["error"]
            async with http.get(f"{url}/api/trace/{uuid.uuid4().hex}") as res:
                assert res.status == 404
        where = {(h["tier"], h["node"]) for h in trace["hops"]}
        assert {("cloud", "node-a"), ("cloud", "node-b"), ("edge", "edge-test")} <= where
        assert any(h["tier"] == "his" for h in trace["hops"]), json.dumps(trace, indent=1)
        assert trace["complete"], trace
        assert trace["failing_span_id"] == ""
        # Depth first: the HIS call sits below the edge, below B, below A's entry.
        depth = {h["node"]: h["depth"] for h in reversed(trace["hops"])}
        assert depth["node-a"] < depth["node-b"] < depth["edge-test"]

        culprit = [h for h in failed["hops"] if h["failed_here"]]
        assert len(culprit) == 1
        assert culprit[0]["tier"] == "his"
        assert culprit[0]["span_id"] == failed["failing_span_id"]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                # The node's certificate is from its development CA, unknown to this profile
                # (the JSON requests above check it against the CA).
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                dialogs: list[str] = []
                page.on("dialog", lambda d: dialogs.append(d.message))
                await page.goto(url + "/")
                await page.fill("#password", password)
                await page.click("#sign-in")
                await expect(page.locator(f'tr[data-hospital="{c.hospital_id}"]')).to_have_class(
                    "state-up"
                )

                # The id as the app got it, pasted into the search box of the overview.
                await page.fill("#trace-search", f"  {ok_id.upper()} ")
                await page.click("#trace-go")
                await expect(page).to_have_url(f"{url}/trace/{ok_id}")
                hops = page.locator("#trace tr.hop")
                await expect(hops).to_have_count(len(trace["hops"]))
                for node in ("node-a", "node-b", "edge-test"):
                    await expect(
                        page.locator(f'#trace tr[data-node="{node}"]').first
                    ).to_be_visible()
                await expect(page.locator('#trace tr[data-tier="his"]').first).to_be_visible()
                await expect(page.locator("#trace-ok")).to_be_visible()
                await expect(page.locator("#trace tr.culprit")).to_have_count(0)
                await page.screenshot(
                    path=str(shots / "1-trace-of-an-app-call.png"), full_page=True
                )

                # The failing call: its hospital's page lists it; the link opens its trace
                # with the HIS hop marked.
                await page.goto(f"{url}/hospital/{c.hospital_id}")
                link = page.locator(f'#failures a[href="/trace/{bad_id}"]').first
                await expect(link).to_be_visible()
                await page.screenshot(
                    path=str(shots / "2-hospital-recent-failures.png"), full_page=True
                )
                await link.click()
                await expect(page).to_have_url(f"{url}/trace/{bad_id}")
                marked = page.locator("#trace tr.culprit")
                await expect(marked).to_have_count(1)
                await expect(marked).to_have_attribute("data-tier", "his")
                await expect(marked.locator(".failed-here")).to_be_visible()
                await expect(page.locator("#trace-failed")).to_contain_text("UNAVAILABLE")
                await expect(page.locator("#trace-failed")).to_contain_text("edge-test")
                await page.screenshot(path=str(shots / "3-failing-hop-marked.png"), full_page=True)

                # A malformed id names the expected format; an unknown one says so; markup
                # in the id is shown as text, never run.
                await page.fill("#trace-search", "not-a-request-id")
                await page.click("#trace-go")
                await expect(page.locator("#trace-error")).to_contain_text("32 hexadecimal digits")
                await page.screenshot(path=str(shots / "4-bad-request-id.png"), full_page=True)
                unknown = uuid.uuid4().hex
                await page.fill("#trace-search", unknown)
                await page.click("#trace-go")
                await expect(page.locator("#trace-error")).to_contain_text(
                    f"No span of request {unknown} is known"
                )
                await page.goto(url + "/trace/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
                await expect(page.locator("#trace-id")).to_have_text("<script>alert(1)</script>")
                await expect(page.locator("#trace-error")).to_be_visible()
                assert dialogs == []
            finally:
                await browser.close()
    assert len(list(shots.iterdir())) == 4


@pytest.mark.slow
async def test_an_his_stopped_then_an_edge_stopped_on_a_two_node_cluster_in_the_browser(
    tmp_path: Path, redis_url: str
) -> None:
    chromium = _browser()
    from playwright.async_api import async_playwright, expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with cluster(
        tmp_path,
        redis_url,
        "rest",
        a_config={"dashboard_listen": "127.0.0.1:0", "dashboard_refresh_seconds": 0.5},
        # The edge (its tunnel on B) checks its HIS every second (the least it accepts),
        # before and after B answers its first report with B's interval.
        b_config={"edge_api": EdgeApiConfig(report_interval=1.0)},
        edge={"uplink": UplinkConfig(report_interval=1.0)},
    ) as c:
        dashboard = c.a.dashboard
        assert dashboard is not None
        url = f"https://localhost:{dashboard.port}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                await page.goto(url + "/")
                await page.fill("#password", dashboard.password_file.read_text().strip())
                await page.click("#sign-in")
                row = page.locator(f'tr[data-hospital="{c.hospital_id}"]')
                await expect(row).to_have_class("state-up", timeout=15_000)
                await expect(row).to_contain_text("OK")  # the edge's health report arrived
                await page.screenshot(path=str(shots / "1-up.png"), full_page=True)

                # The HIS stops (its socket closed); the edge stays up and connected: the
                # hospital turns degraded, the alert naming why, without reloading the page.
                await c.his.inject(Outage(mode="refuse"))
                await expect(row).to_have_class("state-degraded", timeout=15_000)
                await expect(row.locator("td.state")).to_have_text("degraded")
                await expect(row).to_contain_text("HIS_UNREACHABLE")
                await expect(page.locator("#summary")).to_have_text("0 of 1 hospitals up")
                await page.screenshot(path=str(shots / "2-his-stopped.png"), full_page=True)
                await page.click(f'a[href="/hospital/{c.hospital_id}"]')
                await expect(page.locator("#hospital td.state")).to_have_text("degraded")
                await expect(page.locator("#hospital")).to_contain_text("HIS_UNREACHABLE")
                await page.screenshot(
                    path=str(shots / "3-his-stopped-hospital.png"), full_page=True
                )

                # Then its edge stops (its tunnel was on B; this is A's dashboard): red.
                await page.goto(url + "/")
                await c.app.shutdown()
                await expect(row).to_have_class("state-down", timeout=15_000)
                await expect(row.locator("td.state")).to_have_text("down")
                await page.screenshot(path=str(shots / "4-edge-stopped.png"), full_page=True)
            finally:
                await browser.close()
    assert len(list(shots.iterdir())) == 4

"""The operators' dashboard: sign-in, the overview, live refresh — over TLS, and in Chromium.

A real node serves the dashboard over HTTPS with its development certificate; hospitals are
real admin-only edges holding real tunnels. The browser test drives Debian's Chromium with
Playwright: it signs in, sees the hospital up, stops its edge and sees the row turn red
within the refresh interval. Screenshots go to the test's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cloud.config import NodeConfig
from cloud.dashboard import COOKIE
from cloud.node import CloudNode
from frontend_server.app import EdgeApp, EdgeConfig
from frontend_server.dialer import DialerConfig
from tests.integration.hospital_env import FAST

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.asynccontextmanager
async def node_with_dashboard(tmp_path: Path) -> AsyncIterator[CloudNode]:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        dashboard_listen="127.0.0.1:0",
        dashboard_refresh_seconds=0.5,
        data_dir=tmp_path / "cloud",
        node_id="n1",
        grace_seconds=1.0,
    )
    async with CloudNode(config, tunnel_config=FAST) as node:
        yield node


@contextlib.asynccontextmanager
async def edge(node: CloudNode, hospital_id: str) -> AsyncIterator[EdgeApp]:
    assert node.credentials is not None
    assert node.tls is not None
    token = (await node.credentials.issue(hospital_id)).token
    app = EdgeApp(
        EdgeConfig(
            profile=None,
            hospital_id=hospital_id,
            dialer=DialerConfig(
                gateways=(f"localhost:{node.port}",),
                hospital_id=hospital_id,
                edge_id=f"edge-{hospital_id}",
                credential=token,
                ca_cert=node.tls.ca_cert.read_bytes(),
                tunnel=FAST,
            ),
        )
    )
    async with app:
        assert app.dialer is not None
        await asyncio.wait_for(app.dialer.connected.wait(), 20)
        yield app


def client_ssl(node: CloudNode) -> ssl.SSLContext:
    assert node.tls is not None
    return ssl.create_default_context(cafile=str(node.tls.ca_cert))


def base_url(node: CloudNode) -> str:
    assert node.dashboard is not None
    return f"https://localhost:{node.dashboard.port}"


async def test_sign_in_then_the_overview_shows_who_is_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cloud.dashboard")
    async with node_with_dashboard(tmp_path) as node, edge(node, "h-001"):
        assert node.dashboard is not None
        password_file = node.dashboard.password_file
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = password_file.read_text().strip()
        url = base_url(node)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(node))
        ) as http:
            async with http.get(f"{url}/", allow_redirects=False) as res:
                assert res.status == 303
                assert res.headers["Location"] == "/login"
            async with http.get(f"{url}/api/overview") as res:
                assert res.status == 401
            async with http.post(f"{url}/login", data={"password": "guess"}) as res:
                assert res.status == 401
                assert "Wrong password" in await res.text()
            assert any("failed sign-in" in r.getMessage() for r in caplog.records)
            async with http.post(
                f"{url}/login", data={"password": password}, allow_redirects=False
            ) as res:
                assert res.status == 303
                morsel = res.cookies[COOKIE]
                assert morsel["httponly"]
                assert morsel["secure"]
                assert morsel["samesite"] == "Strict"
            async with http.get(f"{url}/api/overview") as res:
                assert res.status == 200
                data = await res.json()
            rows = {r["hospital_id"]: r for r in data["rows"]}
            assert rows["h-001"]["state"] == "up"
            assert rows["h-001"]["tunnels"] == 1
            assert data["up"] == 1
            async with http.get(f"{url}/") as res:
                page = await res.text()
            assert 'data-hospital="h-001"' in page
            assert 'class="state-up"' in page
            async with http.get(f"{url}/hospital/h-001") as res:
                assert res.status == 200
                assert "edge version" in await res.text()
            async with http.get(f"{url}/hospital/%3Cscript%3E") as res:
                assert res.status == 404
                assert "<script>" not in await res.text()

        # A forged or altered session is refused.
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl(node)),
                cookies={COOKIE: node.dashboard.session_cookie()[:-2] + "AA"},
            ) as forged,
            forged.get(f"{url}/api/overview") as res,
        ):
            assert res.status == 401


async def test_sign_in_attempts_are_rate_limited_per_address(tmp_path: Path) -> None:
    async with node_with_dashboard(tmp_path) as node:
        url = base_url(node)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(node))
        ) as http:
            # A body past the bound is refused before it is read (and counts as an attempt).
            async with http.post(f"{url}/login", data={"password": "x" * 20_000}) as res:
                assert res.status == 413
            codes = []
            for _ in range(11):
                async with http.post(f"{url}/login", data={"password": "x"}) as res:
                    codes.append(res.status)
            assert codes == [401] * 9 + [429, 429]


@pytest.mark.slow
async def test_the_dashboard_in_a_real_browser_turns_a_stopped_edge_red(tmp_path: Path) -> None:
    if CHROMIUM is None or not _playwright_available():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: install chromium and playwright")
        pytest.skip("Chromium or Playwright is not installed (CI installs both)")
    from playwright.async_api import async_playwright, expect

    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with node_with_dashboard(tmp_path) as node, edge(node, "h-002"):
        assert node.dashboard is not None
        password = node.dashboard.password_file.read_text().strip()
        stopping = edge(node, "h-001")
        first = await stopping.__aenter__()
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                # The node's certificate is from its development CA, which this browser
                # profile does not know; the API test above checks it against the CA.
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                await page.goto(base_url(node) + "/")
                await expect(page.locator("#sign-in")).to_be_visible()
                await page.fill("#password", password)
                await page.click("#sign-in")
                row = page.locator('tr[data-hospital="h-001"]')
                await expect(row).to_have_class("state-up")
                await expect(page.locator('tr[data-hospital="h-002"]')).to_have_class("state-up")
                await page.screenshot(path=str(shots / "1-all-up.png"), full_page=True)

                await first.shutdown()
                await stopping.__aexit__(None, None, None)
                # Within the refresh interval (0.5 s here) plus the presence update.
                await expect(row).to_have_class("state-down", timeout=10_000)
                await expect(row.locator("td.state")).to_have_text("down")
                await expect(page.locator("#summary")).to_have_text("1 of 2 hospitals up")
                await page.screenshot(path=str(shots / "2-h-001-down.png"), full_page=True)

                await page.click('a[href="/hospital/h-002"]')
                await expect(page.locator("#hospital td.state")).to_have_text("up")
                await page.screenshot(path=str(shots / "3-hospital-page.png"), full_page=True)
            finally:
                await browser.close()
    assert len(list(shots.iterdir())) == 3


def _playwright_available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True

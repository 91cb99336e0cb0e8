"""Error attribution end to end (issue 13, item 3).

The quick fault set (``python -m bench.attribution --quick``) injects every kind of fault
once per set into a real node, three edges and their simulators, and must attribute at
least 95 % of them to their known owners, every owner appearing. Then one hospital: its
failed calls are recorded on the node (served calls and the node's calls to the edge, not
the calls that succeed), ``hplus cloud errors`` groups them in its own process, and the
dashboard shows the "errors by owner" column on the overview and the hospital page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from bench.attribution import OWNERS
from bench.attribution._run import _main
from cloud.config import NodeConfig
from cloud.dashboard import COOKIE
from cloud.node import CloudNode
from frontend_server.app import EdgeApp
from frontend_server.profile import load_profile
from hplus.cloud.v1 import account_pb2, account_pb2_grpc
from hplus.hospital.v1 import common_pb2, patient_pb2, patient_pb2_grpc
from tests.integration.hospital_env import FAST, edge_config, his_url, simulator, write_profile
from tools.his_sim import Latency, Outage

REPO = Path(__file__).resolve().parents[2]


async def test_the_quick_fault_set_is_attributed_to_the_known_owners(
    redis_url: str, postgres_url: str
) -> None:
    report = await _main(seed=1, per_kind=1, redis_url=redis_url, postgres_url=postgres_url)
    assert {o.case.owner for o in report.all} == set(OWNERS)
    assert set(report.outcomes) == {"tuning", "held-out"}
    assert report.accuracy(report.all) >= 0.95, "\n".join(report.lines())


@contextlib.asynccontextmanager
async def hospital_with_dashboard(
    tmp_path: Path,
) -> AsyncIterator[tuple[CloudNode, EdgeApp, object]]:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        dashboard_listen="127.0.0.1:0",
        data_dir=tmp_path / "cloud",
        node_id="n1",
        grace_seconds=1.0,
    )
    async with simulator("rest") as his, CloudNode(config, tunnel_config=FAST) as node:
        profile = load_profile(write_profile(tmp_path, "rest", his_url(his)))
        assert node.credentials is not None
        token = (await node.credentials.issue(profile.hospital_id)).token
        app = EdgeApp(edge_config(node, profile, token, tmp_path / "edge", his))
        async with app:
            assert app.dialer is not None
            await asyncio.wait_for(app.dialer.connected.wait(), 10)
            yield node, app, his


async def cli(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "cloud",
        "errors",
        "--data-dir",
        str(tmp_path / "cloud"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'gen'}{os.pathsep}{REPO}"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_failed_calls_are_recorded_grouped_by_the_cli_and_shown_on_the_dashboard(
    tmp_path: Path,
) -> None:
    async with hospital_with_dashboard(tmp_path) as (node, app, his):
        assert node.router is not None
        assert node.failures is not None
        assert node.tls is not None
        hospital = app.config.profile.hospital_id if app.config.profile else ""
        store = node.failures.store
        edge = patient_pb2_grpc.PatientServiceStub(await node.router.channel_for(hospital))
        find = patient_pb2.FindPatientRequest(
            id_card_type=common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
            id_card_number="110101199003074514",
        )
        # A call that succeeds records nothing.
        await edge.FindPatient(find, timeout=10)
        await node.failures.flush()
        assert await store.rows(since=0) == []

        # The node's call to the edge fails because the HIS answers 503: the HIS vendor's.
        await his.inject(Outage(mode="503"))
        with pytest.raises(grpc.aio.AioRpcError):
            await edge.FindPatient(find, timeout=10)
        await his.clear_faults()
        # A served call with an app key nobody issued: the app's.
        creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{node.port}", creds) as channel:
            stub = account_pb2_grpc.AccountServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetAccount(
                    account_pb2.GetAccountRequest(),
                    metadata=(("x-hplus-app-key", "ak-nobody"),),
                    timeout=10,
                )
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        await node.failures.flush()
        rows = await store.rows(since=0)
        assert sorted((r.side, r.owner, r.reason) for r in rows) == [
            ("api", "app", "BAD_CREDENTIAL"),
            ("hospital", "his_vendor", "HIS_ERROR"),
        ]
        his_row = next(r for r in rows if r.owner == "his_vendor")
        assert (his_row.hospital_id, his_row.vendor, his_row.cause) == (
            hospital,
            "rest",
            "vendor_outage",
        )
        assert his_row.method == "/hplus.hospital.v1.PatientService/FindPatient"
        assert len(his_row.request_id) == 32

        # hplus cloud errors, in its own process, reading the fleet database.
        code, out, err = await cli(tmp_path, "--since", "1h", "--format", "json")
        assert code == 0, err
        data = json.loads(out)
        assert (data["total"], data["calls"]) == (2, 2)
        assert data["by_owner"] == {"app": 1, "his_vendor": 1}
        groups = {(g["owner"], g["hospital_id"]): g for g in data["groups"]}
        assert groups[("his_vendor", hospital)]["reasons"] == {"HIS_ERROR": 1}
        code, out, err = await cli(tmp_path, "--owner", "his_vendor", "--rows")
        assert code == 0, err
        assert "1 failed requests (1 failed calls, the node's calls to edges included)" in out
        assert f"his_vendor        {hospital:<16}      1  rest       HIS_ERROR 1" in out
        assert his_row.request_id in out
        assert "BAD_CREDENTIAL" not in out
        code, out, err = await cli(tmp_path, "--since", "yesterday")
        assert code != 0
        assert "--since: expected a positive N followed by s, m, h or d" in err
        assert "Traceback" not in err

        # The dashboard: the overview's column and the hospital page.
        assert node.dashboard is not None
        password = node.dashboard.password_file.read_text().strip()
        url = f"https://localhost:{node.dashboard.port}"
        ssl_context = ssl.create_default_context(cafile=str(node.tls.ca_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context)) as http:
            async with http.post(
                f"{url}/login", data={"password": password}, allow_redirects=False
            ) as res:
                assert res.status == 303
                assert COOKIE in res.cookies
            async with http.get(f"{url}/api/overview") as res:
                overview = await res.json()
            assert "errors_by_owner" in overview["columns"]
            row = next(r for r in overview["rows"] if r["hospital_id"] == hospital)
            assert row["extra"]["errors_by_owner"] == "his_vendor 1"
            async with http.get(f"{url}/hospital/{hospital}") as res:
                page = await res.text()
            assert "errors by owner (1 h)" in page
            assert "his_vendor 1" in page


async def test_a_his_slower_than_the_nodes_deadline_is_the_his_not_the_tunnel(
    tmp_path: Path,
) -> None:
    # The profile gives the HIS 5 s; the node's call gives the edge 2 s. The edge ends its
    # HIS call before the node's deadline, so the node hears HIS_TIMEOUT (the HIS's)
    # rather than a DEADLINE_EXCEEDED it could not tell from a tunnel that lost the answer.
    async with hospital_with_dashboard(tmp_path) as (node, app, his):
        assert node.router is not None
        assert node.failures is not None
        hospital = app.config.profile.hospital_id if app.config.profile else ""
        edge = patient_pb2_grpc.PatientServiceStub(await node.router.channel_for(hospital))
        find = patient_pb2.FindPatientRequest(
            id_card_type=common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
            id_card_number="110101199003074514",
        )
        await his.inject(Latency(seconds=4.0))
        with pytest.raises(grpc.aio.AioRpcError) as slow:
            await edge.FindPatient(find, timeout=2.0)
        await his.clear_faults()
        assert slow.value.code() is grpc.StatusCode.UNAVAILABLE
        await node.failures.flush()
        [recorded] = await node.failures.store.rows(since=0)
        assert (recorded.owner, recorded.reason, recorded.cause, recorded.vendor) == (
            "his_vendor",
            "HIS_SLOW",
            "read_timeout",
            "rest",
        )

"""A real edge upgrades under its supervisor, and returns by itself from a bad version.

``hplus edge run --supervise`` runs a real edge (tunnel to a real node, a simulated HIS);
``hplus edge install`` verifies a signed package of hplus itself (built here from this
repository's files as a wheel), installs it into the idle slot and asks the supervisor to
switch. The good version passes its health gate (tunnel up, every component serving) and is
committed: the node sees the new software version. A version that never reports healthy is
rolled back after its gate, and the node sees the previous version again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from frontend_server.profile import load_profile
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc
from mesh.packages import (
    build_package,
    certify_signing_key,
    generate_key,
    public_pem,
    sign_package,
)
from tests.integration.hospital_env import REPO, cloud_node, his_url, simulator, write_profile
from tests.support.waiting import until
from tests.support.wheels import wheel

_TREES = ("mesh", "cloud", "frontend_server", "compat", "tools")
_NEVER_HEALTHY = (
    "    report_healthy(SOFTWARE_VERSION)\n",
    "    return  # this build never reports healthy\n",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return env


def hplus_wheel(version: str, *, edit: tuple[str, str] | None = None) -> bytes:
    """A wheel of this repository's hplus, as `pip wheel` lays it out, at ``version``."""
    files: dict[str, bytes] = {}
    tracked = subprocess.run(
        ["git", "ls-files", "--", *_TREES, "gen/hplus"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for rel in tracked:
        if "/testdata/" in rel:
            continue
        files[rel.removeprefix("gen/")] = (REPO / rel).read_bytes()
    if edit is not None:
        source = files["tools/cli/_edge.py"].decode()
        assert edit[0] in source, "the edit no longer applies"
        files["tools/cli/_edge.py"] = source.replace(edit[0], edit[1]).encode()
    return wheel("hplus", version, files)[1]


async def _cli(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", *argv, cwd=REPO, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _state(data: Path) -> dict[str, object]:
    try:
        state = json.loads((data / "slots" / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_real_edge_upgrades_and_rolls_back_a_version_that_fails_its_gate(
    tmp_path: Path,
) -> None:
    root, signing = generate_key(), generate_key()
    cert = certify_signing_key(root, signing.public_key(), valid_for=dt.timedelta(days=1))
    root_pub = tmp_path / "root.pub"
    root_pub.write_bytes(public_pem(root.public_key()))

    def package(version: str, wheel: bytes) -> Path:
        unsigned = build_package(
            {f"hplus-{version}-py3-none-any.whl": wheel},
            version=version, contract_release="1.2.0", profile_schema_version=1,
        )  # fmt: skip
        path = tmp_path / f"edge-{version}.hpkg"
        path.write_bytes(sign_package(unsigned, signing, cert))
        return path

    good = package("50.0.0", hplus_wheel("50.0.0"))
    bad = package("51.0.0", hplus_wheel("51.0.0", edit=_NEVER_HEALTHY))
    data = tmp_path / "edge"

    async with simulator("db") as his, cloud_node(tmp_path / "cloud") as node:
        assert node.credentials is not None
        assert node.tls is not None
        assert node.router is not None
        router = node.router
        profile = write_profile(tmp_path, "db", his_url(his))
        hospital_id = load_profile(profile).hospital_id
        credential = tmp_path / "credential"
        credential.write_text((await node.credentials.issue(hospital_id)).token)

        async def version() -> str | None:
            try:
                channel = await router.channel_for(hospital_id)
                info = await admin_pb2_grpc.EdgeAdminServiceStub(channel).GetEdgeInfo(
                    admin_pb2.GetEdgeInfoRequest(), timeout=5
                )
            except Exception:
                return None
            return info.software_version

        async def runs(expected: str) -> bool:
            return await version() == expected

        supervisor = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "edge", "run", "--supervise",
            "--cloud", f"localhost:{node.port}", "--ca", str(node.tls.ca_cert),
            "--credential", str(credential), "--profile", str(profile),
            "--data-dir", str(data), "--edge-id", "edge-upgrade",
            cwd=REPO, env=_env(),
        )  # fmt: skip
        try:
            await until(lambda: _state(data).get("active") == "base", 120)
            seen: list[str] = []

            async def answers() -> bool:
                found = await version()
                if found is not None:
                    seen.append(found)
                return found is not None

            await until(answers, 120)
            base = seen[-1]
            assert base != "50.0.0"

            code, out, err = await _cli(
                "edge", "install", str(good), "--root", str(root_pub), "--data-dir", str(data)
            )
            assert code == 0, err
            assert "installed into slot a" in out
            assert "asked the supervisor" in out
            await until(lambda: _state(data).get("active") == "a", 180)
            await until(lambda: runs("50.0.0"), 120)

            # A package no newer than the running version is a rollback attack: refused.
            code, _, err = await _cli(
                "edge", "install", str(good), "--root", str(root_pub), "--data-dir", str(data)
            )
            assert code == 1
            assert "[ROLLBACK]" in err

            code, out, err = await _cli(
                "edge", "install", str(bad), "--root", str(root_pub), "--data-dir", str(data),
                "--health-gate", "8",
            )  # fmt: skip
            assert code == 0, err

            def rolled_back() -> bool:
                history = _state(data).get("history") or []
                assert isinstance(history, list)
                return any(
                    e.get("event") == "rolled_back" and e.get("version") == "51.0.0"
                    for e in history
                )

            await until(rolled_back, 180)
            assert _state(data).get("active") == "a"
            await until(lambda: runs("50.0.0"), 120)
            history = _state(data)["history"]
            assert isinstance(history, list)
            events = [e["event"] for e in history]
            assert events[-3:] == ["installed", "switch_requested", "rolled_back"]
            backups = sorted((data / "backups").iterdir())
            assert len(backups) == 2
            assert (backups[0] / "ledger.db").exists()
        finally:
            if supervisor.returncode is None:
                supervisor.send_signal(signal.SIGTERM)
                async with asyncio.timeout(60):
                    code = await supervisor.wait()
                assert code == 0

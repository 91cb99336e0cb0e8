"""``hplus fleet config`` end to end: the CLI in its own process, a real node and a real edge.

The node and the edge (REST HIS simulator) run in this event loop; the CLI reaches the edge
through the node's internal endpoint and the tunnel, as an operator does.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from hplus.hospital.v1 import admin_pb2, directory_pb2
from tests.integration.hospital_env import Env, hospital, write_profile
from tools.cli._base import EXIT_BAD_INPUT, EXIT_FAILED

REPO = Path(__file__).resolve().parents[2]


async def fleet(env: Env, tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.cli",
        "fleet",
        "config",
        *argv,
        "--data-dir",
        str(tmp_path / "cloud"),
        "--node",
        f"127.0.0.1:{env.node.internal_port}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'gen'}{os.pathsep}{REPO}"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def profile_file(tmp_path: Path, name: str, url: str, extra: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return write_profile(directory, "rest", url, extra=extra)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_diff_apply_history_rollback_through_the_tunnel(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        h = env.hospital_id
        start = env.app.hospital.profile
        cutoff = start.appointment.cancel_cutoff_minutes
        url = env.his.base_url
        new = profile_file(
            tmp_path,
            "new",
            url,
            f'[appointment]\ncancel_cutoff_minutes = {cutoff + 15}\n\n[his.rest]\ntoken = "secret://his-token-2"\n',
        )

        bad = profile_file(tmp_path, "bad", url, "[his.limits]\nburst = -1\n")
        # The commands that change nothing run side by side (each CLI start is slow on a
        # loaded machine).
        diffed, as_json, unconfirmed, refused = await asyncio.gather(
            fleet(env, tmp_path, "diff", h, "--to", str(new)),
            fleet(env, tmp_path, "diff", h, "--to", str(new), "--format", "json"),
            fleet(env, tmp_path, "apply", h, str(new)),
            fleet(env, tmp_path, "apply", h, str(bad), "--yes"),
        )

        # diff: every changed parameter, risk first; the secret as its reference.
        code, out, err = diffed
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == "2 parameter change(s): 1 high, 1 medium"
        assert (
            'HIGH    changed his.rest.token: "secret://his-token" -> "secret://his-token-2"  '
            "(HIS credential)" in lines
        )
        assert (
            f"MEDIUM  changed appointment.cancel_cutoff_minutes: {cutoff} -> {cutoff + 15}  "
            "(appointment rule)" in lines
        )
        code, out, err = as_json
        assert code == 0, err
        assert {c["path"] for c in json.loads(out)} == {
            "his.rest.token",
            "appointment.cancel_cutoff_minutes",
        }

        # apply without --yes and without a terminal: refused, nothing changed.
        code, out, err = unconfirmed
        assert code == EXIT_BAD_INPUT
        assert err.startswith("hplus: error: not applied: stdin is not a terminal"), err
        assert "2 parameter change(s)" in out
        assert env.app.hospital.profile.digest == start.digest

        # A file that does not load: the file, the line, the parameter; nothing sent.
        code, out, err = refused
        assert code == EXIT_BAD_INPUT
        assert err.startswith(f"hplus: error: {bad}:"), err
        assert "his.limits.burst" in err
        assert len(err.splitlines()) == 1

        code, out, err = await fleet(env, tmp_path, "apply", h, str(new), "--yes")
        assert code == 0, err
        assert f"{h}: revision 2 active" in out
        assert env.app.hospital.profile.appointment.cancel_cutoff_minutes == cutoff + 15
        await env.directory.ListDepartments(directory_pb2.ListDepartmentsRequest(), timeout=10)

        # An endpoint the HIS is not at: the edge rolls back and says so.
        broken = profile_file(tmp_path, "broken", closed_port_url(), "")
        code, out, err = await fleet(env, tmp_path, "apply", h, str(broken), "--yes")
        assert code == EXIT_FAILED
        assert "FAILED_PRECONDITION" in err
        assert "reason: CONFIG_ROLLED_BACK (hospital.hplus)" in err
        assert env.app.hospital.profile.appointment.cancel_cutoff_minutes == cutoff + 15

        code, out, err = await fleet(env, tmp_path, "history", h)
        assert code == 0, err
        rows = out.splitlines()
        assert rows[1].startswith("    3")
        assert "ROLLED BACK: his-adapter" in rows[1]
        assert rows[2].startswith("*   2")
        assert " apply " in rows[2]
        assert rows[3].startswith("    1")
        assert " start " in rows[3]

        code, out, err = await fleet(env, tmp_path, "rollback", h, "--yes")
        assert code == 0, err
        assert "roll back" in out
        assert "to revision 1" in out
        assert f"{h}: revision 4 active" in out
        assert env.app.hospital.profile.digest == start.digest

        code, out, err = await fleet(env, tmp_path, "history", h, "--format", "json")
        assert code == 0, err
        history = json.loads(out)
        newest = history["revisions"][0]
        assert newest["source"] == "rollback"
        assert newest["restored_revision"] == 1
        assert newest["active"]
        assert "@" in newest["requested_by"]

        info = await env.admin.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=10)
        assert info.config.revision == 4

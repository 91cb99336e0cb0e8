"""The CLI as an operator uses it: a node, a credential, an edge, and `hplus cloud tunnels`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh.version import CONTRACT_RELEASE

REPO = Path(__file__).resolve().parents[2]
HPLUS = [sys.executable, "-m", "tools.cli"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    e["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return e


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HPLUS, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env(),
        timeout=60,
        check=False,
    )


@pytest.fixture
def node(tmp_path: Path):
    proc = subprocess.Popen(
        [
            *HPLUS,
            "cloud",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path),
            "--node-id",
            "n1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env(),
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    public = re.search(r"listening on 127\.0\.0\.1:(\d+)", lines[0])
    internal = re.search(r"internal endpoint: 127\.0\.0\.1:(\d+)", lines[2])
    if public is None or internal is None:
        proc.kill()
        pytest.fail(f"unexpected output {lines!r}; stderr: {proc.communicate()[1]}")
    yield proc, int(public.group(1)), int(internal.group(1))
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_operator_connects_a_hospital_and_sees_its_tunnel(node, tmp_path: Path) -> None:
    _, port, internal = node
    cred = tmp_path / "h-001.credential"
    res = cli(
        "cloud",
        "credentials",
        "issue",
        "h-001",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(cred),
        "--label",
        "test edge",
    )
    assert res.returncode == 0, res.stderr
    assert cred.stat().st_mode & 0o777 == 0o600
    listed = cli("cloud", "credentials", "list", "--data-dir", str(tmp_path))
    assert "h-001" in listed.stdout
    assert cred.read_text().strip() not in listed.stdout  # secrets are never listed

    edge = subprocess.Popen(
        [
            *HPLUS,
            "edge",
            "run",
            "--cloud",
            f"localhost:{port}",
            "--hospital",
            "h-001",
            "--credential",
            str(cred),
            "--ca",
            str(tmp_path / "tls/ca.pem"),
            "--edge-id",
            "e1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env(),
    )
    try:
        deadline = time.monotonic() + 30
        rows = ""
        while time.monotonic() < deadline:  # the edge connects on its own schedule
            res = cli(
                "cloud", "tunnels", "--data-dir", str(tmp_path), "--node", f"localhost:{internal}"
            )
            assert res.returncode == 0, res.stderr
            rows = res.stdout
            if "h-001" in rows:
                break
        assert re.search(rf"h-001\s+e1\s+\S+\s+{re.escape(CONTRACT_RELEASE)}\s+n1\s", rows), rows
        assert rows.strip().endswith("1 tunnel(s), 1 hospital(s)")
        # Any hospital RPC, by hand, through the node: JSON in, JSON out.
        res = cli(
            "cloud",
            "call",
            "h-001",
            "EdgeAdminService/GetEdgeInfo",
            "{}",
            "--data-dir",
            str(tmp_path),
            "--node",
            f"localhost:{internal}",
        )
        assert res.returncode == 0, res.stderr
        info = json.loads(res.stdout)
        assert (info["hospital_id"], info["edge_id"]) == ("h-001", "e1")
        res = cli(
            "cloud",
            "call",
            "h-001",
            "EdgeAdminService/GetConfig",
            "{}",
            "--data-dir",
            str(tmp_path),
            "--node",
            f"localhost:{internal}",
        )
        assert res.returncode == 1  # an edge without a profile has no config to give
        assert res.stderr.startswith("hplus: error: hplus.hospital.v1.EdgeAdminService.GetConfig")
        res = cli(
            "cloud",
            "call",
            "h-404",
            "EdgeAdminService/GetEdgeInfo",
            "--data-dir",
            str(tmp_path),
            "--node",
            f"localhost:{internal}",
        )
        assert res.returncode == 1
        assert "UNAVAILABLE" in res.stderr
        # Revoking the credential closes the live tunnel and says so.
        credential_id = re.search(r"(\S+)\s+h-001\s", listed.stdout)
        assert credential_id is not None, listed.stdout
        res = cli(
            "cloud",
            "credentials",
            "revoke",
            credential_id.group(1),
            "--data-dir",
            str(tmp_path),
            "--node",
            f"localhost:{internal}",
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[1] == (
            f"closed 1 live tunnel(s) of credential {credential_id.group(1)}: n1 1"
        )
        edge.send_signal(signal.SIGTERM)
        _, err = edge.communicate(timeout=30)
        assert edge.returncode == 0, err
        assert "Traceback" not in err
        assert "UNAUTHENTICATED: credential revoked" in err
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.communicate()


def test_revoke_with_no_node_to_confirm_says_so_and_exits_1(tmp_path: Path) -> None:
    res = cli("cloud", "credentials", "issue", "h-001", "--data-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    credential_id = res.stdout.split()[2]
    res = cli("cloud", "credentials", "revoke", credential_id, "--data-dir", str(tmp_path))
    assert res.returncode == 1
    assert res.stdout.startswith(f"revoked credential {credential_id} of h-001 at ")
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(
        "hplus: error: revoked in the fleet database, but no node confirmed that its live "
        "tunnels are closed"
    )
    assert "no cluster secret" in lines[0]
    listed = cli("cloud", "credentials", "list", "--data-dir", str(tmp_path))
    assert re.search(rf"{credential_id}\s+h-001\s+\S+\s+revoked", listed.stdout), listed.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["edge", "run", "--hospital", "h", "--credential", "/nonexistent"],
            "the following arguments are required: --cloud",
        ),
        (
            ["edge", "run", "--cloud", "x:1", "--hospital", "h", "--credential", "/nonexistent"],
            "/nonexistent: cannot read credential",
        ),
        (
            ["edge", "run", "--cloud", "nohost", "--hospital", "h", "--credential", __file__],
            "expected HOST:PORT, got 'nohost'",
        ),
        (
            [
                "edge",
                "run",
                "--cloud",
                "x:1",
                "--hospital",
                "h",
                "--credential",
                __file__,
                "--ca",
                __file__,
            ],
            "CA certificate is not PEM",
        ),
        (
            ["cloud", "credentials", "revoke", "nope", "--data-dir", "{tmp}"],
            "no credential with id 'nope'",
        ),
        (["cloud", "tunnels", "--data-dir", "{tmp}/empty"], "no cluster secret"),
        (
            ["cloud", "call", "h", "NopeService/X", "--data-dir", "{tmp}"],
            "unknown service 'hplus.hospital.v1.NopeService'",
        ),
        (
            ["cloud", "call", "h", "EdgeAdminService/Nope", "--data-dir", "{tmp}"],
            "has no method 'Nope'",
        ),
        (
            ["cloud", "call", "h", "EdgeAdminService/GetEdgeInfo", "{bad", "--data-dir", "{tmp}"],
            "request JSON for hplus.hospital.v1.GetEdgeInfoRequest",
        ),
        (["cloud", "call", "h", "GetEdgeInfo", "--data-dir", "{tmp}"], "expected SERVICE/METHOD"),
    ],
)
def test_bad_edge_and_credential_input_is_one_line(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    res = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]


def test_edge_with_a_bad_profile_mapping_is_one_line(tmp_path: Path) -> None:
    import shutil

    profiles = tmp_path / "profiles"
    shutil.copytree(REPO / "frontend_server" / "profiles", profiles)
    hospital = profiles / "city-first-hospital.toml"
    hospital.write_text(hospital.read_text() + '\n[fields.department]\nmotto = "deptMotto"\n')
    line = len(hospital.read_text().splitlines())
    res = cli(
        "edge",
        "run",
        "--cloud",
        "x:1",
        "--credential",
        __file__,
        "--profile",
        str(hospital),
        "--data-dir",
        str(tmp_path / "edge"),
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"hplus: error: {hospital}:{line}: fields.department.motto")

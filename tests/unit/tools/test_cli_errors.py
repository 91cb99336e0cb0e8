"""How the command line reports what went wrong: one line, a documented exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tools.cli import main
from tools.cli._base import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, EXIT_UNREACHABLE

REPO = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    """What `cloud call` / `cloud tunnels` read: a config (plaintext) and the secret."""
    (tmp_path / "cluster-secret").write_text("s3cret\n")
    (tmp_path / "node.toml").write_text('[tls]\nmode = "off"\n')
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def call(node_dir: Path, *argv: str, node: str = "") -> list[str]:
    where = ["--config", str(node_dir / "node.toml"), "--data-dir", str(node_dir)]
    return ["cloud", "call", *argv, *where, *(["--node", node] if node else [])]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ("h-1", "hplus.cloud.v1.RegistryService/ListReleases"),
            "hplus.cloud.v1.RegistryService is not a hospital service: `hplus cloud call` "
            "calls a hospital's front-end server through its tunnel (hplus.hospital.v1: "
            "AppointmentService, BillingService,",
        ),
        (
            ("h-1", "NoSuchService/Foo"),
            "unknown service 'hplus.hospital.v1.NoSuchService'; hospital services are: "
            "AppointmentService, "
            "BillingService, DirectoryService, EdgeAdminService, PatientService, "
            "ReportService, TaskService",
        ),
        (
            ("h-1", "DirectoryService/ListDepartments", "[]"),
            "request JSON for hplus.hospital.v1.ListDepartmentsRequest: expected an object "
            "({...}), got an array",
        ),
        (
            ("h-1", "DirectoryService/ListDepartments", '"x"'),
            "request JSON for hplus.hospital.v1.ListDepartmentsRequest: expected an object "
            "({...}), got a string",
        ),
        (
            ("h-1", "DirectoryService/ListDepartments", "{"),
            "request JSON for hplus.hospital.v1.ListDepartmentsRequest: Expecting",
        ),
    ],
)
def test_cloud_call_refuses_what_it_cannot_send_in_one_line(
    capsys: pytest.CaptureFixture[str], node_dir: Path, argv: tuple[str, ...], says: str
) -> None:
    code, out, err = run(capsys, *call(node_dir, *argv, node=f"127.0.0.1:{closed_port()}"))
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith(f"hplus: error: {says}"), err
    assert err.count("\n") == 1


def test_a_node_not_reachable_is_one_exit_code_for_call_and_tunnels(
    capsys: pytest.CaptureFixture[str], node_dir: Path
) -> None:
    node = f"127.0.0.1:{closed_port()}"
    where = ["--config", str(node_dir / "node.toml"), "--data-dir", str(node_dir)]
    code, _, err = run(capsys, "cloud", "tunnels", *where, "--node", node)
    assert code == EXIT_UNREACHABLE
    assert err.startswith(f"hplus: error: node {node} is not reachable: "), err
    assert "is a cloud node running there?" in err
    argv = call(node_dir, "h-1", "DirectoryService/ListDepartments", node=node)
    code, _, err = run(capsys, *argv)
    assert code == EXIT_UNREACHABLE
    assert err.startswith(f"hplus: error: node {node} is not reachable: "), err


def test_a_reader_that_stops_reading_is_not_a_traceback() -> None:
    """`hplus compat rules | head`: the pipe closes under us; exit 141, nothing on stderr."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before we write anything
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tools.cli", "compat", "rules"],
            stdout=write,
            stderr=subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": f"{REPO / 'gen'}{os.pathsep}{REPO}"},
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    assert proc.returncode == EXIT_BROKEN_PIPE
    assert proc.stderr == b""

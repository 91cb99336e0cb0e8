"""`hplus cloud run` as a newcomer runs it: a real process, a real TLS client, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
HPLUS = [sys.executable, "-m", "tools.cli"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    e["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return e


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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env(),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # blocks until the node listens (or exits)
    m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(TLS, CA (.+)\)", first)
    if m is None:
        proc.kill()
        pytest.fail(f"unexpected first line {first!r}; stderr: {proc.communicate()[1]}")
    yield proc, int(m.group(1)), Path(m.group(2))
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


async def test_run_serves_health_and_reflection_then_stops_on_sigterm(node) -> None:
    proc, port, ca = node
    creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([req]), timeout=10)]
        names = {s.name for s in replies[0].list_services_response.service}
        assert "grpc.health.v1.Health" in names
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in err


def test_sigint_stops_cleanly(node) -> None:
    proc, _, _ = node
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HPLUS, *args], capture_output=True, text=True, cwd=cwd, env=env(), timeout=60, check=False
    )


def test_malformed_config_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nlisten = "127.0.0.1:0"\n[tls]\nmode = "sometimes"\n')
    res = run_cli("cloud", "run", "--config", str(cfg))
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"hplus: error: {cfg}:4: [tls] mode: 'sometimes' is not one of dev, files, off"
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["cloud", "run", "--listen"], "argument --listen: expected one argument"),
        (["cloud", "run", "--tls", "maybe"], "argument --tls: invalid choice: 'maybe'"),
        (["cloud", "run", "--listen", "nohost"], "listen: expected HOST:PORT, got 'nohost'"),
        (["cloud", "fly"], "invalid choice: 'fly'"),
        (["contracts", "freeze", "one"], "invalid release version 'one'"),
    ],
)
def test_bad_flags_are_one_line(args: list[str], needle: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_plaintext_on_a_public_address_is_refused_in_one_line(tmp_path: Path) -> None:
    res = run_cli(
        "cloud", "run", "--tls", "off", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)
    )
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "hplus: error: tls mode 'off' is for loopback only, but listen is 0.0.0.0:0: plaintext "
        "may listen only on 127.0.0.0/8, ::1 or localhost (use tls mode 'dev' or 'files' on "
        "other addresses)"
    ]
    assert res.stdout == ""  # it never started


def test_listen_on_a_taken_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_cli(
            "cloud",
            "run",
            "--listen",
            f"127.0.0.1:{port}",
            # Not the default (127.0.0.1:50061): another node on this machine may hold it.
            "--internal-listen",
            "127.0.0.1:0",
            "--tls",
            "off",
            "--data-dir",
            str(tmp_path),
        )
    assert res.returncode == 2
    assert f"hplus: error: cannot start node: cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_installed_console_script_runs_without_pythonpath(tmp_path: Path) -> None:
    """`.venv/bin/hplus` works from anywhere: generated code is part of the install."""
    script = Path(sys.executable).parent / "hplus"
    if not script.exists():
        pytest.skip("hplus is not installed in this interpreter's environment")
    clean = {k: v for k, v in env().items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [str(script), "contracts", "list", "--releases", str(REPO / "proto/releases")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("1.0.0\t")

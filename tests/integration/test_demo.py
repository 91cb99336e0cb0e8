"""``make run``'s launcher as a newcomer uses it: start, look, call each hospital, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return env


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=60,
        check=False,
    )


# Seven processes and a dozen CLI runs: 139 s measured under load average ~15 on 2 cores.
@pytest.mark.timeout(300)
def test_make_run_starts_three_hospitals_that_answer_and_stops_cleanly(tmp_path: Path) -> None:
    var = tmp_path / "var"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "tools.demo", "--var", str(var),
            "--listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0",
            "--dashboard-listen", "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        # The launcher prints "stop with Ctrl-C" once every tunnel is listed by the node.
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("stop with Ctrl-C") or "tools.demo:" in line:
                break
        output = "".join(lines)
        assert "stop with Ctrl-C" in output, output
        internal = re.search(r"internal (127\.0\.0\.1:\d+)", output)
        assert internal is not None, output
        where = ("--data-dir", str(var), "--node", internal.group(1))

        tunnels = _cli("cloud", "tunnels", *where)
        assert tunnels.returncode == 0, tunnels.stderr
        assert "3 tunnel(s), 3 hospital(s)" in tunnels.stdout
        for hospital in ("city-first", "river-county", "lakeside"):
            assert hospital in tunnels.stdout
            reply = _cli(
                "cloud", "call", hospital, "DirectoryService/ListDepartments", "{}", *where
            )
            assert reply.returncode == 0, reply.stderr
            departments = json.loads(reply.stdout)["departments"]
            assert {"0101", "0300"} <= {d["department_id"] for d in departments}
        # An app key to sign in by hand, private, and how to use it.
        key = var / "demo" / "app.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert key.read_text().startswith("hpk1.")
        assert "sign in to the patient API by hand" in output
        assert "AccountService/StartSignIn" in output
        # The operators' dashboard is up behind its login, over the node's TLS.
        board = re.search(r"dashboard: (https://\S+) ", output)
        assert board is not None, output
        context = ssl.create_default_context(cafile=str(var / "tls" / "ca.pem"))
        login = board.group(1).replace("127.0.0.1", "localhost") + "login"
        with urllib.request.urlopen(login, context=context, timeout=30) as page:
            assert page.status == 200
            assert "sign in" in page.read().decode()
        # The patient API's first read, run as printed (a real client: buf curl).
        at = lines.index(next(x for x in lines if x.startswith("read hospitals and slots")))
        command = "".join(lines[at + 1 : at + 3]).replace("\\\n", " ")
        assert "PatientApiService/SearchHospitals" in command
        found = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False
        )
        assert found.returncode == 0, found.stderr
        hospitals = {h["hospitalId"] for h in json.loads(found.stdout)["hospitals"]}
        assert hospitals == {"city-first", "river-county"}  # 人民医院: rmyy
        # The demo's master data is in the read store, so the node syncs all three.
        status = _cli("cloud", "sync", "status", "--format", "json", "--data-dir", str(var))
        assert status.returncode == 0, status.stderr
        names = {json.loads(line)["hospital_id"]: json.loads(line)["name"]
                 for line in status.stdout.splitlines()}  # fmt: skip
        assert names["city-first"] == "滨江市第一人民医院"
        assert set(names) == {"city-first", "river-county", "lakeside"}
        # Every edge reports its health to the node (at once after its tunnel came up).
        assert "cloud health --data-dir" in output
        assert "cloud probes --config" in output
        deadline = time.monotonic() + 30
        while True:
            health = _cli("cloud", "health", "--format", "json", "--data-dir", str(var))
            edges = json.loads(health.stdout)["edges"]
            if {e["hospital_id"] for e in edges} == set(names) or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # another process's database: no event crosses to this one
        assert {e["hospital_id"] for e in edges} == set(names), health.stdout
        assert all(e["report"]["tunnels"] for e in edges)
        # The generated profiles only override the HIS endpoint of the examples.
        generated = (var / "demo" / "profiles" / "lakeside.toml").read_text()
        assert "lakeside-clinic.toml" in generated
        assert "sqlite+aiosqlite" in generated
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "stopping: edges, simulators, cloud node" in rest

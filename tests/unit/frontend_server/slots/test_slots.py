"""A/B slots and the supervisor: real wheels installed with pip, real edge processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import sqlite3
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from frontend_server.slots import (
    BASE,
    EXIT_SWITCH,
    SlotError,
    Slots,
    Supervisor,
    report_healthy,
)
from mesh.packages import (
    TrustRoot,
    build_package,
    certify_signing_key,
    generate_key,
    sign_package,
    verify_package,
)
from tests.support.waiting import until
from tests.support.wheels import wheel

ROOT = generate_key()
SIGNING = generate_key()
CERT = certify_signing_key(ROOT, SIGNING.public_key(), valid_for=dt.timedelta(days=1))
TRUST = TrustRoot([ROOT.public_key()])

# The edge stand-in: imports `edgever` (from the slot's lib, else the base directory) and
# behaves as its BEHAVIOUR says. SIGUSR1 = "a switch was requested": exit EXIT_SWITCH.
CHILD = f"""
import signal, sys
import edgever
from frontend_server.slots import report_healthy
signal.signal(signal.SIGUSR1, lambda *a: sys.exit({EXIT_SWITCH}))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
if edgever.BEHAVIOUR == "crash":
    sys.exit(3)
if edgever.BEHAVIOUR == "healthy":
    report_healthy(edgever.VERSION)
while True:
    signal.pause()
"""


def make_wheel(version: str, behaviour: str) -> tuple[str, bytes]:
    """A wheel of a module `edgever` whose BEHAVIOUR the edge stand-in follows."""
    module = f"VERSION = {version!r}\nBEHAVIOUR = {behaviour!r}\n".encode()
    return wheel("edgever", version, {"edgever.py": module})


def make_package(tmp: Path, version: str, behaviour: str) -> tuple[Path, object]:
    name, data = make_wheel(version, behaviour)
    unsigned = build_package(
        {name: data}, version=version, contract_release="1.2.0", profile_schema_version=1
    )
    path = tmp / f"edge-{version}.hpkg"
    path.write_bytes(sign_package(unsigned, SIGNING, CERT))
    return path, verify_package(path, TRUST)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "edge"
    d.mkdir()
    return d


def test_install_goes_to_the_idle_slot_and_survives_a_restart(
    data_dir: Path, tmp_path: Path
) -> None:
    slots = Slots(data_dir, base_version="1.3.0")
    assert slots.active().name == BASE
    assert slots.active().version == "1.3.0"
    assert slots.idle() == "a"
    path, verified = make_package(tmp_path, "1.4.0", "healthy")
    info = slots.install(path, verified)  # type: ignore[arg-type]
    assert info.name == "a"
    assert info.lib is not None
    assert (info.lib / "edgever.py").read_text().startswith("VERSION = '1.4.0'")
    assert slots.package_path("a") is not None
    assert stat.S_IMODE(slots.root.stat().st_mode) == 0o700
    assert stat.S_IMODE((slots.root / "state.json").stat().st_mode) == 0o600
    again = Slots(data_dir, base_version="1.3.0")
    assert again.slot("a").version == "1.4.0"
    assert again.active().name == BASE
    assert [e["event"] for e in again.history()] == ["installed"]


def test_a_failed_install_leaves_the_slot_empty_and_the_active_one_alone(
    data_dir: Path, tmp_path: Path
) -> None:
    slots = Slots(data_dir, base_version="1.3.0")
    broken = build_package(
        {"edgever-9.0.0-py3-none-any.whl": b"not a zip"},
        version="9.0.0",
        contract_release="1.2.0",
        profile_schema_version=1,
    )
    path = tmp_path / "broken.hpkg"
    path.write_bytes(sign_package(broken, SIGNING, CERT))
    with pytest.raises(SlotError) as info:
        slots.install(path, verify_package(path, TRUST))
    assert info.value.reason == "INSTALL_FAILED"
    assert "pip exited" in info.value.message
    assert not (slots.root / "a").exists()
    with pytest.raises(SlotError):
        slots.slot("a")
    assert slots.active().name == BASE
    assert slots.history()[-1]["event"] == "install_failed"


def test_a_damaged_state_falls_back_to_the_base_installation(data_dir: Path) -> None:
    slots = Slots(data_dir, base_version="1.3.0")
    (slots.root / "state.json").write_text("{ not json")
    again = Slots(data_dir, base_version="1.3.0")
    assert again.active().name == BASE
    assert any(p.name.startswith("state.json.damaged-") for p in again.root.iterdir())


def test_switching_backs_up_the_stores_first(data_dir: Path, tmp_path: Path) -> None:
    db = sqlite3.connect(data_dir / "ledger.db")
    db.execute("create table entries (k text primary key)")
    db.executemany("insert into entries values (?)", [(str(i),) for i in range(100)])
    db.commit()
    db.close()
    slots = Slots(data_dir, base_version="1.3.0")
    path, verified = make_package(tmp_path, "1.4.0", "healthy")
    slots.install(path, verified)  # type: ignore[arg-type]
    pending = slots.request_switch(30)
    assert pending.slot == "a"
    with pytest.raises(SlotError) as info:
        slots.install(path, verified)  # type: ignore[arg-type]
    assert info.value.reason == "SWITCH_PENDING"
    backups = list((data_dir / "backups").iterdir())
    assert len(backups) == 1
    copy = backups[0] / "ledger.db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    rows = sqlite3.connect(copy).execute("select count(*) from entries").fetchone()
    assert rows == (100,)
    for i in range(4):
        slots.backup_stores(f"extra-{i}")
    assert len(list((data_dir / "backups").iterdir())) == 3


def test_report_healthy_writes_only_when_supervised(tmp_path: Path) -> None:
    assert report_healthy("1.0.0", environ={}) is False
    target = tmp_path / "health.json"
    env = {"HPLUS_HEALTH_FILE": str(target), "HPLUS_SLOT": "a"}
    assert report_healthy("1.0.0", environ=env) is True
    state = json.loads(target.read_text())
    assert state == {"pid": os.getpid(), "slot": "a", "version": "1.0.0", "healthy": True}


async def test_the_supervisor_switches_commits_and_rolls_back(
    data_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "edgever.py").write_text("VERSION = '1.3.0'\nBEHAVIOUR = 'healthy'\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(base), env.get("PYTHONPATH", "")) if p)
    slots = Slots(data_dir, base_version="1.3.0")
    supervisor = Supervisor(
        slots, [sys.executable, "-c", CHILD], env=env, poll_interval=0.05, stop_grace=5
    )
    run = asyncio.create_task(supervisor.run())

    def running(slot: str, version: str) -> Callable[[], bool]:
        return lambda: bool(supervisor.started) and supervisor.started[-1][:2] == (slot, version)

    def switch(version: str) -> None:
        os.kill(supervisor.started[-1][2], signal.SIGUSR1)

    await until(running(BASE, "1.3.0"), limit=60)

    # 1.4.0 is healthy: installed into slot a, switched to, committed.
    path, verified = make_package(tmp_path, "1.4.0", "healthy")
    slots.install(path, verified)  # type: ignore[arg-type]
    slots.request_switch(20)
    switch("1.4.0")
    await until(running("a", "1.4.0"), limit=60)
    await until(lambda: Slots(data_dir, base_version="1.3.0").active().name == "a", limit=60)

    # 1.5.0 never becomes healthy: the gate times out, slot a runs again.
    path, verified = make_package(tmp_path, "1.5.0", "never")
    slots.reload()
    slots.install(path, verified)  # type: ignore[arg-type]
    slots.request_switch(1.0)
    switch("1.5.0")
    await until(lambda: len(supervisor.started) >= 4, limit=60)
    assert supervisor.started[2][:2] == ("b", "1.5.0")
    assert supervisor.started[3][:2] == ("a", "1.4.0")

    # 1.6.0 crashes at start: rolled back at once, without waiting out the gate.
    path, verified = make_package(tmp_path, "1.6.0", "crash")
    slots.reload()
    slots.install(path, verified)  # type: ignore[arg-type]
    slots.request_switch(60)
    switch("1.6.0")
    await until(lambda: len(supervisor.started) >= 6, limit=60)
    assert supervisor.started[4][:2] == ("b", "1.6.0")
    assert supervisor.started[5][:2] == ("a", "1.4.0")

    # Stop it once the edge on slot a is up (its signal handlers are installed).
    def healthy() -> bool:
        try:
            state = json.loads(supervisor.health_file.read_text())
        except (OSError, ValueError):
            return False
        return bool(state.get("pid") == supervisor.started[-1][2])

    await until(healthy, limit=60)
    supervisor.stop()
    assert await asyncio.wait_for(run, 30) == 0
    final = Slots(data_dir, base_version="1.3.0")
    assert final.active().version == "1.4.0"
    events = [(e["event"], e["version"], e.get("reason", "")) for e in final.history()]
    assert ("committed", "1.4.0", "") in events
    assert ("rolled_back", "1.5.0", "not healthy within 1 s") in events
    assert ("rolled_back", "1.6.0", "exited with code 3 before passing its health gate") in events


async def test_a_crashing_edge_is_restarted_and_a_final_exit_ends_the_supervisor(
    data_dir: Path, tmp_path: Path
) -> None:
    counter = tmp_path / "starts"
    script = (
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "sys.exit(1 if n < 3 else 65)\n"
    )
    slots = Slots(data_dir, base_version="1.3.0")
    supervisor = Supervisor(
        slots, [sys.executable, "-c", script], restart_backoff=(0.01, 0.02), max_restarts=5
    )
    assert await asyncio.wait_for(supervisor.run(), 30) == 65
    assert counter.read_text() == "3"

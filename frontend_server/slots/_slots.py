"""Two install slots on the edge, and the record of which one runs.

``DATA_DIR/slots`` (mode 0700) holds slots ``a`` and ``b`` and ``state.json`` (0600). The
edge first runs from its base installation (slot ``base``); an upgrade is installed into
the *idle* slot (never the one running), then a switch is requested: the supervisor
restarts the edge from the idle slot and applies the health gate; the switch is committed
only when the new version reports healthy in time, otherwise the supervisor returns to the
slot that ran before. Every step is in the state's history (bounded), which the edge
reports to the cloud.

A slot holds the package it came from (``package.hpkg``, the base of the next delta), its
payload (``payload/``) and the wheels installed with ``pip install --target`` into
``lib/``, which the supervisor puts first on ``PYTHONPATH``. The stores (ledger, tasks,
directory) stay in the data directory, shared by both slots: before a switch they are
copied with SQLite's online backup into ``DATA_DIR/backups`` (the last few kept), since a
new version may migrate them forward and migrations are forward-only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.files import make_private_dir, replace_private_file
from mesh.packages import PackageError, VerifiedPackage, payload_of

__all__ = [
    "BASE",
    "SLOT_NAMES",
    "TIME_FORMAT",
    "PendingSwitch",
    "SlotError",
    "SlotInfo",
    "Slots",
]

log = logging.getLogger(__name__)

BASE = "base"
"""The slot name of the edge's own installation (before any upgrade)."""
SLOT_NAMES = ("a", "b")
_STATE = "state.json"
_HISTORY = 50
_BACKUPS_KEPT = 3
_PIP_TIMEOUT = 600.0


class SlotError(Exception):
    """An install or switch refused; ``reason`` is reported to the cloud."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} [{self.reason}]"


@dataclasses.dataclass(frozen=True)
class SlotInfo:
    """One slot: its name, the version it holds, and its library directory."""

    name: str
    version: str
    lib: Path | None
    """``None`` for the base installation (nothing to put on ``PYTHONPATH``)."""


@dataclasses.dataclass(frozen=True)
class PendingSwitch:
    """A switch requested and not yet committed or rolled back."""

    slot: str
    version: str
    health_gate_seconds: float
    requested_at: str


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""How the history writes its times (UTC)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime(TIME_FORMAT)


class Slots:
    """The slots of one edge data directory.

    Args:
        data_dir: the edge's data directory (the stores live there; slots under it).
        base_version: the version of the base installation (``mesh.version``).
        python: the interpreter whose ``pip`` installs wheels into a slot.
        clock: the time stamps of the history (tests).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        base_version: str,
        python: str = sys.executable,
        clock: Callable[[], str] = _now,
    ) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "slots"
        self.base_version = base_version
        self._python = python
        self._clock = clock
        make_private_dir(self.root)
        self._state = self._load()
        if not (self.root / _STATE).exists():
            self._save()

    # -- state -------------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        path = self.root / _STATE
        fresh: dict[str, Any] = {
            "active": BASE,
            "versions": {BASE: self.base_version},
            "pending": None,
            "history": [],
        }
        if not path.exists():
            return fresh
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            # The state says which slot runs; unreadable, the base installation is the one
            # we know works. Keep the damaged file for inspection.
            broken = path.with_name(f"{_STATE}.damaged-{self._clock()}")
            path.rename(broken)
            log.error("slots: %s unreadable (%s); kept as %s, running the base", path, err, broken)
            return fresh
        if not isinstance(state, dict) or state.get("active") not in (BASE, *SLOT_NAMES):
            log.error("slots: %s is not a slot state; running the base installation", path)
            return fresh
        state.setdefault("versions", {})[BASE] = self.base_version
        state.setdefault("pending", None)
        state.setdefault("history", [])
        return state

    def _save(self) -> None:
        replace_private_file(
            self.root / _STATE, json.dumps(self._state, indent=2, sort_keys=True).encode()
        )

    def _event(self, event: str, slot: str, version: str, reason: str = "") -> None:
        entry = {"at": self._clock(), "event": event, "slot": slot, "version": version}
        if reason:
            entry["reason"] = reason
        history: list[dict[str, str]] = self._state["history"]
        history.append(entry)
        del history[:-_HISTORY]
        log.info("slots: %s %s (%s)%s", event, slot, version, f": {reason}" if reason else "")

    def reload(self) -> None:
        """Read the state again (another process, the supervisor or the edge, changed it)."""
        self._state = self._load()

    # -- queries -----------------------------------------------------------------------

    def _info(self, name: str) -> SlotInfo:
        version = self._state["versions"].get(name)
        if not version:
            raise SlotError("SLOT_EMPTY", f"slot {name} holds no installed version")
        lib = None if name == BASE else self.root / name / "lib"
        return SlotInfo(name, str(version), lib)

    def active(self) -> SlotInfo:
        """The slot the edge runs from when no switch is pending."""
        return self._info(self._state["active"])

    def idle(self) -> str:
        """The slot an upgrade installs into: never the active one."""
        return "b" if self._state["active"] == "a" else "a"

    def pending(self) -> PendingSwitch | None:
        """The requested switch, if any."""
        raw = self._state.get("pending")
        if not isinstance(raw, dict):
            return None
        return PendingSwitch(
            slot=str(raw["slot"]),
            version=str(raw["version"]),
            health_gate_seconds=float(raw["health_gate_seconds"]),
            requested_at=str(raw["requested_at"]),
        )

    def slot(self, name: str) -> SlotInfo:
        """A slot by name."""
        return self._info(name)

    def history(self) -> list[dict[str, str]]:
        """The last events, oldest first."""
        return [dict(e) for e in self._state["history"]]

    def package_path(self, name: str | None = None) -> Path | None:
        """The package a slot was installed from (the base for a delta), if it has one."""
        name = name or self._state["active"]
        if name == BASE:
            return None
        path = self.root / name / "package.hpkg"
        return path if path.exists() else None

    # -- install and switch ------------------------------------------------------------

    def install(self, package_path: Path, verified: VerifiedPackage) -> SlotInfo:
        """Install a verified package into the idle slot (replacing what it held).

        Raises:
            SlotError: a switch is pending, or the wheels failed to install (the slot is
                left empty, the running slot untouched).
        """
        if self.pending() is not None:
            raise SlotError("SWITCH_PENDING", "a switch is pending; install after it settles")
        name = self.idle()
        version = verified.manifest.version
        target = self.root / name
        self._state["versions"].pop(name, None)
        self._save()
        if target.exists():
            shutil.rmtree(target)
        make_private_dir(target)
        try:
            shutil.copyfile(package_path, target / "package.hpkg")
            payload = payload_of(target / "package.hpkg")
            wheels: list[Path] = []
            for rel, data in payload.items():
                dest = target / "payload" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(data)
                if rel.endswith(".whl"):
                    wheels.append(dest)
            (target / "lib").mkdir()
            if wheels:
                self._pip_install(target / "lib", wheels)
        except (OSError, PackageError, SlotError) as err:
            reason = getattr(err, "reason", "INSTALL_FAILED")
            self._event("install_failed", name, version, str(err))
            self._save()
            shutil.rmtree(target, ignore_errors=True)
            raise SlotError(reason, f"slot {name}: cannot install {version}: {err}") from None
        self._state["versions"][name] = version
        self._event("installed", name, version)
        self._save()
        return self._info(name)

    def _pip_install(self, lib: Path, wheels: list[Path]) -> None:
        cmd = [
            self._python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(lib),
            *map(str, wheels),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise SlotError(
                "INSTALL_FAILED", f"pip took longer than {_PIP_TIMEOUT:.0f} s"
            ) from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise SlotError("INSTALL_FAILED", f"pip exited {done.returncode}: {last}")

    def request_switch(self, health_gate_timeout: float) -> PendingSwitch:
        """Ask the supervisor to restart into the idle slot, with a health gate.

        The stores are backed up first. The running edge then exits with
        `frontend_server.slots.EXIT_SWITCH` for the supervisor to act.
        """
        if not health_gate_timeout > 0:
            raise SlotError("BAD_REQUEST", "health_gate_timeout must be > 0")
        name = self.idle()
        info = self._info(name)
        self.backup_stores(f"before-{info.version}")
        pending = PendingSwitch(name, info.version, health_gate_timeout, self._clock())
        self._state["pending"] = dataclasses.asdict(pending)
        self._event("switch_requested", name, info.version)
        self._save()
        return pending

    def commit(self) -> SlotInfo:
        """The pending slot passed its health gate: it becomes the active one."""
        pending = self.pending()
        if pending is None:
            raise SlotError("NO_SWITCH", "no switch is pending")
        self._state["previous"] = self._state["active"]
        self._state["active"] = pending.slot
        self._state["pending"] = None
        self._event("committed", pending.slot, pending.version)
        self._save()
        return self.active()

    def roll_back(self, reason: str) -> SlotInfo:
        """The pending slot failed its health gate: keep running the active one."""
        pending = self.pending()
        if pending is None:
            raise SlotError("NO_SWITCH", "no switch is pending")
        self._state["pending"] = None
        self._event("rolled_back", pending.slot, pending.version, reason)
        self._save()
        return self.active()

    # -- the supervisor ------------------------------------------------------------------

    def supervisor_pid(self) -> int | None:
        """The running supervisor's process id (from ``slots/supervisor.pid``), if any."""
        try:
            pid = int((self.root / "supervisor.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def notify_supervisor(self) -> int | None:
        """Ask the running supervisor to switch to the pending slot now (SIGUSR1)."""
        pid = self.supervisor_pid()
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGUSR1)
        except OSError:
            return None
        return pid

    # -- store backups -----------------------------------------------------------------

    def backup_stores(self, label: str) -> Path:
        """Copy every SQLite store of the data directory, consistently, into a backup.

        Uses SQLite's online backup, so a store being written is copied as of one
        transaction. Keeps the last few backups.
        """
        backups = self.data_dir / "backups"
        make_private_dir(backups)
        stamp = self._clock().replace(":", "").replace(".", "")
        dest = backups / f"{stamp}-{label}"
        make_private_dir(dest)
        for store in sorted(self.data_dir.glob("*.db")):
            source = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
            try:
                target = sqlite3.connect(dest / store.name)
                try:
                    source.backup(target)
                finally:
                    target.close()
            finally:
                source.close()
            (dest / store.name).chmod(0o600)
        kept = sorted(p for p in backups.iterdir() if p.is_dir())
        for old in kept[:-_BACKUPS_KEPT]:
            shutil.rmtree(old, ignore_errors=True)
        return dest

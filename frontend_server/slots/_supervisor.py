"""The supervisor: runs the edge from its slot, switches slots behind a health gate.

``hplus edge run --supervise`` runs this small loop instead of the edge itself. It starts
the edge (``hplus edge run`` with the same arguments) from the active slot, with the slot's
``lib`` first on ``PYTHONPATH``. When the edge exits with `EXIT_SWITCH` after requesting a
switch (`Slots.request_switch`), the supervisor starts it from the new slot and waits for
the health gate: the new edge must write its health file (`report_healthy`: tunnel up, its
services answering) within the switch's deadline. Healthy in time → the switch is
committed. Otherwise (deadline passed, or the new edge exited first) the new edge is
stopped and the supervisor starts the old slot again: the rollback is recorded in the
slots' history, which the edge reports to the cloud.

A switch can also be asked of the supervisor itself (`Supervisor.switch`, on SIGUSR1 from
``hplus edge install``, which finds it through ``slots/supervisor.pid``): it stops the edge
gracefully, then starts the pending slot the same way.

A crash outside a switch restarts the edge with exponential backoff; exits that will not
fix themselves (bad input 2, a refused store 65) end the supervisor with the same code.
SIGTERM/SIGINT are passed to the edge, whose exit code the supervisor returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from frontend_server.slots._slots import PendingSwitch, SlotInfo, Slots
from mesh.files import replace_private_file

__all__ = [
    "EXIT_SWITCH",
    "HEALTH_FILE_ENV",
    "PID_FILE",
    "SLOT_ENV",
    "Supervisor",
    "report_healthy",
]

log = logging.getLogger(__name__)

EXIT_SWITCH = 75
"""Exit code with which the edge asks its supervisor to restart it into the pending slot
(``EX_TEMPFAIL``)."""
HEALTH_FILE_ENV = "HPLUS_HEALTH_FILE"
"""Environment variable naming the file a supervised edge writes when it is healthy."""
SLOT_ENV = "HPLUS_SLOT"
"""Environment variable naming the slot a supervised edge runs from."""
PID_FILE = "supervisor.pid"
"""File under the slots directory holding the running supervisor's process id."""
_FINAL_EXITS = frozenset({2, 65})


def report_healthy(version: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Tell the supervisor (if any) that this edge passed its health checks.

    Returns:
        False when the edge is not supervised (nothing to tell).
    """
    env = os.environ if environ is None else environ
    path = env.get(HEALTH_FILE_ENV)
    if not path:
        return False
    target = Path(path)
    body = json.dumps(
        {"pid": os.getpid(), "slot": env.get(SLOT_ENV, ""), "version": version, "healthy": True}
    ).encode()
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(body)
    os.replace(temporary, target)
    return True


class Supervisor:
    """Runs the edge from its slot and applies the health gate of a switch.

    Args:
        slots: the edge's slots.
        command: the edge's command line (run as is, from the slot's environment).
        env: the base environment (default: this process's).
        poll_interval: how often the health file is read during a gate.
        stop_grace: how long a stopped edge may drain before it is killed.
        restart_backoff: first and longest pause before restarting a crashed edge.
        max_restarts: consecutive crashes after which the supervisor gives up.
    """

    def __init__(
        self,
        slots: Slots,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        poll_interval: float = 0.2,
        stop_grace: float = 15.0,
        restart_backoff: tuple[float, float] = (1.0, 60.0),
        max_restarts: int = 10,
    ) -> None:
        self.slots = slots
        self.command = list(command)
        self._env = dict(os.environ if env is None else env)
        self._poll = poll_interval
        self._grace = stop_grace
        self._backoff = restart_backoff
        self._max_restarts = max_restarts
        self._stopping = asyncio.Event()
        self._switching = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self.health_file = slots.root / "health.json"
        self.started: list[tuple[str, str, int]] = []
        """(slot, version, pid) of every edge process started, for logs and tests."""

    def stop(self) -> None:
        """Stop the edge (SIGTERM, then SIGKILL after the grace) and return its exit code."""
        self._stopping.set()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)

    def switch(self) -> None:
        """Restart the edge into the pending slot now (graceful stop, then the gate)."""
        self.slots.reload()
        if self.slots.pending() is None:
            log.warning("supervisor: asked to switch, but no switch is pending")
            return
        self._switching.set()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)

    async def _start(self, info: SlotInfo) -> asyncio.subprocess.Process:
        env = dict(self._env)
        if info.lib is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(info.lib), env.get("PYTHONPATH", "")) if p
            )
        env[SLOT_ENV] = info.name
        env[HEALTH_FILE_ENV] = str(self.health_file)
        self.health_file.unlink(missing_ok=True)
        proc = await asyncio.create_subprocess_exec(*self.command, env=env)
        self._proc = proc
        self.started.append((info.name, info.version, proc.pid))
        log.info(
            "supervisor: edge %s started from slot %s (pid %d)", info.version, info.name, proc.pid
        )
        return proc

    def _healthy(self, pid: int) -> bool:
        try:
            state = json.loads(self.health_file.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(state, dict) and state.get("pid") == pid and state.get("healthy") is True

    async def _gate(self, proc: asyncio.subprocess.Process, pending: PendingSwitch) -> str | None:
        """Wait for the health gate; the reason it failed, or None when it passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + pending.health_gate_seconds
        while True:
            if self._healthy(proc.pid):
                return None
            if self._stopping.is_set():
                return "the edge was stopped during its health gate"
            left = deadline - loop.time()
            if left <= 0:
                return f"not healthy within {pending.health_gate_seconds:g} s"
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(proc.wait(), min(self._poll, left))
                return f"exited with code {code} before passing its health gate"

    async def _terminate(self, proc: asyncio.subprocess.Process) -> int:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self._grace)
            except TimeoutError:
                log.warning(
                    "supervisor: pid %d did not stop in %g s; killing it", proc.pid, self._grace
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        assert proc.returncode is not None
        return proc.returncode

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        stop = asyncio.create_task(self._stopping.wait())
        done = asyncio.create_task(proc.wait())
        try:
            await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not done.done():
            done.cancel()
            return await self._terminate(proc)
        return done.result()

    async def run(self) -> int:
        """Run until the edge is stopped or gives up; returns the exit code to exit with."""
        pid_file = self.slots.root / PID_FILE
        replace_private_file(pid_file, f"{os.getpid()}\n".encode())
        try:
            return await self._run()
        finally:
            pid_file.unlink(missing_ok=True)

    async def _run(self) -> int:
        crashes = 0
        while True:
            self._switching.clear()
            self.slots.reload()
            pending = self.slots.pending()
            info = self.slots.slot(pending.slot) if pending else self.slots.active()
            proc = await self._start(info)
            if pending is not None:
                failure = await self._gate(proc, pending)
                if failure is None:
                    self.slots.commit()
                    log.info("supervisor: %s passed its health gate; committed", pending.version)
                else:
                    await self._terminate(proc)
                    self.slots.roll_back(failure)
                    log.error("supervisor: %s %s; rolled back", pending.version, failure)
                    if self._stopping.is_set():
                        return 0
                    continue
            code = await self._wait(proc)
            if self._stopping.is_set():
                return code
            self.slots.reload()
            switching = code == EXIT_SWITCH or self._switching.is_set()
            if switching and self.slots.pending() is not None:
                crashes = 0
                continue
            if code == 0 or code in _FINAL_EXITS:
                return code
            crashes += 1
            if crashes > self._max_restarts:
                log.error("supervisor: the edge crashed %d times in a row; giving up", crashes)
                return code
            pause = min(self._backoff[0] * 2 ** (crashes - 1), self._backoff[1])
            log.error("supervisor: the edge exited with %d; restarting in %.1f s", code, pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            if self._stopping.is_set():
                return code

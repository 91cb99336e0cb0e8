"""The slots as the upgrade agent sees them (``frontend_server.updater.SlotsApi``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from pathlib import Path

from frontend_server.slots._slots import TIME_FORMAT, SlotError, Slots
from frontend_server.updater import RunningVersion, SwitchAttempt, SwitchRefused
from mesh.packages import VerifiedPackage

__all__ = ["SlotsBridge"]

log = logging.getLogger(__name__)


class SlotsBridge:
    """Installs and switches for the upgrade agent, through the supervisor.

    A switch asks the running supervisor (``hplus edge run --supervise``) to restart the
    edge into the new slot behind its health gate; an edge that runs without a supervisor
    cannot switch, so the request is refused with ``NOT_SUPERVISED`` (reported, and the
    version stays as it is) rather than left pending for a restart nobody will do.
    """

    def __init__(self, slots: Slots) -> None:
        self.slots = slots

    def running(self) -> RunningVersion:
        self.slots.reload()
        active = self.slots.active()
        standby = ""
        with contextlib.suppress(SlotError):
            standby = self.slots.slot(self.slots.idle()).version
        return RunningVersion(
            version=active.version,
            package_path=self.slots.package_path(active.name),
            standby_version=standby,
        )

    def install(self, package_path: Path, verified: VerifiedPackage) -> None:
        try:
            self.slots.install(package_path, verified)
        except SlotError as err:
            raise SwitchRefused(err.reason, err.message) from None
        except OSError as err:
            raise SwitchRefused("INSTALL_FAILED", f"cannot install: {err}") from None

    def request_switch(self, health_gate_timeout: float) -> None:
        if self.slots.supervisor_pid() is None:
            raise SwitchRefused(
                "NOT_SUPERVISED",
                "this edge runs without its supervisor (hplus edge run --supervise): "
                "it cannot switch slots; the package stays installed in the idle slot",
            )
        try:
            self.slots.request_switch(health_gate_timeout)
        except (SlotError, OSError) as err:
            raise SwitchRefused(getattr(err, "reason", "SWITCH_FAILED"), str(err)) from None
        self.slots.notify_supervisor()

    def last_attempt(self) -> SwitchAttempt | None:
        self.slots.reload()
        for event in reversed(self.slots.history()):
            if event["event"] == "switch_requested":
                return None  # still in its gate
            if event["event"] in ("committed", "rolled_back"):
                ok = event["event"] == "committed"
                return SwitchAttempt(
                    time=_parse(event["at"]),
                    version=event["version"],
                    ok=ok,
                    reason="" if ok else "HEALTH_GATE_FAILED",
                    message=event.get("reason", ""),
                )
        return None


def _parse(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC)

"""What the upgrade agent needs from the rest of the edge: the uplink and the A/B slots."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from hplus.cloud.v1 import edge_pb2
from mesh.packages import VerifiedPackage

__all__ = ["RunningVersion", "SlotsApi", "SwitchAttempt", "SwitchRefused", "UpgradeUplink"]


class SwitchRefused(Exception):
    """The slots could not install or switch (``reason`` is reported to the cloud)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclasses.dataclass(frozen=True)
class RunningVersion:
    """What the active slot runs."""

    version: str
    """Its software version (semver)."""
    package_path: Path | None
    """The full package it was installed from (the base of a delta); ``None``: unknown
    (a source install), so the agent asks for full packages only."""
    standby_version: str = ""
    """The version in the idle slot (the rollback target), empty when none."""


@dataclasses.dataclass(frozen=True)
class SwitchAttempt:
    """How the last slot switch ended (the supervisor's verdict after the health gate)."""

    time: dt.datetime
    """When it ended."""
    version: str
    """The version switched to."""
    ok: bool
    """The new version passed its health gate and was committed."""
    reason: str = ""
    """Why not, e.g. ``HEALTH_GATE_FAILED``; the old slot runs again."""
    message: str = ""
    """One line for people (no patient data)."""
    package_id: str = ""
    """The package installed."""


class SlotsApi(Protocol):
    """The edge's A/B slots (``frontend_server.slots`` implements it)."""

    def running(self) -> RunningVersion:
        """What runs now."""
        ...

    def install(self, package_path: Path, verified: VerifiedPackage) -> None:
        """Install a verified package into the idle slot (the active one is untouched).

        Raises:
            SwitchRefused: it could not be installed.
        """
        ...

    def request_switch(self, health_gate_timeout: float) -> None:
        """Ask the supervisor to restart into the idle slot and apply the health gate.

        A failed gate returns to the old slot by itself. The outcome is `last_attempt`.

        Raises:
            SwitchRefused: no switch can happen (e.g. no supervisor runs).
        """
        ...

    def last_attempt(self) -> SwitchAttempt | None:
        """How the last switch ended, or ``None`` (none yet, or still in its gate)."""
        ...


class UpgradeUplink(Protocol):
    """The edge's calls to ``EdgeService`` (the uplink client implements it).

    Failed calls raise `mesh.errors` tree errors (``errors.wrap`` of the stub).
    """

    async def get_upgrade_manifest(
        self, request: edge_pb2.GetUpgradeManifestRequest
    ) -> edge_pb2.GetUpgradeManifestResponse:
        """``EdgeService.GetUpgradeManifest``."""
        ...

    def download_upgrade(
        self, request: edge_pb2.DownloadUpgradeRequest
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        """``EdgeService.DownloadUpgrade``: the stream's responses."""
        ...

    async def report_upgrade(self, upgrade: edge_pb2.UpgradeHealth) -> None:
        """Send a ``ReportHealth`` now with this upgrade state (a state change)."""
        ...

"""The edge's upgrade agent: signed packages from the cloud into the idle A/B slot.

`UpgradeAgent` polls ``EdgeService.GetUpgradeManifest`` through an `UpgradeUplink`,
downloads resumably with CRC32C per chunk, prefers a delta and falls back to the full
package, verifies with `mesh.packages.verify_package` (signature chain, files, no
downgrade, the announced digest), respects the maintenance window and hands the package to
the `SlotsApi` (``frontend_server.slots``). Every refusal is logged and reported.
"""

from __future__ import annotations

from frontend_server.updater._agent import (
    CheckResult,
    Outcome,
    UpdaterConfig,
    UpgradeAgent,
    in_window,
)
from frontend_server.updater._seams import (
    RunningVersion,
    SlotsApi,
    SwitchAttempt,
    SwitchRefused,
    UpgradeUplink,
)

__all__ = [
    "CheckResult",
    "Outcome",
    "RunningVersion",
    "SlotsApi",
    "SwitchAttempt",
    "SwitchRefused",
    "UpdaterConfig",
    "UpgradeAgent",
    "UpgradeUplink",
    "in_window",
]

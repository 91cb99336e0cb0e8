from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

EXPECTED = {
    # The root re-exports nothing: importing one part must not load the others.
    "frontend_server": [],
    "frontend_server.profile": [
        "CAPABILITIES",
        "FIELD_ENTITIES",
        "OPERATIONS",
        "QUEUEABLE_OPERATIONS",
        "REQUIRED_CODES",
        "REQUIRED_FIELDS",
        "BusinessHours",
        "Capabilities",
        "ChangeKind",
        "CodeTables",
        "ConfigError",
        "DbSettings",
        "Dialect",
        "Fees",
        "HisConfig",
        "HisEndpoint",
        "HisLimits",
        "HisTimeouts",
        "OperationMode",
        "ParameterChange",
        "Profile",
        "RestSettings",
        "Risk",
        "SoapSettings",
        "canonical_json",
        "diff_profiles",
        "format_changes",
        "load_profile",
        "load_profile_content",
        "profile_digest",
    ],
    "frontend_server.liveconfig": [
        "ApplyOutcome",
        "ConfigStore",
        "Generation",
        "HealthFailure",
        "LiveConfig",
        "ProfileParts",
        "RevisionSource",
        "ServiceSwitch",
        "StoredRevision",
        "restart_violations",
    ],
    "frontend_server.rules": [
        "ALLOWED_SLOT_MINUTES",
        "AppointmentRules",
        "Booking",
        "BookingStatus",
        "CancelDecision",
        "HoldDecision",
        "Period",
        "Place",
        "PlaceAvailability",
        "Reason",
        "RuleEngine",
        "RuleRefusal",
        "RuleVariant",
        "Session",
    ],
    "frontend_server.directory": [
        "DATED_KINDS",
        "ENTITY_KINDS",
        "BucketSelection",
        "DirectoryMirror",
        "FeedEntry",
        "FeedLimits",
        "FeedQuery",
        "FeedRequestError",
        "FeedSource",
        "MirrorEntity",
        "MirrorError",
        "MirrorStats",
        "MirrorUpdate",
        "directory_digest",
        "get_changes",
    ],
    "frontend_server.ledger": [
        "LEDGER_STORE",
        "FenceResult",
        "HisOutcome",
        "IdempotencyKeyFenced",
        "IdempotencyKeyInProgress",
        "IdempotencyKeyReused",
        "InvalidIdempotencyKey",
        "Ledger",
        "LedgerDamaged",
        "LedgerError",
        "NoEffect",
        "OperationError",
        "OperationNotOpen",
        "OperationRecord",
        "OperationState",
        "OperationUnknown",
        "Probe",
        "Refused",
        "Resolver",
        "fingerprint",
        "message_fingerprint",
        "not_received",
        "to_operation_record",
    ],
    "frontend_server.tasks": [
        "TASK_STORE",
        "Executor",
        "KindStats",
        "PermanentTaskError",
        "QueueConfig",
        "QueueFull",
        "QueueStats",
        "Task",
        "TaskError",
        "TaskKeyReused",
        "TaskNotFound",
        "TaskNotRetryable",
        "TaskQueue",
        "TaskQueueError",
        "TaskRun",
        "TaskState",
        "TaskStore",
        "TaskStoreDamaged",
        "TokenBucket",
        "TransientTaskError",
        "backoff_delay",
    ],
    "frontend_server.updater": [
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
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_surface_is_pinned(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == EXPECTED[name]
    for attr in module.__all__:
        assert hasattr(module, attr), attr


def test_the_root_loads_no_part() -> None:
    code = "import sys, frontend_server; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
    ).stdout.split()
    assert [m for m in out if m.startswith("frontend_server")] == ["frontend_server"]
    assert "sqlalchemy" not in out

from __future__ import annotations

import importlib

import pytest

import frontend_server

EXPECTED = {
    "frontend_server": [
        "AppointmentRules",
        "Ledger",
        "Profile",
        "QueueConfig",
        "RuleEngine",
        "TaskQueue",
        "load_profile",
    ],
    "frontend_server.profile": [
        "CAPABILITIES",
        "FIELD_ENTITIES",
        "OPERATIONS",
        "QUEUEABLE_OPERATIONS",
        "REQUIRED_CODES",
        "REQUIRED_FIELDS",
        "BusinessHours",
        "Capabilities",
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
        "Profile",
        "RestSettings",
        "SoapSettings",
        "canonical_json",
        "load_profile",
        "load_profile_content",
        "profile_digest",
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
        "FenceResult",
        "HisOutcome",
        "IdempotencyKeyFenced",
        "IdempotencyKeyInProgress",
        "IdempotencyKeyReused",
        "InvalidIdempotencyKey",
        "Ledger",
        "LedgerError",
        "NoEffect",
        "OperationError",
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
        "TokenBucket",
        "TransientTaskError",
        "backoff_delay",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_surface_is_pinned(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == EXPECTED[name]
    for attr in module.__all__:
        assert hasattr(module, attr), attr


def test_top_level_reexports_are_the_same_objects() -> None:
    from frontend_server.ledger import Ledger
    from frontend_server.tasks import TaskQueue

    assert frontend_server.Ledger is Ledger
    assert frontend_server.TaskQueue is TaskQueue

from __future__ import annotations

import cloud.readstore
import cloud.sync


def test_readstore_public_surface_is_pinned() -> None:
    assert cloud.readstore.__all__ == [
        "ALL_KINDS",
        "FEATURES",
        "FEATURE_ENUMS",
        "KIND_NAMES",
        "MAX_SLOT_DAYS",
        "Change",
        "ChangePass",
        "DepartmentPage",
        "DoctorPage",
        "FeedError",
        "HospitalPage",
        "HospitalRecord",
        "HospitalSyncStatus",
        "KindStatus",
        "OnlineCheck",
        "PassResult",
        "QueryError",
        "ReadQueries",
        "ReadStore",
        "ReplicaSet",
        "ReplicaState",
        "SlotPage",
        "UnknownHospital",
        "load_hospitals",
        "migrate_readstore",
        "pinyin_initials",
        "validate_page",
    ]


def test_sync_public_surface_is_pinned() -> None:
    assert cloud.sync.__all__ == [
        "DIRECTORY",
        "SLOTS",
        "DriftResult",
        "HospitalSource",
        "Locality",
        "RouterSource",
        "SourceError",
        "SyncEngine",
    ]
    for name in cloud.sync.__all__:
        value = getattr(cloud.sync, name)
        assert not hasattr(value, "__module__") or value.__module__.startswith("cloud.sync")

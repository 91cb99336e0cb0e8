"""The public read store: hospitals and their reference data as patients read them.

Hospital master data (names, aliases with pinyin initials, region, features) is platform
data imported from a file; departments, doctors, schedules and slots are synchronised from
each hospital's change feed by `cloud.sync`. Reads (`ReadQueries`) answer the patient API in
``hplus.cloud.v1`` messages from a current read replica, else the primary.
"""

from __future__ import annotations

from cloud.readstore._apply import ChangePass, PassResult
from cloud.readstore._convert import FEATURE_ENUMS
from cloud.readstore._hospitals import FEATURES, HospitalRecord, load_hospitals, pinyin_initials
from cloud.readstore._query import (
    MAX_SLOT_DAYS,
    DepartmentPage,
    DoctorPage,
    HospitalPage,
    OnlineCheck,
    QueryError,
    ReadQueries,
    SlotPage,
    UnknownHospital,
)
from cloud.readstore._replicas import ReplicaSet, ReplicaState
from cloud.readstore._store import HospitalSyncStatus, KindStatus, ReadStore, migrate_readstore
from cloud.readstore._validate import ALL_KINDS, KIND_NAMES, Change, FeedError, validate_page

__all__ = [
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

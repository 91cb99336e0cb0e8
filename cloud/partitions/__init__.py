"""Business partitions: accounts, patients (and orders, payments) by region.

A record's region is a GB/T 2260 province code: the patient's resident ID-card number's,
else the account's mobile number's (`region_of_id_card`, `region_of_mobile`). The partition
map in the control database says which partition serves each region and where its
database is; `PartitionSet` routes fenced transactions by region on a node, and `split`
moves a partition's regions to new partitions online (copy, catch up, fence, switch).
"""

from __future__ import annotations

from cloud.partitions._map import (
    NAME_PATTERN,
    PartitionInfo,
    PartitionMap,
    PartitionState,
    default_urls,
    migrate_control,
    redact,
)
from cloud.partitions._regions import (
    MAINLAND,
    NORTH,
    PROVINCES,
    SOUTH,
    normalize_mobile,
    region_of_id_card,
    region_of_mobile,
    valid_resident_id,
)
from cloud.partitions._schemas import (
    PartitionError,
    PartitionSchema,
    migrate_partition,
    open_partition_engine,
    reading,
    writing,
)
from cloud.partitions._set import PartitionMoving, PartitionSet
from cloud.partitions._split import SplitReport, SplitTarget, plan_split, split, unfence
from cloud.partitions._status import PartitionStatus, SplitRecord, Status, read_status

__all__ = [
    "MAINLAND",
    "NAME_PATTERN",
    "NORTH",
    "PROVINCES",
    "SOUTH",
    "PartitionError",
    "PartitionInfo",
    "PartitionMap",
    "PartitionMoving",
    "PartitionSchema",
    "PartitionSet",
    "PartitionState",
    "PartitionStatus",
    "SplitRecord",
    "SplitReport",
    "SplitTarget",
    "Status",
    "default_urls",
    "migrate_control",
    "migrate_partition",
    "normalize_mobile",
    "open_partition_engine",
    "plan_split",
    "read_status",
    "reading",
    "redact",
    "region_of_id_card",
    "region_of_mobile",
    "split",
    "unfence",
    "valid_resident_id",
    "writing",
]

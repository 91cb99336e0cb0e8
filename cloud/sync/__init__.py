"""Keeping the public read store in sync with every hospital's directory.

`SyncEngine` pulls each hospital's change feed (``DirectoryService/GetChanges``) through its
tunnel on a schedule, compares digests to find drift, and records per-hospital state in the
read store. It reaches hospitals through `HospitalSource`; `RouterSource` is the node's.
"""

from __future__ import annotations

from cloud.sync._engine import DIRECTORY, SLOTS, DriftResult, SyncEngine
from cloud.sync._source import HospitalSource, Locality, RouterSource, SourceError

__all__ = [
    "DIRECTORY",
    "SLOTS",
    "DriftResult",
    "HospitalSource",
    "Locality",
    "RouterSource",
    "SourceError",
    "SyncEngine",
]

"""The field census: which fields each RPC really carries, per direction and edge release."""

from __future__ import annotations

from cloud.census._census import CensusRow, FieldCensus
from cloud.census._store import CensusFlusher, CensusStore, census_answer, migrate_census

__all__ = [
    "CensusFlusher",
    "CensusRow",
    "CensusStore",
    "FieldCensus",
    "census_answer",
    "migrate_census",
]

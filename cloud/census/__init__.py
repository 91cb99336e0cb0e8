"""The field census: which fields each RPC really carries, per direction and edge release."""

from __future__ import annotations

from cloud.census._census import CensusRow, FieldCensus

__all__ = ["CensusRow", "FieldCensus"]

"""Change-feed benchmark: GetChanges passes from the edge's mirror against the List* path."""

from __future__ import annotations

"""The edge's directory mirror and the change feed served from it.

* :class:`DirectoryMirror`: what the HIS publishes, versioned by content digest, with a
  change log, in a SQLite file of the data directory (a cache, rebuilt when damaged);
* :func:`get_changes` and :func:`directory_digest`: ``DirectoryService.GetChanges`` and
  ``GetDirectoryDigest`` over any :class:`FeedSource` (the mirror, or the fleet
  simulator's in-memory hospitals), with bounded pages and stateless page tokens.

The HIS is read into the mirror by the services' refresher
(``frontend_server.services.DirectoryRefresher``).
"""

from __future__ import annotations

from frontend_server.directory._feed import (
    DATED_KINDS,
    ENTITY_KINDS,
    BucketSelection,
    FeedEntry,
    FeedLimits,
    FeedQuery,
    FeedRequestError,
    FeedSource,
    directory_digest,
    get_changes,
)
from frontend_server.directory._mirror import (
    DirectoryMirror,
    MirrorEntity,
    MirrorError,
    MirrorStats,
    MirrorUpdate,
)

__all__ = [
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
]

"""Failed calls on the node, attributed to an owner and stored (``hplus cloud errors``).

`FailureRecorder` takes the node's failed calls from two feeds — a server interceptor on
the public endpoint (patient API, accounts, edge API) and a tunnel call hook on the gateway
(the node's calls to edges) — attributes each by the one table (`mesh.attribution`) and
writes them to the `FailureStore` in the fleet database, bounded by age and count.
"""

from __future__ import annotations

from cloud.attribution._dashboard import ERRORS_FIELD, errors_by_owner
from cloud.attribution._recorder import FailureRecorder, decode
from cloud.attribution._store import (
    DEFAULT_MAX_ROWS,
    DEFAULT_RETENTION_SECONDS,
    FailureRow,
    FailureStore,
    Group,
    migrate_attribution,
)

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_RETENTION_SECONDS",
    "ERRORS_FIELD",
    "FailureRecorder",
    "FailureRow",
    "FailureStore",
    "Group",
    "decode",
    "errors_by_owner",
    "migrate_attribution",
]

"""The dashboard's "errors by owner" column (``Overview.add_source``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cloud.attribution._store import FailureStore

__all__ = ["ERRORS_FIELD", "errors_by_owner"]

ERRORS_FIELD = "errors_by_owner"
"""The overview row's field the column reads."""


def errors_by_owner(
    store: FailureStore, *, window: float = 3600.0
) -> Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]]:
    """A dashboard source: per hospital, its failed calls by owner, most first.

    The value reads ``his_vendor 12, tunnel_network 1`` (the last ``window`` seconds);
    hospitals without failures get no value.

    Args:
        store: the failure store.
        window: seconds looked back.

    Returns:
        The source (an async callable).
    """

    async def source() -> Mapping[str, Mapping[str, Any]]:
        counts = await store.by_owner(since=time.time() - window)
        return {
            hospital: {
                ERRORS_FIELD: ", ".join(
                    f"{owner} {n}"
                    for owner, n in sorted(owners.items(), key=lambda kv: (-kv[1], kv[0]))
                )
            }
            for hospital, owners in counts.items()
            if hospital  # a call that named no hospital has no row
        }

    return source

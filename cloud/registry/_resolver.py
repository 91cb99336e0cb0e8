"""What the cloud needs to know about an edge's contract release (the handshake hook).

The tunnel handshake carries the edge's contract release; the gateway can ask a
:class:`ReleaseResolver` whether it is known, whether it is retired (refuse the edge) and
whether it is still inside the compat window (accept, but warn). Wiring this into the
gateway is a separate change (issue 5, item 4).
"""

from __future__ import annotations

import enum

import semver
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.registry._check import DEFAULT_WINDOW
from cloud.registry._schema import RELEASES

__all__ = ["ReleaseResolver", "ReleaseStatus"]


class ReleaseStatus(enum.Enum):
    """An edge's release as the registry sees it."""

    ACTIVE = "active"
    """Known and supported."""
    DEPRECATED = "deprecated"
    """Known and supported, but new deployments should not use it."""
    RETIRED = "retired"
    """Known and no longer supported: refuse."""
    UNKNOWN = "unknown"
    """Not a release the registry holds (or not a semantic version): refuse."""


class ReleaseResolver:
    """Answers release questions from the registry database (read-only).

    Args:
        engine: the registry database (migrated).
        window_size: how many of the highest ACTIVE or DEPRECATED releases form the window.
    """

    def __init__(self, engine: AsyncEngine, *, window_size: int = DEFAULT_WINDOW) -> None:
        if window_size < 1:
            raise ValueError(f"window_size must be at least 1, got {window_size}")
        self._engine = engine
        self._window = window_size

    async def has_releases(self) -> bool:
        """Whether the registry holds any release at all (a new node's holds none)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(RELEASES.c.version).limit(1))).first()
        return row is not None

    async def status(self, version: str) -> ReleaseStatus:
        """The lifecycle state of ``version``, or ``UNKNOWN``."""
        async with self._engine.connect() as conn:
            state = (
                await conn.execute(
                    sa.select(RELEASES.c.lifecycle).where(RELEASES.c.version == version)
                )
            ).scalar()
        return ReleaseStatus.UNKNOWN if state is None else ReleaseStatus(state)

    async def in_window(self, version: str) -> bool:
        """Whether ``version`` is among the highest ACTIVE or DEPRECATED releases."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(RELEASES.c.version).where(
                        RELEASES.c.lifecycle.in_(
                            [ReleaseStatus.ACTIVE.value, ReleaseStatus.DEPRECATED.value]
                        )
                    )
                )
            ).scalars()
            versions = sorted(rows, key=semver.Version.parse, reverse=True)
        return version in versions[: self._window]

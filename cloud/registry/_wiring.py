"""Building the registry for a node: migration and the servicer with its collaborators."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.db import migrate
from cloud.registry._check import PushPolicy
from cloud.registry._store import FieldUsage, ReleaseStore
from cloud.registry._tokens import TokenStore
from cloud.registry.servicer import CensusSource, RegistryServicer

__all__ = ["MAX_MESSAGE_BYTES", "build_registry", "migrate_registry"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"

MAX_MESSAGE_BYTES = 33 * 1024 * 1024
"""Receive/send limit the hosting server needs: images are up to 32 MiB, plus framing."""


async def migrate_registry(engine: AsyncEngine) -> None:
    """Bring the registry database to the newest schema."""
    await migrate(engine, _MIGRATIONS, version_table="alembic_version_registry")


async def build_registry(
    engine: AsyncEngine,
    *,
    policy: PushPolicy | None = None,
    field_usage: FieldUsage | None = None,
    census: CensusSource | None = None,
) -> RegistryServicer:
    """Migrate the registry database and build its servicer.

    Args:
        engine: the registry database; owned by the caller (dispose it on shutdown).
        policy: the push policy; default window 5, ``WIRE_JSON``, backward.
        field_usage: census hook; releases edges still report cannot be retired.
        census: answers ``GetFieldCensus`` (UNIMPLEMENTED without it).

    Returns:
        The servicer, for ``registry_pb2_grpc.add_RegistryServiceServicer_to_server``.
    """
    await migrate_registry(engine)
    store = ReleaseStore(engine, policy=policy, field_usage=field_usage)
    return RegistryServicer(store, TokenStore(engine), census=census)

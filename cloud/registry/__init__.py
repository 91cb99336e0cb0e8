"""The contract registry: releases as a service, push policy, labels, lifecycle and tokens.

Releases live in their own database (SQLite file by default, PostgreSQL by URL) with its
own Alembic environment and version table ``alembic_version_registry``. A node serves it
with::

    servicer = await build_registry(engine)
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
"""

from __future__ import annotations

from cloud.registry._check import DEFAULT_WINDOW, PushPolicy
from cloud.registry._errors import (
    AlreadyExists,
    BreakingChanges,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RegistryError,
    Unauthenticated,
    Unimplemented,
)
from cloud.registry._image import MAX_IMAGE_BYTES, Image, canonical_image, load_image
from cloud.registry._model import (
    AuditEntry,
    LabelInfo,
    Lifecycle,
    PushOutcome,
    ReleaseInfo,
    Selector,
)
from cloud.registry._resolver import ReleaseResolver, ReleaseStatus
from cloud.registry._store import FieldUsage, ReleaseStore, parse_version
from cloud.registry._tokens import IssuedToken, Principal, Role, TokenInfo, TokenStore
from cloud.registry._wiring import MAX_MESSAGE_BYTES, build_registry, migrate_registry
from cloud.registry.servicer import ERROR_DOMAIN, CensusSource, RegistryServicer

__all__ = [
    "DEFAULT_WINDOW",
    "ERROR_DOMAIN",
    "MAX_IMAGE_BYTES",
    "MAX_MESSAGE_BYTES",
    "AlreadyExists",
    "AuditEntry",
    "BreakingChanges",
    "CensusSource",
    "Conflict",
    "FailedPrecondition",
    "FieldUsage",
    "Image",
    "InvalidArgument",
    "IssuedToken",
    "LabelInfo",
    "Lifecycle",
    "NotFound",
    "PermissionDenied",
    "Principal",
    "PushOutcome",
    "PushPolicy",
    "RegistryError",
    "RegistryServicer",
    "ReleaseInfo",
    "ReleaseResolver",
    "ReleaseStatus",
    "ReleaseStore",
    "Role",
    "Selector",
    "TokenInfo",
    "TokenStore",
    "Unauthenticated",
    "Unimplemented",
    "build_registry",
    "canonical_image",
    "load_image",
    "migrate_registry",
    "parse_version",
]

"""Who calls ``EdgeService``: the hospital credential, checked on every call, and its rate."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from cloud.accounts import Buckets, Rate
from cloud.errors import ERROR_DOMAIN
from mesh import errors
from mesh.tunnel import bearer_token

__all__ = ["EdgeAuth", "EdgeCaller"]

log = logging.getLogger(__name__)

_EDGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class _Credential(Protocol):
    @property
    def hospital_id(self) -> str: ...

    @property
    def credential_id(self) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeCaller:
    """The hospital a call authenticated as, and the edge it speaks for."""

    hospital_id: str
    """The credential's hospital: the only hospital the call may act for."""
    credential_id: str
    """The credential's public id (safe to log)."""
    edge_id: str
    """The request's ``edge_id`` (checked to be well formed and not another hospital's)."""


class EdgeAuth:
    """Authenticates ``EdgeService`` calls exactly as the tunnel gateway does.

    Every call's ``authorization: Bearer hpc1.<id>.<secret>`` is checked against the fleet
    database (so a revoked credential fails its very next call), then the hospital's call
    rate is charged.

    Args:
        authenticate: the credential store's ``authenticate`` (token → credential or None).
        buckets: where the per-hospital rate lives (in process, or Redis for a cluster).
        calls_per_minute: calls one hospital may make per minute.
        edge_owner: which hospital an edge id is known to belong to, if any (an edge id
            that belongs to another hospital is PERMISSION_DENIED).
    """

    def __init__(
        self,
        authenticate: Callable[[str | None], Awaitable[_Credential | None]],
        buckets: Buckets,
        *,
        calls_per_minute: int,
        edge_owner: Callable[[str], Awaitable[set[str]]] | None = None,
    ) -> None:
        self._authenticate = authenticate
        self._buckets = buckets
        self._rate = Rate(burst=calls_per_minute, per=60.0)
        self._edge_owner = edge_owner

    async def caller(self, metadata: Sequence[tuple[str, Any]], edge_id: str) -> EdgeCaller:
        """The call's hospital, after the credential, the rate and the edge id are checked.

        Raises:
            mesh.errors.Unauthenticated: no or a wrong, unknown or revoked credential.
            mesh.errors.ResourceExhausted: the hospital's call rate is used up.
            mesh.errors.InvalidArgument: ``edge_id`` is missing or malformed.
            mesh.errors.PermissionDenied: ``edge_id`` is an edge of another hospital.
        """
        token = bearer_token(list(metadata))
        if token is None:
            raise errors.Unauthenticated(
                "a hospital credential is required: authorization: Bearer <credential>",
                reason="CREDENTIAL_MISSING",
                domain=ERROR_DOMAIN,
            )
        found = await self._authenticate(token)
        if found is None:
            log.warning("edge api: refused a call with an unknown or revoked credential")
            raise errors.Unauthenticated(
                "the hospital credential is unknown or revoked",
                reason="CREDENTIAL_INVALID",
                domain=ERROR_DOMAIN,
            )
        hospital = found.hospital_id
        wait = await self._buckets.take(f"edge-api:{hospital}", self._rate)
        if wait is not None:
            log.warning("edge api: hospital %s exceeded its call rate", hospital)
            raise errors.ResourceExhausted(
                f"hospital {hospital} exceeded {self._rate.burst} calls per minute",
                reason="EDGE_RATE_LIMITED",
                domain=ERROR_DOMAIN,
                retry_delay=wait,
            )
        if not _EDGE_ID.match(edge_id):
            raise errors.InvalidArgument(
                "edge_id is required",
                reason="EDGE_ID_INVALID",
                domain=ERROR_DOMAIN,
                field_violations=[
                    ("edge_id", "1-128 characters of letters, digits, '.', '_', ':' or '-'")
                ],
            )
        if self._edge_owner is not None:
            owners = await self._edge_owner(edge_id)
            if owners and hospital not in owners:
                log.warning(
                    "edge api: hospital %s (credential %s) spoke for edge %s of %s",
                    hospital,
                    found.credential_id,
                    edge_id,
                    ", ".join(sorted(owners)),
                )
                raise errors.PermissionDenied(
                    f"edge {edge_id} is not an edge of hospital {hospital}",
                    reason="EDGE_OF_ANOTHER_HOSPITAL",
                    domain=ERROR_DOMAIN,
                )
        return EdgeCaller(hospital_id=hospital, credential_id=found.credential_id, edge_id=edge_id)

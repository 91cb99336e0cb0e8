"""``hplus.cloud.v1.RegistryService``: validates, translates and calls the release store.

Authorisation happens in one place, the :func:`_rpc` decorator: each method names the role
it needs. Errors leave through the cloud's one mapping (``CLOUD_ERRORS``): every
:class:`~cloud.registry._errors.RegistryError` is a ``mesh.errors`` tree error and is sent
with its ``google.rpc.Status`` details; anything else is a bug, logged and answered with
INTERNAL and a correlation id.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from cloud.errors import CLOUD_ERRORS
from cloud.registry._check import PushPolicy, counts_of, grouped
from cloud.registry._convert import (
    LIFECYCLE_FROM_PB,
    digest_hex,
    digest_pb,
    label_pb,
    release_pb,
    selector_of,
)
from cloud.registry._errors import (
    ERROR_DOMAIN,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unimplemented,
)
from cloud.registry._store import ReleaseStore
from cloud.registry._tokens import Principal, Role, TokenStore
from hplus.cloud.v1 import registry_pb2, registry_pb2_grpc

__all__ = ["ERROR_DOMAIN", "CensusSource", "RegistryServicer"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[["RegistryServicer", Req, Principal], Awaitable[Resp]]
Method = Callable[["RegistryServicer", Req, Context], Awaitable[Resp]]

CensusSource = Callable[
    [registry_pb2.GetFieldCensusRequest], Awaitable[registry_pb2.GetFieldCensusResponse]
]
"""Answers ``GetFieldCensus`` (the field census, issue 5 item 4/5, plugs in here)."""


def _bearer(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip() or None
    return None


def _rpc(role: Role) -> Callable[[Handler[Req, Resp]], Method[Req, Resp]]:
    """Authorise for ``role``, then run the handler with the caller's principal."""

    def decorate(handler: Handler[Req, Resp]) -> Method[Req, Resp]:
        @functools.wraps(handler)
        async def method(self: RegistryServicer, request: Req, context: Context) -> Resp:
            principal = await self._tokens.authenticate(_bearer(context))
            if principal is None:
                raise Unauthenticated(
                    "missing or invalid registry token (authorization: Bearer hpr1.…)"
                )
            if not principal.role.allows(role):
                raise PermissionDenied(
                    f"{handler.__name__} needs the {role.value} role; "
                    f"token {principal.name!r} has {principal.role.value}"
                )
            return await handler(self, request, principal)

        return method

    return decorate


@CLOUD_ERRORS.servicer
class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """The contract registry service.

    Args:
        store: releases, labels and lifecycle.
        tokens: who may call what.
        census: answers ``GetFieldCensus``; without it the method is UNIMPLEMENTED.
    """

    def __init__(
        self, store: ReleaseStore, tokens: TokenStore, *, census: CensusSource | None = None
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._census = census

    @property
    def policy(self) -> PushPolicy:
        """The push policy in force."""
        return self._store.policy

    @_rpc(Role.RELEASE_MANAGER)
    async def PushRelease(
        self, request: registry_pb2.PushReleaseRequest, principal: Principal
    ) -> registry_pb2.PushReleaseResponse:
        """Publish a release after the compat check."""
        expected = (
            digest_hex(request.expected_digest, field="expected_digest")
            if request.HasField("expected_digest")
            else None
        )
        if not request.version:
            raise InvalidArgument("version", "required")
        outcome = await self._store.push(
            version=request.version,
            image=request.image,
            actor=principal.name,
            notes=request.notes,
            labels=list(request.labels),
            approvals=list(request.approvals),
            window_size=request.window_size,
            expected_digest=expected,
            validate_only=request.validate_only,
            request_id=request.request_id,
        )
        return registry_pb2.PushReleaseResponse(
            release=release_pb(outcome.release), created=outcome.created, check=outcome.report
        )

    @_rpc(Role.SERVICE)
    async def GetRelease(
        self, request: registry_pb2.GetReleaseRequest, principal: Principal
    ) -> registry_pb2.GetReleaseResponse:
        """Return one release."""
        if not request.HasField("release"):
            raise InvalidArgument("release", "required: set version, label or digest")
        full = request.view == registry_pb2.RELEASE_VIEW_FULL
        info = await self._store.get(selector_of(request.release, field="release"), full=full)
        return registry_pb2.GetReleaseResponse(release=release_pb(info, full=full))

    @_rpc(Role.SERVICE)
    async def ListReleases(
        self, request: registry_pb2.ListReleasesRequest, principal: Principal
    ) -> registry_pb2.ListReleasesResponse:
        """List releases, highest version first."""
        states = [LIFECYCLE_FROM_PB[s] for s in request.lifecycles if s in LIFECYCLE_FROM_PB]
        if registry_pb2.RELEASE_LIFECYCLE_UNSPECIFIED in request.lifecycles:
            states = []  # "any"
        infos, token = await self._store.list_releases(
            lifecycles=states,
            label=request.label or None,
            major=request.major_version if request.HasField("major_version") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return registry_pb2.ListReleasesResponse(
            releases=[release_pb(i) for i in infos], next_page_token=token
        )

    @_rpc(Role.SERVICE)
    async def DiffReleases(
        self, request: registry_pb2.DiffReleasesRequest, principal: Principal
    ) -> registry_pb2.DiffReleasesResponse:
        """The parameter-change list between two releases."""
        if not request.HasField("base"):
            raise InvalidArgument("base", "required: set version, label or digest")
        which = request.WhichOneof("target")
        base_info, target, _, findings = await self._store.diff(
            selector_of(request.base, field="base"),
            target=(
                selector_of(request.target_release, field="target_release")
                if which == "target_release"
                else None
            ),
            target_image=request.target_image if which == "target_image" else None,
            categories=PushPolicy.categories_from(request.categories),
            approvals=list(request.approvals),
        )
        if request.min_severity:
            findings = [f for f in findings if f.severity >= request.min_severity]
        return registry_pb2.DiffReleasesResponse(
            base=release_pb(base_info),
            target=(
                registry_pb2.Release(digest=digest_pb(target))
                if isinstance(target, str)
                else release_pb(target)
            ),
            findings=findings,
            services=grouped(findings),
            counts=counts_of(findings),
        )

    @_rpc(Role.SERVICE)
    async def CheckRelease(
        self, request: registry_pb2.CheckReleaseRequest, principal: Principal
    ) -> registry_pb2.CheckReleaseResponse:
        """Check a candidate against the compat window; stores nothing."""
        which = request.WhichOneof("candidate")
        report = await self._store.check(
            image=request.candidate_image if which == "candidate_image" else None,
            selector=(
                selector_of(request.candidate_release, field="candidate_release")
                if which == "candidate_release"
                else None
            ),
            candidate_version=request.candidate_version,
            window_size=request.window_size,
            directions=[d for d in request.directions if d],
            categories=PushPolicy.categories_from(request.categories),
            approvals=list(request.approvals),
            counts_only=request.counts_only,
        )
        return registry_pb2.CheckReleaseResponse(report=report)

    @_rpc(Role.RELEASE_MANAGER)
    async def SetLabel(
        self, request: registry_pb2.SetLabelRequest, principal: Principal
    ) -> registry_pb2.SetLabelResponse:
        """Create or move a label (compare-and-set)."""
        if not request.label:
            raise InvalidArgument("label", "required")
        if not request.HasField("release"):
            raise InvalidArgument("release", "required: set version, label or digest")
        label, previous = await self._store.set_label(
            request.label,
            selector_of(request.release, field="release"),
            actor=principal.name,
            expected_digest=(
                digest_hex(request.expected_digest, field="expected_digest")
                if request.HasField("expected_digest")
                else None
            ),
            create_only=request.create_only,
            request_id=request.request_id,
        )
        return registry_pb2.SetLabelResponse(label=label_pb(label), previous_version=previous)

    @_rpc(Role.RELEASE_MANAGER)
    async def DeleteLabel(
        self, request: registry_pb2.DeleteLabelRequest, principal: Principal
    ) -> registry_pb2.DeleteLabelResponse:
        """Remove a label."""
        if not request.label:
            raise InvalidArgument("label", "required")
        label = await self._store.delete_label(
            request.label,
            actor=principal.name,
            expected_digest=(
                digest_hex(request.expected_digest, field="expected_digest")
                if request.HasField("expected_digest")
                else None
            ),
            request_id=request.request_id,
        )
        return registry_pb2.DeleteLabelResponse(label=label_pb(label))

    @_rpc(Role.RELEASE_MANAGER)
    async def SetLifecycle(
        self, request: registry_pb2.SetLifecycleRequest, principal: Principal
    ) -> registry_pb2.SetLifecycleResponse:
        """Move a release through its lifecycle."""
        if not request.version:
            raise InvalidArgument("version", "required")
        state = LIFECYCLE_FROM_PB.get(request.lifecycle)
        if state is None:
            raise InvalidArgument("lifecycle", "required: ACTIVE, DEPRECATED or RETIRED")
        info = await self._store.set_lifecycle(
            request.version,
            state,
            actor=principal.name,
            reason=request.reason,
            request_id=request.request_id,
        )
        return registry_pb2.SetLifecycleResponse(release=release_pb(info))

    @_rpc(Role.SERVICE)
    async def GetFieldCensus(
        self, request: registry_pb2.GetFieldCensusRequest, principal: Principal
    ) -> registry_pb2.GetFieldCensusResponse:
        """The field census, from the census component when this node runs one."""
        if self._census is None:
            raise Unimplemented("the field census is not enabled on this node")
        return await self._census(request)

"""Lifecycle: a release goes ACTIVE → DEPRECATED → RETIRED, never back, and is never deleted."""

from __future__ import annotations

import dataclasses

from cloud.registry._audit import _AuditLog
from cloud.registry._errors import Conflict, FailedPrecondition
from cloud.registry._model import Lifecycle, ReleaseInfo, Selector
from cloud.registry._schema import RELEASES
from cloud.registry._storecore import _check_request_id, _now, parse_version

__all__: list[str] = []


class _Lifecycle(_AuditLog):
    """Moves releases through their lifecycle."""

    async def set_lifecycle(
        self,
        version: str,
        state: Lifecycle,
        *,
        actor: str,
        reason: str = "",
        request_id: str = "",
    ) -> ReleaseInfo:
        """Move a release through its lifecycle; see ``SetLifecycle`` in registry.proto.

        Setting the state a release already has succeeds and changes nothing.

        Raises:
            InvalidArgument: bad version or request id.
            NotFound: no such release.
            FailedPrecondition: the release is retired, still labelled, or still in the field.
        """
        _check_request_id(request_id)
        parse_version(version)
        in_field = 0
        if state is Lifecycle.RETIRED and self._field_usage is not None:
            in_field = await self._field_usage(version)
        async with self._engine.begin() as conn:
            rid = await self._resolve(conn, Selector(version=version), "version")
            info = await self._by_id(conn, rid)
            if info.lifecycle is state:
                return info
            if info.lifecycle is Lifecycle.RETIRED:
                raise FailedPrecondition(
                    "RELEASE_RETIRED", f"release {version} is retired; retirement is final"
                )
            if state is Lifecycle.RETIRED:
                if info.labels:
                    raise FailedPrecondition(
                        "RELEASE_LABELLED",
                        f"release {version} is still labelled {', '.join(info.labels)}; "
                        "move or delete the labels first",
                    )
                if in_field:
                    raise FailedPrecondition(
                        "RELEASE_IN_FIELD", f"{in_field} edge(s) still report release {version}"
                    )
            now = _now()
            changed = await conn.execute(
                RELEASES.update()
                .where(
                    RELEASES.c.release_id == rid,
                    RELEASES.c.lifecycle == info.lifecycle.value,
                )
                .values(lifecycle=state.value, lifecycle_changed_at=now)
            )
            if changed.rowcount != 1:
                raise Conflict(f"release {version} changed state concurrently; retry")
            await self._audit(
                conn,
                actor,
                "lifecycle.set",
                version,
                previous=info.lifecycle.value,
                lifecycle=state.value,
                reason=reason,
                request_id=request_id,
            )
            return dataclasses.replace(info, lifecycle=state, lifecycle_changed_at=now)

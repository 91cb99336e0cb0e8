"""The registry's audit log: one row per change, written in the change's transaction."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.registry._model import AuditEntry
from cloud.registry._schema import AUDIT
from cloud.registry._storecore import _aware, _now, _StoreCore

__all__: list[str] = []


class _AuditLog(_StoreCore):
    """Writes and reads the audit log."""

    async def audit(self, *, limit: int = 100) -> list[AuditEntry]:
        """The newest audit entries, newest first."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(AUDIT).order_by(AUDIT.c.audit_id.desc()).limit(limit))
            ).all()
        return [
            AuditEntry(
                at=_aware(r.at),
                actor=r.actor,
                action=r.action,
                target=r.target,
                details=json.loads(r.details_json),
            )
            for r in rows
        ]

    async def _audit(
        self, conn: AsyncConnection, actor: str, action: str, target: str, **details: Any
    ) -> None:
        await conn.execute(
            AUDIT.insert().values(
                at=_now(),
                actor=actor,
                action=action,
                target=target,
                details_json=json.dumps(details, sort_keys=True),
            )
        )

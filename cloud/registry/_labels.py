"""Labels: movable names of releases, created and moved with compare-and-set."""

from __future__ import annotations

import datetime as dt
import functools
import json

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.registry._audit import _AuditLog
from cloud.registry._errors import AlreadyExists, Conflict, FailedPrecondition, NotFound
from cloud.registry._model import LabelInfo, Lifecycle, Selector
from cloud.registry._schema import LABELS, RELEASES, REQUESTS
from cloud.registry._storecore import _aware, _check_label, _check_request_id, _now
from mesh.retry import RetryPolicy

__all__: list[str] = []

# A label write that lost a race to create the same label is tried once more: the second
# attempt sees the winner's row and moves it with compare-and-set instead.
_LOST_CREATE_RACE = RetryPolicy(initial=0.01, maximum=0.01, attempts=2, deadline=None)


def _lost_create_race(err: BaseException) -> bool:
    """A concurrent insert of the same unique row won (its commit came first)."""
    return isinstance(err, IntegrityError)


class _Labels(_AuditLog):
    """Creates, moves and deletes labels."""

    async def _label(self, conn: AsyncConnection, name: str) -> LabelInfo | None:
        row = (
            await conn.execute(
                sa.select(
                    LABELS.c.name,
                    LABELS.c.updated_at,
                    LABELS.c.updated_by,
                    RELEASES.c.version,
                    RELEASES.c.digest_sha256,
                )
                .select_from(LABELS.join(RELEASES))
                .where(LABELS.c.name == name)
            )
        ).first()
        if row is None:
            return None
        return LabelInfo(
            name=row.name,
            version=row.version,
            digest=row.digest_sha256,
            updated_at=_aware(row.updated_at),
            updated_by=row.updated_by,
        )

    async def set_label(
        self,
        name: str,
        selector: Selector,
        *,
        actor: str,
        expected_digest: str | None = None,
        create_only: bool = False,
        request_id: str = "",
    ) -> tuple[LabelInfo, str]:
        """Create or move a label (compare-and-set with ``expected_digest``).

        Retrying a move that already happened succeeds again: a label already pointing at
        the target is reported as it is.

        Returns:
            The label after the change and the version it pointed at before ('' if new).

        Raises:
            InvalidArgument: bad label name or selector.
            NotFound: the release does not exist.
            FailedPrecondition: the release is retired.
            Conflict: the label points elsewhere than ``expected_digest``.
            AlreadyExists: ``create_only`` and the label exists.
        """
        _check_request_id(request_id)
        _check_label(name, "label")
        set_once = functools.partial(
            self._set_label_once,
            name,
            selector,
            actor=actor,
            expected_digest=expected_digest,
            create_only=create_only,
            request_id=request_id,
        )
        try:
            result: tuple[LabelInfo, str] = await _LOST_CREATE_RACE.retrying(
                retry_on=_lost_create_race
            )(set_once)
        except IntegrityError:
            raise Conflict(f"label {name!r} was changed concurrently; retry") from None
        return result

    async def _set_label_once(
        self,
        name: str,
        selector: Selector,
        *,
        actor: str,
        expected_digest: str | None,
        create_only: bool,
        request_id: str,
    ) -> tuple[LabelInfo, str]:
        """One attempt of :meth:`set_label`, in one transaction.

        Raises:
            IntegrityError: a concurrent create of the same label won (retried: the next
                attempt sees it).
        """
        try:
            async with self._engine.begin() as conn:
                rid = await self._resolve(conn, selector, "release")
                target = await self._by_id(conn, rid)
                current = await self._label(conn, name)
                if current is not None and current.digest == target.digest:
                    return current, current.version
                if target.lifecycle is Lifecycle.RETIRED:
                    raise FailedPrecondition(
                        "RELEASE_RETIRED", f"release {target.version} is retired"
                    )
                if current is not None and create_only:
                    raise AlreadyExists(f"label {name!r} exists (at {current.version})")
                if expected_digest is not None and (
                    current is None or current.digest != expected_digest
                ):
                    where = "does not exist" if current is None else f"is at {current.version}"
                    raise Conflict(f"label {name!r} {where}, not at sha256:{expected_digest}")
                now = _now()
                if current is None:
                    await conn.execute(
                        LABELS.insert().values(
                            name=name, release_id=rid, updated_at=now, updated_by=actor
                        )
                    )
                else:
                    # Compare-and-set in the statement itself: a concurrent move between
                    # our read and this write makes it match no row.
                    moved = await conn.execute(
                        LABELS.update()
                        .where(
                            LABELS.c.name == name,
                            LABELS.c.release_id
                            == sa.select(RELEASES.c.release_id)
                            .where(RELEASES.c.digest_sha256 == current.digest)
                            .scalar_subquery(),
                        )
                        .values(release_id=rid, updated_at=now, updated_by=actor)
                    )
                    if moved.rowcount != 1:
                        raise Conflict(f"label {name!r} was moved concurrently; retry")
                await self._audit(
                    conn,
                    actor,
                    "label.set",
                    name,
                    version=target.version,
                    digest=target.digest,
                    previous=current.version if current else None,
                    request_id=request_id,
                )
                after = LabelInfo(name, target.version, target.digest, now, actor)
                return after, current.version if current else ""
        except IntegrityError:
            if create_only:
                raise AlreadyExists(f"label {name!r} exists") from None
            raise

    async def delete_label(
        self,
        name: str,
        *,
        actor: str,
        expected_digest: str | None = None,
        request_id: str = "",
    ) -> LabelInfo:
        """Remove a label (the release is unaffected).

        A retry with the same ``request_id`` returns the first answer.

        Raises:
            InvalidArgument: bad label name or request id.
            NotFound: no such label (on the first attempt).
            Conflict: the label points elsewhere than ``expected_digest``.
        """
        _check_request_id(request_id)
        _check_label(name, "label")
        async with self._engine.begin() as conn:
            if request_id:
                done = (
                    await conn.execute(
                        sa.select(REQUESTS.c.response).where(
                            REQUESTS.c.request_id == request_id,
                            REQUESTS.c.method == "DeleteLabel",
                        )
                    )
                ).scalar()
                if done is not None:
                    d = json.loads(bytes(done))
                    return LabelInfo(
                        d["name"],
                        d["version"],
                        d["digest"],
                        dt.datetime.fromisoformat(d["updated_at"]),
                        d["updated_by"],
                    )
            current = await self._label(conn, name)
            if current is None:
                raise NotFound("label", name)
            if expected_digest is not None and current.digest != expected_digest:
                raise Conflict(
                    f"label {name!r} is at {current.version}, not at sha256:{expected_digest}"
                )
            gone = await conn.execute(
                LABELS.delete().where(
                    LABELS.c.name == name,
                    LABELS.c.updated_at == current.updated_at,
                )
            )
            if gone.rowcount != 1:
                raise Conflict(f"label {name!r} was moved concurrently; retry")
            await self._audit(
                conn,
                actor,
                "label.delete",
                name,
                version=current.version,
                digest=current.digest,
                request_id=request_id,
            )
            if request_id:
                record = {
                    "name": current.name,
                    "version": current.version,
                    "digest": current.digest,
                    "updated_at": current.updated_at.isoformat(),
                    "updated_by": current.updated_by,
                }
                await conn.execute(
                    REQUESTS.insert().values(
                        request_id=request_id,
                        method="DeleteLabel",
                        response=json.dumps(record).encode(),
                        created_at=_now(),
                    )
                )
            return current

"""Patients bound to accounts, after a hospital confirms them; every write once per request.

A patient row lives in the patient's region (its resident ID card's province, else its
account's); the account's list of patients (``account_patients``) and the outcome of each
write by ``request_id`` (``account_requests``) live in the account's region. A bind writes
the patient first, then the link with the outcome in one transaction: a bind cut between
the two leaves a patient row no account lists, which the retry (same ``request_id``) finds
and links. The hospital's registration is idempotent by a key derived from the account and
the ``request_id``, so a retry after a lost answer never registers the patient twice.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import sqlalchemy as sa
from google.protobuf import message as pb_message
from google.rpc import status_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.accounts._hospital import HospitalPatients, Identity
from cloud.accounts._schema import (
    ACCOUNT_PATIENTS,
    ACCOUNTS,
    IDEMPOTENCY,
    PATIENT_HOSPITALS,
    PATIENTS,
)
from cloud.accounts._signin import Clock, Session, new_id
from cloud.accounts._validate import mask_id_number, mask_phone, routed_id
from cloud.errors import ERROR_DOMAIN
from cloud.partitions import PartitionSet, region_of_id_card
from hplus.cloud.v1 import account_pb2, patient_pb2
from mesh import errors

__all__ = ["KnownHospital", "Patients", "fingerprint"]

KnownHospital = Callable[[str], Awaitable[bool]]
"""Whether a hospital id names a hospital of the platform."""

_KEEP_REQUESTS = dt.timedelta(days=7)
_NOT_RECORDED = (
    errors.ResourceExhausted,
    errors.Aborted,
    errors.Cancelled,
    errors.Unauthenticated,
    errors.PermissionDenied,
)
"""Hospital answers that say nothing final about the request (a retry may succeed)."""


def fingerprint(request: pb_message.Message) -> str:
    """The digest of a request without its ``request_id``: what a retry must repeat."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _bound(row: Any, hospitals: Sequence[Any], bound_at: dt.datetime) -> account_pb2.BoundPatient:
    out = account_pb2.BoundPatient(
        patient_id=row.patient_id,
        name=row.name,
        id_card_type=row.id_card_type,
        id_card_number_masked=mask_id_number(row.id_card_number),
        phone_masked=f"+86{mask_phone(row.phone)}" if row.phone else "",
        region_code=row.region,
    )
    out.bind_time.FromDatetime(bound_at)
    for h in hospitals:
        item = out.hospitals.add(
            hospital_id=h.hospital_id, hospital_patient_id=h.hospital_patient_id
        )
        item.bind_time.FromDatetime(_aware(h.bound_at))
    return out


async def _load(
    conn: AsyncConnection, account_id: str, patient_ids: Sequence[str]
) -> dict[str, tuple[Any, list[Any]]]:
    rows = (
        await conn.execute(
            sa.select(PATIENTS).where(
                PATIENTS.c.patient_id.in_(patient_ids), PATIENTS.c.account_id == account_id
            )
        )
    ).all()
    links = (
        await conn.execute(
            sa.select(PATIENT_HOSPITALS)
            .where(PATIENT_HOSPITALS.c.patient_id.in_([r.patient_id for r in rows]))
            .order_by(PATIENT_HOSPITALS.c.bound_at, PATIENT_HOSPITALS.c.hospital_id)
        )
    ).all()
    out: dict[str, tuple[Any, list[Any]]] = {r.patient_id: (r, []) for r in rows}
    for link in links:
        out[link.patient_id][1].append(link)
    return out


class Patients:
    """ListPatients, BindPatient and UnbindPatient.

    Args:
        parts: the partitions.
        hospitals: asks hospitals about patients.
        known_hospital: whether a hospital id is one of the platform's.
        max_patients: patients one account may have.
        clock: the current time.
    """

    def __init__(
        self,
        parts: PartitionSet,
        hospitals: HospitalPatients,
        known_hospital: KnownHospital,
        *,
        max_patients: int,
        clock: Clock,
    ) -> None:
        self._parts = parts
        self._hospitals = hospitals
        self._known = known_hospital
        self.max_patients = max_patients
        self._clock = clock

    async def list(self, session: Session) -> list[account_pb2.BoundPatient]:
        """The account's patients, oldest binding first."""

        async def links(conn: AsyncConnection) -> list[Any]:
            query = (
                sa.select(ACCOUNT_PATIENTS)
                .where(ACCOUNT_PATIENTS.c.account_id == session.account_id)
                .order_by(ACCOUNT_PATIENTS.c.bound_at, ACCOUNT_PATIENTS.c.patient_id)
            )
            return list((await conn.execute(query)).all())

        listed = await self._parts.read(session.region, links)
        by_region: dict[str, list[str]] = {}
        for link in listed:
            region = routed_id(link.patient_id) or session.region
            by_region.setdefault(region, []).append(link.patient_id)
        found: dict[str, tuple[Any, list[Any]]] = {}
        for region, ids in by_region.items():

            async def load(conn: AsyncConnection, ids: list[str] = ids) -> dict[str, Any]:
                return await _load(conn, session.account_id, ids)

            found.update(await self._parts.read(region, load))
        return [
            _bound(found[link.patient_id][0], found[link.patient_id][1], _aware(link.bound_at))
            for link in listed
            if link.patient_id in found
        ]

    async def at_hospital(
        self, session: Session, hospital_id: str, id_card_type: int, id_card_number: str
    ) -> tuple[str, str] | None:
        """The account's patient with this document, as ``hospital_id`` knows them.

        Returns:
            ``(patient_id, hospital_patient_id)``, or ``None`` when the account has no such
            patient or the hospital has not confirmed them (BindPatient first).
        """
        number = id_card_number.strip().upper()
        region = (
            region_of_id_card(number)
            if id_card_type == patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
            else None
        ) or session.region

        async def find(conn: AsyncConnection) -> tuple[str, str] | None:
            row = (
                await conn.execute(
                    sa.select(PATIENTS.c.patient_id, PATIENT_HOSPITALS.c.hospital_patient_id)
                    .join(
                        PATIENT_HOSPITALS,
                        PATIENT_HOSPITALS.c.patient_id == PATIENTS.c.patient_id,
                    )
                    .where(
                        PATIENTS.c.account_id == session.account_id,
                        PATIENTS.c.id_card_type == id_card_type,
                        PATIENTS.c.id_card_number == number,
                        PATIENT_HOSPITALS.c.hospital_id == hospital_id,
                    )
                )
            ).first()
            return None if row is None else (str(row[0]), str(row[1]))

        try:
            return await self._parts.read(region, find)
        except KeyError:  # a region no partition serves
            return None

    async def _recall(
        self, session: Session, request_id: str, method: str, digest: str
    ) -> pb_message.Message | None:
        async def recall(conn: AsyncConnection) -> Any:
            return (
                await conn.execute(
                    sa.select(IDEMPOTENCY).where(
                        IDEMPOTENCY.c.account_id == session.account_id,
                        IDEMPOTENCY.c.request_id == request_id,
                    )
                )
            ).first()

        row = await self._parts.read(session.region, recall)
        if row is None:
            return None
        if row.method != method or row.fingerprint != digest:
            raise errors.InvalidArgument(
                "request_id was used for another request",
                reason="IDEMPOTENCY_KEY_REUSED",
                domain=ERROR_DOMAIN,
                field_violations=[("request_id", "already used with other parameters")],
            )
        if not row.ok:
            raise errors.StatusError.from_status(status_pb2.Status.FromString(row.outcome))
        response = _RESPONSES[method]()
        response.ParseFromString(row.outcome)
        return response

    async def _record(
        self,
        conn: AsyncConnection,
        session: Session,
        request_id: str,
        method: str,
        digest: str,
        outcome: pb_message.Message | errors.StatusError,
    ) -> None:
        now = self._clock()
        await conn.execute(
            IDEMPOTENCY.delete().where(
                IDEMPOTENCY.c.account_id == session.account_id,
                IDEMPOTENCY.c.created_at < now - _KEEP_REQUESTS,
            )
        )
        ok = not isinstance(outcome, errors.StatusError)
        data = (
            outcome.to_status(domain=ERROR_DOMAIN)
            if isinstance(outcome, errors.StatusError)
            else outcome
        ).SerializeToString()
        await conn.execute(
            IDEMPOTENCY.insert().values(
                account_id=session.account_id,
                request_id=request_id,
                region=session.region,
                method=method,
                fingerprint=digest,
                ok=ok,
                outcome=data,
                created_at=now,
            )
        )

    async def _refuse(
        self, session: Session, request_id: str, method: str, digest: str, err: errors.StatusError
    ) -> errors.StatusError:
        """Record a final refusal as the request's outcome and return it to raise."""

        async def record(conn: AsyncConnection) -> None:
            await self._record(conn, session, request_id, method, digest, err)

        with contextlib.suppress(IntegrityError):  # a concurrent retry recorded it first
            await self._parts.write(session.region, record)
        return err

    async def bind(
        self,
        session: Session,
        *,
        request_id: str,
        digest: str,
        hospital_id: str,
        who: Identity,
        register: bool,
        birth_date: dt.date | None,
    ) -> account_pb2.BindPatientResponse:
        """Bind ``who`` to the account once ``hospital_id`` confirms (or registers) them.

        Raises:
            mesh.errors.StatusError: see ``AccountService.BindPatient``.
        """
        method = "BindPatient"
        earlier = await self._recall(session, request_id, method, digest)
        if earlier is not None:
            assert isinstance(earlier, account_pb2.BindPatientResponse)
            return earlier
        if not await self._known(hospital_id):
            raise errors.NotFound(
                f"no hospital {hospital_id!r}",
                reason="HOSPITAL_NOT_FOUND",
                domain=ERROR_DOMAIN,
                resource=errors.Resource("hospital", hospital_id),
            )
        region = (
            region_of_id_card(who.id_card_number)
            if who.id_card_type == patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
            else None
        ) or session.region

        async def mine(conn: AsyncConnection) -> Any:
            query = sa.select(PATIENTS).where(
                PATIENTS.c.account_id == session.account_id,
                PATIENTS.c.id_card_type == who.id_card_type,
                PATIENTS.c.id_card_number == who.id_card_number,
            )
            return (await conn.execute(query)).first()

        async def count(conn: AsyncConnection) -> int:
            query = (
                sa.select(sa.func.count())
                .select_from(ACCOUNT_PATIENTS)
                .where(ACCOUNT_PATIENTS.c.account_id == session.account_id)
            )
            return int((await conn.execute(query)).scalar_one())

        if (
            await self._parts.read(region, mine) is None
            and await self._parts.read(session.region, count) >= self.max_patients
        ):
            raise self._full()
        try:
            hospital_patient_id = await self._hospitals.find(hospital_id, who)
            registered = False
            if hospital_patient_id is None:
                if not register:
                    raise errors.NotFound(
                        "the hospital has no record of this patient; ask it to register them "
                        "(register_if_not_found)",
                        reason="PATIENT_NOT_FOUND_AT_HOSPITAL",
                        domain=ERROR_DOMAIN,
                        resource=errors.Resource("patient", "", owner=hospital_id),
                    )
                key = hashlib.sha256(f"bind:{session.account_id}:{request_id}".encode()).hexdigest()
                hospital_patient_id, registered = await self._hospitals.register(
                    hospital_id, f"bind-{key[:40]}", who, birth_date
                )
        except errors.ClientError as err:
            if isinstance(err, _NOT_RECORDED):
                raise
            raise await self._refuse(session, request_id, method, digest, err) from None
        now = self._clock()

        async def put(conn: AsyncConnection) -> tuple[str, bool]:
            row = await mine(conn)
            created = row is None
            if created:
                patient_id = new_id(region)
                await conn.execute(
                    PATIENTS.insert().values(
                        patient_id=patient_id,
                        region=region,
                        account_id=session.account_id,
                        name=who.name,
                        id_card_type=who.id_card_type,
                        id_card_number=who.id_card_number,
                        phone=who.phone,
                        medical_card_number=who.medical_card_number,
                        created_at=now,
                    )
                )
            else:
                patient_id = row.patient_id
                changes = {"name": who.name}
                changes.update(
                    {
                        k: v
                        for k, v in (
                            ("phone", who.phone),
                            ("medical_card_number", who.medical_card_number),
                        )
                        if v
                    }
                )
                await conn.execute(
                    PATIENTS.update().where(PATIENTS.c.patient_id == patient_id).values(**changes)
                )
            updated = await conn.execute(
                PATIENT_HOSPITALS.update()
                .where(
                    PATIENT_HOSPITALS.c.patient_id == patient_id,
                    PATIENT_HOSPITALS.c.hospital_id == hospital_id,
                )
                .values(hospital_patient_id=hospital_patient_id)
            )
            if updated.rowcount == 0:
                await conn.execute(
                    PATIENT_HOSPITALS.insert().values(
                        patient_id=patient_id,
                        hospital_id=hospital_id,
                        region=region,
                        hospital_patient_id=hospital_patient_id,
                        app_id=session.app_id,
                        bound_at=now,
                    )
                )
            return patient_id, created

        try:
            patient_id, created = await self._parts.write(region, put)
        except IntegrityError:  # the same person bound concurrently: theirs is ours now
            patient_id, created = await self._parts.write(region, put)

        async def load(conn: AsyncConnection) -> tuple[Any, list[Any]]:
            return (await _load(conn, session.account_id, [patient_id]))[patient_id]

        patient_row, hospitals = await self._parts.read(region, load)

        async def link(conn: AsyncConnection) -> account_pb2.BindPatientResponse | None:
            account = sa.select(ACCOUNTS.c.account_id).where(
                ACCOUNTS.c.account_id == session.account_id
            )
            if conn.dialect.name == "postgresql":
                account = account.with_for_update()  # one bind at a time counts the patients
            await conn.execute(account)
            existing = (
                await conn.execute(
                    sa.select(ACCOUNT_PATIENTS).where(
                        ACCOUNT_PATIENTS.c.account_id == session.account_id,
                        ACCOUNT_PATIENTS.c.patient_id == patient_id,
                    )
                )
            ).first()
            bound_at = now if existing is None else _aware(existing.bound_at)
            if existing is None:
                if await count(conn) >= self.max_patients:
                    return None
                await conn.execute(
                    ACCOUNT_PATIENTS.insert().values(
                        account_id=session.account_id,
                        patient_id=patient_id,
                        region=session.region,
                        bound_at=now,
                    )
                )
            response = account_pb2.BindPatientResponse(
                patient=_bound(patient_row, hospitals, bound_at), registered_at_hospital=registered
            )
            await self._record(conn, session, request_id, method, digest, response)
            return response

        try:
            response = await self._parts.write(session.region, link)
        except IntegrityError:  # a concurrent retry of this request finished first
            again = await self._recall(session, request_id, method, digest)
            assert isinstance(again, account_pb2.BindPatientResponse)
            return again
        if response is None:
            if created:
                await self._drop(region, session.account_id, patient_id)
            raise self._full()
        return response

    def _full(self) -> errors.FailedPrecondition:
        return errors.FailedPrecondition(
            f"the account has {self.max_patients} patients already; unbind one first",
            reason="TOO_MANY_PATIENTS",
            domain=ERROR_DOMAIN,
            metadata={"max_patients": str(self.max_patients)},
        )

    async def _drop(self, region: str, account_id: str, patient_id: str) -> bool:
        async def drop(conn: AsyncConnection) -> bool:
            gone = await conn.execute(
                PATIENTS.delete().where(
                    PATIENTS.c.patient_id == patient_id, PATIENTS.c.account_id == account_id
                )
            )
            await conn.execute(
                PATIENT_HOSPITALS.delete().where(PATIENT_HOSPITALS.c.patient_id == patient_id)
            )
            return bool(gone.rowcount)

        return await self._parts.write(region, drop)

    async def unbind(
        self, session: Session, *, request_id: str, digest: str, patient_id: str, hospital_id: str
    ) -> account_pb2.UnbindPatientResponse:
        """Remove a patient from the account, or only its binding at one hospital.

        Raises:
            mesh.errors.NotFound: the patient (or that binding) is not the account's.
        """
        method = "UnbindPatient"
        earlier = await self._recall(session, request_id, method, digest)
        if earlier is not None:
            assert isinstance(earlier, account_pb2.UnbindPatientResponse)
            return earlier
        region = routed_id(patient_id)
        assert region is not None  # checked by the servicer
        missing = errors.NotFound(
            "no such patient on this account",
            reason="PATIENT_NOT_FOUND",
            domain=ERROR_DOMAIN,
            resource=errors.Resource("patient", patient_id),
        )
        left: tuple[Any, list[Any]] | None = None
        if hospital_id:

            async def unlink(conn: AsyncConnection) -> tuple[Any, list[Any]] | None:
                own = (await _load(conn, session.account_id, [patient_id])).get(patient_id)
                if own is None:
                    return None
                gone = await conn.execute(
                    PATIENT_HOSPITALS.delete().where(
                        PATIENT_HOSPITALS.c.patient_id == patient_id,
                        PATIENT_HOSPITALS.c.hospital_id == hospital_id,
                    )
                )
                if gone.rowcount == 0:
                    return None
                return own[0], [h for h in own[1] if h.hospital_id != hospital_id]

            left = await self._parts.write(region, unlink)
            if left is None:
                raise missing
        elif not await self._drop(region, session.account_id, patient_id):
            raise missing

        async def finish(conn: AsyncConnection) -> account_pb2.UnbindPatientResponse:
            link = (
                await conn.execute(
                    sa.select(ACCOUNT_PATIENTS).where(
                        ACCOUNT_PATIENTS.c.account_id == session.account_id,
                        ACCOUNT_PATIENTS.c.patient_id == patient_id,
                    )
                )
            ).first()
            if left is not None:
                bound_at = self._clock() if link is None else _aware(link.bound_at)
                response = account_pb2.UnbindPatientResponse(
                    removed=False, patient=_bound(left[0], left[1], bound_at)
                )
            else:
                await conn.execute(
                    ACCOUNT_PATIENTS.delete().where(
                        ACCOUNT_PATIENTS.c.account_id == session.account_id,
                        ACCOUNT_PATIENTS.c.patient_id == patient_id,
                    )
                )
                response = account_pb2.UnbindPatientResponse(removed=True)
            await self._record(conn, session, request_id, method, digest, response)
            return response

        return await self._parts.write(session.region, finish)


_RESPONSES: dict[str, type[pb_message.Message]] = {
    "BindPatient": account_pb2.BindPatientResponse,
    "UnbindPatient": account_pb2.UnbindPatientResponse,
}

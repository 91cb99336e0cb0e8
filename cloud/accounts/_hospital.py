"""Asking a hospital about a patient: ``PatientService.FindPatient`` and ``RegisterPatient``.

Calls go through the node's ``HospitalRouter`` (the hospital's tunnel here or on a peer),
with a deadline. A hospital's refusal reaches the app as the hospital sent it, except that
the fields it names are renamed to the app's request (``id_card_number`` →
``patient.id_card_number``), so the app can point at what to correct.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable

import grpc
from google.type import date_pb2

from hplus.cloud.v1 import patient_pb2 as cloud_patient_pb2
from hplus.hospital.v1 import common_pb2, patient_pb2, patient_pb2_grpc
from mesh import errors

__all__ = ["ChannelFor", "HospitalPatients", "Identity"]

ChannelFor = Callable[[str], Awaitable[grpc.aio.Channel]]
"""The router's ``channel_for``: a channel to a hospital, or ``HospitalUnavailable``."""

_FIELDS = {
    "name": "patient.name",
    "id_card_type": "patient.id_card_type",
    "id_card_number": "patient.id_card_number",
    "phone_number": "patient.phone",
    "card_number": "patient.medical_card_number",
    "birth_date": "birth_date",
}
"""The hospital's request fields → BindPatientRequest's."""


@dataclasses.dataclass(frozen=True)
class Identity:
    """A patient's identity as an account gives it (checked and normalised)."""

    name: str = dataclasses.field(repr=False)
    """Full name."""
    id_card_type: int
    """``hplus.cloud.v1.IdCardType`` value."""
    id_card_number: str = dataclasses.field(repr=False)
    """Document number, upper-case."""
    phone: str = dataclasses.field(default="", repr=False)
    """Mobile, E.164, or empty."""
    medical_card_number: str = dataclasses.field(default="", repr=False)
    """The hospital's patient card number, or empty."""


def _hospital_id_type(cloud_type: int) -> int:
    name = cloud_patient_pb2.IdCardType.Name(cloud_type)  # type: ignore[arg-type]
    return int(common_pb2.IdCardType.Value(name))


def _renamed(err: errors.StatusError) -> errors.StatusError:
    """The hospital's error with its field names in the app's request's terms."""
    if not err.field_violations:
        return err
    violations = [
        (_FIELDS.get(v.field, f"hospital.{v.field}"), v.description) for v in err.field_violations
    ]
    return type(err)(
        err.message,
        reason=err.reason,
        domain=err.domain,
        metadata=err.metadata,
        field_violations=violations,
        precondition_violations=err.precondition_violations,
        retry_delay=err.retry_delay,
        resource=err.resource,
    )


class HospitalPatients:
    """FindPatient and RegisterPatient at one hospital, through the router.

    Args:
        channel_for: the router's ``channel_for``.
        timeout: deadline of each call, seconds.
    """

    def __init__(self, channel_for: ChannelFor, *, timeout: float = 10.0) -> None:
        self._channel_for = channel_for
        self._timeout = timeout

    async def _stub(self, hospital_id: str) -> patient_pb2_grpc.PatientServiceAsyncStub:
        channel = await self._channel_for(hospital_id)
        return errors.wrap(patient_pb2_grpc.PatientServiceStub(channel))

    async def find(self, hospital_id: str, who: Identity) -> str | None:
        """The hospital's patient id of ``who`` (same document and name), if it has one.

        Raises:
            mesh.errors.StatusError: the hospital is unreachable (UNAVAILABLE) or refused.
        """
        stub = await self._stub(hospital_id)
        try:
            reply = await stub.FindPatient(
                patient_pb2.FindPatientRequest(
                    id_card_type=_hospital_id_type(who.id_card_type),  # type: ignore[arg-type]
                    id_card_number=who.id_card_number,
                    name=who.name,
                ),
                timeout=self._timeout,
            )
        except errors.StatusError as err:
            raise _renamed(err) from None
        for patient in reply.patients:
            if patient.id_card_number.upper() == who.id_card_number and patient.name == who.name:
                return str(patient.patient_id)
        return None

    async def register(
        self, hospital_id: str, key: str, who: Identity, birth_date: dt.date | None
    ) -> tuple[str, bool]:
        """Register ``who`` at the hospital (idempotent by ``key``).

        Returns:
            The hospital's patient id, and whether this call created the record.

        Raises:
            mesh.errors.StatusError: the hospital is unreachable (UNAVAILABLE) or refused
                (its field violations renamed, e.g. IDENTITY_MISMATCH passes as it is).
        """
        stub = await self._stub(hospital_id)
        request = patient_pb2.RegisterPatientRequest(
            idempotency_key=key,
            name=who.name,
            id_card_type=_hospital_id_type(who.id_card_type),  # type: ignore[arg-type]
            id_card_number=who.id_card_number,
            phone_number=who.phone,
        )
        if birth_date is not None:
            request.birth_date.CopyFrom(
                date_pb2.Date(year=birth_date.year, month=birth_date.month, day=birth_date.day)
            )
        try:
            reply = await stub.RegisterPatient(request, timeout=self._timeout)
        except errors.StatusError as err:
            raise _renamed(err) from None
        return reply.patient.patient_id, reply.created

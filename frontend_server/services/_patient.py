"""``hplus.hospital.v1.PatientService``: registration (a ledger write) and lookup."""

from __future__ import annotations

import grpc
from google.protobuf import message as pb_message

from frontend_server import adapters as d
from frontend_server.ledger import HisOutcome, OperationError
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, require_key, require_mode
from frontend_server.services._errors import HOSPITAL_ERRORS, InvalidRequest
from hplus.hospital.v1 import common_pb2, patient_pb2, patient_pb2_grpc

__all__ = ["PatientServicer"]

_SERVICE = "hplus.hospital.v1.PatientService"
REGISTER = f"{_SERVICE}/RegisterPatient"

Ctx = grpc.aio.ServicerContext

_ID_TYPES = {
    common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD: "RESIDENT",
    common_pb2.ID_CARD_TYPE_PASSPORT: "PASSPORT",
}
_GENDERS = {common_pb2.GENDER_MALE: "M", common_pb2.GENDER_FEMALE: "F"}
_CARDS = {
    common_pb2.CARD_TYPE_UNSPECIFIED: "HOSPITAL",
    common_pb2.CARD_TYPE_HOSPITAL_CARD: "HOSPITAL",
    common_pb2.CARD_TYPE_SOCIAL_SECURITY_CARD: "SOCIAL",
    common_pb2.CARD_TYPE_ELECTRONIC_HEALTH_CARD: "HEALTH",
}


@HOSPITAL_ERRORS.servicer
class PatientServicer(patient_pb2_grpc.PatientServiceServicer):
    """Registers and finds patients.

    Args:
        hospital: the servicers' collaborators.
    """

    def __init__(self, hospital: Hospital) -> None:
        self._h = hospital
        hospital.writes.register_probe(REGISTER, self._probe_register)

    async def RegisterPatient(
        self,
        request: patient_pb2.RegisterPatientRequest,
        context: Ctx[patient_pb2.RegisterPatientRequest, patient_pb2.RegisterPatientResponse],
    ) -> patient_pb2.RegisterPatientResponse:
        """Creates a patient record, or returns the existing one for a known document."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "register_patient")
        registration = _registration(request)

        async def call() -> patient_pb2.RegisterPatientResponse:
            registered = await self._h.adapter.register_patient(registration)
            return patient_pb2.RegisterPatientResponse(
                patient=convert.patient(registered.patient), created=registered.created
            )

        return await self._h.writes.run(
            REGISTER,
            request,
            patient_pb2.RegisterPatientResponse,
            call,
            lambda r: r.patient.patient_id,
        )

    async def FindPatient(
        self,
        request: patient_pb2.FindPatientRequest,
        context: Ctx[patient_pb2.FindPatientRequest, patient_pb2.FindPatientResponse],
    ) -> patient_pb2.FindPatientResponse:
        """Patients by exactly one of document, card or phone (with the name)."""
        require_mode(self._h.profile, "find_patient")
        given = [
            f for f in ("id_card_number", "card_number", "phone_number") if getattr(request, f)
        ]
        if not given:
            raise InvalidRequest(
                [("id_card_number", "required (or card_number, or phone_number with name)")]
            )
        if len(given) > 1:
            raise InvalidRequest([(f, f"give only one of {', '.join(given)}") for f in given[1:]])
        if request.phone_number and not request.name:
            raise InvalidRequest([("name", "required with phone_number")])
        found = await self._h.adapter.find_patients(
            id_number=request.id_card_number,
            card_number=request.card_number,
            phone=_local_phone(request.phone_number),
            name=request.name,
        )
        if request.name:
            found = tuple(p for p in found if p.name == request.name)
        return patient_pb2.FindPatientResponse(patients=[convert.patient(p) for p in found[:20]])

    async def _probe_register(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        if not isinstance(request, patient_pb2.RegisterPatientRequest):
            raise LookupError("no evidence available")
        found = await self._h.adapter.find_patients(id_number=request.id_card_number)
        if len(found) > 1:
            raise LookupError("ambiguous evidence")
        if not found:
            return None
        response = patient_pb2.RegisterPatientResponse(
            patient=convert.patient(found[0]), created=True
        )
        return HisOutcome(receipt=found[0].patient_id, result=response.SerializeToString())


def _local_phone(phone: str) -> str:
    """The contract's E.164 mobile as the HIS keeps it (11 digits for +86)."""
    return phone.removeprefix("+86")


def _registration(request: patient_pb2.RegisterPatientRequest) -> d.PatientRegistration:
    violations = []
    if not request.name:
        violations.append(("name", "required"))
    if not request.id_card_number:
        violations.append(
            ("id_card_number", "required (guardian-only registration is not offered)")
        )
    id_type = _ID_TYPES.get(request.id_card_type)
    if id_type is None:
        violations.append(("id_card_type", "resident ID card or passport"))
    card_type = _CARDS.get(request.card_type)
    if card_type is None:
        violations.append(("card_type", "not offered by this hospital"))
    if violations:
        raise InvalidRequest(violations)
    return d.PatientRegistration(
        name=request.name,
        id_number=request.id_card_number.upper(),
        id_type=id_type or "RESIDENT",
        gender=_GENDERS.get(request.gender, ""),
        birth_date=convert.from_date(request.birth_date),
        phone=_local_phone(request.phone_number),
        address=request.address,
        ethnicity=request.ethnicity,
        card_type=card_type or "HOSPITAL",
        card_number=request.card_number,
        payer=convert.payer_code(request.payer_type),
    )

"""``PatientService`` of a simulated edge: registration and lookup, in memory.

Like a real HIS (and ``tools.his_sim``): a resident ID card must have a valid check digit
and birth date; registering a known document returns the existing record (``created``
false) unless the name differs (``IDENTITY_MISMATCH``); a repeated idempotency key gets the
first answer again. Patients are kept only once registered, so an idle hospital holds none.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Any

from google.protobuf import timestamp_pb2

from frontend_server.services import HOSPITAL_ERRORS
from hplus.hospital.v1 import common_pb2, patient_pb2, patient_pb2_grpc
from tools.fleet_sim.services._common import Ctx, reject
from tools.his_sim import is_valid_id_card

if TYPE_CHECKING:
    from tools.fleet_sim._edge import SimEdge

__all__ = ["FleetPatientServicer", "PatientBook", "register"]

_MAX_PATIENTS = 10_000  # per simulated hospital: a bound on what callers make it hold
_MAX_KEYS = 10_000
_ID_TYPES = (common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD, common_pb2.ID_CARD_TYPE_PASSPORT)


@dataclasses.dataclass
class PatientBook:
    """The patients one simulated hospital knows."""

    by_document: dict[str, patient_pb2.Patient] = dataclasses.field(default_factory=dict)
    keys: dict[str, patient_pb2.RegisterPatientResponse] = dataclasses.field(default_factory=dict)
    numbers: itertools.count[int] = dataclasses.field(default_factory=lambda: itertools.count(1))


@HOSPITAL_ERRORS.servicer
class FleetPatientServicer(patient_pb2_grpc.PatientServiceServicer):
    """Registers and finds patients of one simulated hospital.

    Args:
        edge: the simulated edge.
    """

    def __init__(self, edge: SimEdge) -> None:
        self._edge = edge

    async def RegisterPatient(
        self, request: patient_pb2.RegisterPatientRequest, context: Ctx
    ) -> patient_pb2.RegisterPatientResponse:
        """Creates a patient, or returns the one holding the document."""
        await self._edge.faults.delay()
        violations = []
        if not request.idempotency_key:
            violations.append(("idempotency_key", "required"))
        if not request.name:
            violations.append(("name", "required"))
        if request.id_card_type not in _ID_TYPES:
            violations.append(("id_card_type", "resident ID card or passport"))
        number = request.id_card_number.upper()
        if not number:
            violations.append(("id_card_number", "required"))
        elif (
            request.id_card_type == common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
            and not is_valid_id_card(number)
        ):
            violations.append(("id_card_number", "not a valid resident ID card number"))
        if violations:
            fields = ", ".join(f for f, _ in violations)
            reject("INVALID_ARGUMENT", f"invalid request: {fields}",
                         violations=violations)  # fmt: skip
        book = self._edge.patients()
        replay = book.keys.get(request.idempotency_key)
        if replay is not None:
            return replay
        known = book.by_document.get(number)
        if known is not None:
            if known.name != request.name:
                reject("FAILED_PRECONDITION",
                             "the document is known under another name",
                             reason="IDENTITY_MISMATCH")  # fmt: skip
            response = patient_pb2.RegisterPatientResponse(patient=known, created=False)
        else:
            if len(book.by_document) >= _MAX_PATIENTS:
                reject("RESOURCE_EXHAUSTED",
                             "the simulated hospital holds its maximum of patients")  # fmt: skip
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            n = next(book.numbers)
            patient = patient_pb2.Patient(
                patient_id=f"P{n:08d}",
                name=request.name,
                gender=request.gender,
                id_card_type=request.id_card_type,
                id_card_number=number,
                phone_number=request.phone_number,
                payer_type=request.payer_type,
                create_time=now,
                update_time=now,
            )
            if request.HasField("birth_date"):
                patient.birth_date.CopyFrom(request.birth_date)
            patient.cards.add(
                type=request.card_type or common_pb2.CARD_TYPE_HOSPITAL_CARD,
                number=request.card_number or f"JZK{n:08d}",
                active=True,
                issue_time=now,
            )
            book.by_document[number] = patient
            response = patient_pb2.RegisterPatientResponse(patient=patient, created=True)
        if len(book.keys) >= _MAX_KEYS:
            book.keys.pop(next(iter(book.keys)))
        book.keys[request.idempotency_key] = response
        return response

    async def FindPatient(
        self, request: patient_pb2.FindPatientRequest, context: Ctx
    ) -> patient_pb2.FindPatientResponse:
        """Patients by exactly one of document, card or phone (phone needs the name)."""
        await self._edge.faults.delay()
        given = [
            f for f in ("id_card_number", "card_number", "phone_number") if getattr(request, f)
        ]
        if len(given) != 1:
            reject("INVALID_ARGUMENT", "invalid request: id_card_number",
                         violations=[("id_card_number", "give exactly one of id_card_number, "
                                      "card_number, phone_number")])  # fmt: skip
        if request.phone_number and not request.name:
            reject("INVALID_ARGUMENT", "invalid request: name",
                         violations=[("name", "required with phone_number")])  # fmt: skip
        book = self._edge.patients()
        if request.id_card_number:
            hit = book.by_document.get(request.id_card_number.upper())
            found = [hit] if hit is not None else []
        elif request.card_number:
            found = [
                p
                for p in book.by_document.values()
                if any(c.number == request.card_number for c in p.cards)
            ]
        else:
            found = [
                p
                for p in book.by_document.values()
                if p.phone_number == request.phone_number and p.name == request.name
            ]
        if request.name:
            found = [p for p in found if p.name == request.name]
        return patient_pb2.FindPatientResponse(patients=found[:20])


def register(server: Any, edge: SimEdge) -> None:
    """Adds the patient service of ``edge`` to ``server``."""
    patient_pb2_grpc.add_PatientServiceServicer_to_server(FleetPatientServicer(edge), server)

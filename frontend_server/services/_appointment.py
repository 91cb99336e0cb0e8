"""``hplus.hospital.v1.AppointmentService`` over the HIS adapter and the ledger."""

from __future__ import annotations

import grpc
from google.protobuf import message as pb_message

from frontend_server import adapters as d
from frontend_server.adapters import HisRejected, RejectReason
from frontend_server.ledger import (
    HisOutcome,
    OperationError,
    OperationState,
    not_received,
    to_operation_record,
)
from frontend_server.rules import RuleEngine
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, page, require_key, require_mode
from frontend_server.services._errors import HOSPITAL_ERRORS, InvalidRequest
from frontend_server.services._rules import RuleGate
from hplus.hospital.v1 import appointment_pb2, appointment_pb2_grpc
from mesh import errors

__all__ = ["AppointmentServicer"]

_SERVICE = "hplus.hospital.v1.AppointmentService"
HOLD = f"{_SERVICE}/HoldSlot"
RELEASE = f"{_SERVICE}/ReleaseHold"
BOOK = f"{_SERVICE}/BookAppointment"
CANCEL = f"{_SERVICE}/CancelAppointment"

_RESPONSES: dict[str, type[pb_message.Message]] = {
    HOLD: appointment_pb2.HoldSlotResponse,
    RELEASE: appointment_pb2.ReleaseHoldResponse,
    BOOK: appointment_pb2.BookAppointmentResponse,
    CANCEL: appointment_pb2.CancelAppointmentResponse,
}

Ctx = grpc.aio.ServicerContext


@HOSPITAL_ERRORS.servicer
class AppointmentServicer(appointment_pb2_grpc.AppointmentServiceServicer):
    """Holds, books and cancels appointments; answers evidence reads from the ledger.

    Holds, bookings and cancellations are first checked against the profile's appointment
    rules (:class:`~frontend_server.services._rules.RuleGate`), inside their ledger entry:
    a rule refusal is recorded and replayed like a HIS refusal, and the HIS is not called.

    Args:
        hospital: the servicers' collaborators.
    """

    def __init__(self, hospital: Hospital) -> None:
        self._h = hospital
        self._rules = RuleGate(
            RuleEngine(hospital.profile.appointment),
            hospital.adapter,
            timezone=hospital.profile.business_hours.timezone,
            clock=hospital.clock,
            index=hospital.slots,
        )
        writes = hospital.writes
        writes.register_probe(HOLD, self._probe_hold)
        writes.register_probe(BOOK, self._probe_book)
        writes.register_probe(CANCEL, self._probe_cancel)
        writes.register_probe(RELEASE, self._probe_release)

    # -- writes ----------------------------------------------------------------------------

    async def HoldSlot(
        self,
        request: appointment_pb2.HoldSlotRequest,
        context: Ctx[appointment_pb2.HoldSlotRequest, appointment_pb2.HoldSlotResponse],
    ) -> appointment_pb2.HoldSlotResponse:
        """Holds one place of a slot (see the contract)."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "hold_slot")
        if not request.slot_id:
            raise InvalidRequest([("slot_id", "required")])
        patient_id = await self._h.patient_id(request.patient)
        rules = self._h.profile.appointment
        minutes = rules.hold_minutes
        if request.HasField("hold_duration"):
            minutes = max(1, request.hold_duration.seconds // 60)
        minutes = min(minutes, rules.max_hold_minutes)
        key = request.idempotency_key

        async def call() -> appointment_pb2.HoldSlotResponse:
            held = await self._h.adapter.hold(
                slot_id=request.slot_id,
                patient_id=patient_id,
                key=key,
                payer=convert.payer_code(request.payer_type),
                minutes=minutes,
            )
            return appointment_pb2.HoldSlotResponse(appointment=convert.appointment(held, key=key))

        async def check() -> None:
            await self._rules.check_hold(slot_id=request.slot_id, patient_id=patient_id)

        return await self._h.writes.run(
            HOLD,
            request,
            appointment_pb2.HoldSlotResponse,
            call,
            lambda r: r.appointment.hold_id,
            check=check,
        )

    async def ReleaseHold(
        self,
        request: appointment_pb2.ReleaseHoldRequest,
        context: Ctx[appointment_pb2.ReleaseHoldRequest, appointment_pb2.ReleaseHoldResponse],
    ) -> appointment_pb2.ReleaseHoldResponse:
        """Releases a hold; releasing twice returns the same final state."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "release_hold")
        if not request.hold_id:
            raise InvalidRequest([("hold_id", "required")])

        async def call() -> appointment_pb2.ReleaseHoldResponse:
            released = await self._h.adapter.release_hold(request.hold_id)
            return appointment_pb2.ReleaseHoldResponse(appointment=convert.appointment(released))

        return await self._h.writes.run(
            RELEASE,
            request,
            appointment_pb2.ReleaseHoldResponse,
            call,
            lambda r: r.appointment.hold_id,
        )

    async def BookAppointment(
        self,
        request: appointment_pb2.BookAppointmentRequest,
        context: Ctx[
            appointment_pb2.BookAppointmentRequest, appointment_pb2.BookAppointmentResponse
        ],
    ) -> appointment_pb2.BookAppointmentResponse:
        """Books a held place or a slot, recording the payment."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "book_appointment")
        target = request.WhichOneof("target")
        if target is None or not getattr(request, target):
            raise InvalidRequest([("target", "hold_id or slot_id is required")])
        payment: d.Payment | None = None
        if request.HasField("payment"):
            payment = convert.payment_to_domain(request.payment)
            if payment is None:
                raise InvalidRequest([("payment.method", "not accepted by this hospital")])
        patient_id = await self._h.patient_id(request.patient)
        key = request.idempotency_key

        async def call() -> appointment_pb2.BookAppointmentResponse:
            booked = await self._h.adapter.book(
                patient_id=patient_id,
                key=key,
                hold_id=request.hold_id,
                slot_id=request.slot_id,
                payer=convert.payer_code(request.payer_type),
                payment=payment,
            )
            out = convert.appointment(booked, key=key)
            if request.HasField("payment"):
                out.payment.CopyFrom(request.payment)
            return appointment_pb2.BookAppointmentResponse(appointment=out)

        async def check() -> None:
            await self._rules.check_book(
                patient_id=patient_id, hold_id=request.hold_id, slot_id=request.slot_id
            )

        return await self._h.writes.run(
            BOOK,
            request,
            appointment_pb2.BookAppointmentResponse,
            call,
            lambda r: r.appointment.appointment_id,
            check=check,
        )

    async def CancelAppointment(
        self,
        request: appointment_pb2.CancelAppointmentRequest,
        context: Ctx[
            appointment_pb2.CancelAppointmentRequest, appointment_pb2.CancelAppointmentResponse
        ],
    ) -> appointment_pb2.CancelAppointmentResponse:
        """Cancels a booking, or compensates a hold/booking by its idempotency key."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "cancel_appointment")
        target = request.WhichOneof("target")
        if target is None or not getattr(request, target):
            raise InvalidRequest([("target", "appointment_id or target_idempotency_key")])
        patient_id = await self._h.patient_id(request.patient)
        appointment_id = request.appointment_id
        if target == "target_idempotency_key":
            # An UNKNOWN original is resolved first where the HIS can tell; then fence: a
            # compensation of a key never received must win over a late copy of the write.
            await self._h.writes.settle(request.target_idempotency_key)
            fenced = await self._h.writes.ledger.fence(request.target_idempotency_key, method=BOOK)
            if fenced.empty:
                empty = appointment_pb2.CancelAppointmentResponse(empty_compensation=True)

                async def nothing() -> appointment_pb2.CancelAppointmentResponse:
                    return empty

                return await self._h.writes.run(
                    CANCEL, request, appointment_pb2.CancelAppointmentResponse, nothing, _empty
                )
            appointment_id = _appointment_of(fenced.record.method, fenced.record.result)
        key = request.idempotency_key

        async def call() -> appointment_pb2.CancelAppointmentResponse:
            cancelled = await self._h.adapter.cancel(
                appointment_id=appointment_id,
                patient_id=patient_id,
                key=key,
                reason=request.reason,
            )
            return appointment_pb2.CancelAppointmentResponse(
                appointment=convert.appointment(cancelled)
            )

        async def check() -> None:
            await self._rules.check_cancel(appointment_id=appointment_id)

        return await self._h.writes.run(
            CANCEL,
            request,
            appointment_pb2.CancelAppointmentResponse,
            call,
            lambda r: r.appointment.appointment_id,
            check=check,
        )

    # -- reads -----------------------------------------------------------------------------

    async def GetAppointment(
        self,
        request: appointment_pb2.GetAppointmentRequest,
        context: Ctx[appointment_pb2.GetAppointmentRequest, appointment_pb2.GetAppointmentResponse],
    ) -> appointment_pb2.GetAppointmentResponse:
        """The evidence read: by key from the ledger (``refresh`` asks the HIS)."""
        key, wanted = request.idempotency_key, request.appointment_id
        if not key and not wanted:
            raise InvalidRequest([("idempotency_key", "idempotency_key or appointment_id")])
        out = appointment_pb2.GetAppointmentResponse()
        if not key:
            out.appointment.CopyFrom(await self._read(wanted))
            return out
        ledger = self._h.writes.ledger
        record = await ledger.get(key)
        if request.refresh and record is not None and record.state is OperationState.UNKNOWN:
            await self._h.writes.settle(key)
            record = await ledger.get(key)
        if record is None:
            out.operation.CopyFrom(not_received(key))
            return out
        out.operation.CopyFrom(to_operation_record(record))
        if record.state is OperationState.SUCCEEDED and record.method in _RESPONSES:
            found = _RESPONSES[record.method].FromString(record.result or b"")
            appointment: appointment_pb2.Appointment = getattr(found, "appointment")  # noqa: B009
            if found.HasField("appointment"):
                if wanted and wanted not in (appointment.appointment_id, appointment.hold_id):
                    raise InvalidRequest(
                        [("appointment_id", "names another appointment than the key")]
                    )
                if request.refresh:
                    appointment = await self._read(appointment.appointment_id)
                out.appointment.CopyFrom(appointment)
        return out

    async def ListPatientAppointments(
        self,
        request: appointment_pb2.ListPatientAppointmentsRequest,
        context: Ctx[
            appointment_pb2.ListPatientAppointmentsRequest,
            appointment_pb2.ListPatientAppointmentsResponse,
        ],
    ) -> appointment_pb2.ListPatientAppointmentsResponse:
        """A patient's appointments, newest visit first."""
        require_mode(self._h.profile, "list_patient_appointments")
        patient_id = await self._h.patient_id(request.patient)
        start = convert.from_date(request.start_date)
        end = convert.from_date(request.end_date)
        states = set(request.statuses)
        listed = [
            convert.appointment(a)
            for a in await self._h.adapter.list_appointments(patient_id)
            if (start is None or (a.visit_date is not None and a.visit_date >= start))
            and (end is None or (a.visit_date is not None and a.visit_date <= end))
        ]
        listed = [a for a in listed if not states or a.status in states]
        chunk, token = page(
            listed, size=request.page_size, token=request.page_token, default=50, maximum=200
        )
        return appointment_pb2.ListPatientAppointmentsResponse(
            appointments=chunk, next_page_token=token
        )

    async def _read(self, appointment_id: str) -> appointment_pb2.Appointment:
        try:
            found = await self._h.adapter.get_appointment(appointment_id)
        except HisRejected as err:
            if err.reason is RejectReason.NOT_FOUND:
                raise errors.NotFound("no such appointment") from err
            raise
        return convert.appointment(found)

    # -- probes: what became of an UNKNOWN write ----------------------------------------------

    async def _by_key(self, key: str) -> d.Appointment | None:
        return await self._h.adapter.find_appointment_by_key(key)

    async def _listed(
        self, patient_id: str, status: str, match: dict[str, str]
    ) -> d.Appointment | None:
        found = [
            a
            for a in await self._h.adapter.list_appointments(patient_id)
            if a.status == status and all(getattr(a, k) == v for k, v in match.items() if v)
        ]
        if len(found) > 1:
            raise LookupError("ambiguous evidence")
        return found[0] if found else None

    async def _probe_hold(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        if self._h.adapter.capabilities.appointment_query_by_key:
            held = await self._by_key(key)
        elif isinstance(request, appointment_pb2.HoldSlotRequest):
            held = await self._listed(
                request.patient.patient_id, "HELD", {"slot_id": request.slot_id}
            )
        else:
            raise LookupError("no evidence available")
        if held is None:
            return None
        response = appointment_pb2.HoldSlotResponse(appointment=convert.appointment(held, key=key))
        return HisOutcome(receipt=held.hold_id, result=response.SerializeToString())

    async def _probe_book(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        if self._h.adapter.capabilities.appointment_query_by_key:
            booked = await self._by_key(key)
        elif isinstance(request, appointment_pb2.BookAppointmentRequest):
            booked = await self._listed(
                request.patient.patient_id,
                "BOOKED",
                {"hold_id": request.hold_id, "slot_id": request.slot_id},
            )
        else:
            raise LookupError("no evidence available")
        if booked is None:
            return None
        out = convert.appointment(booked, key=key)
        if isinstance(request, appointment_pb2.BookAppointmentRequest) and request.HasField(
            "payment"
        ):
            out.payment.CopyFrom(request.payment)
        response = appointment_pb2.BookAppointmentResponse(appointment=out)
        return HisOutcome(receipt=booked.appointment_id, result=response.SerializeToString())

    async def _probe_cancel(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        if not isinstance(request, appointment_pb2.CancelAppointmentRequest) or not (
            request.appointment_id
        ):
            raise LookupError("no evidence available")
        current = await self._h.adapter.get_appointment(request.appointment_id)
        if current.status not in ("CANCELLED", "RELEASED"):
            return None
        response = appointment_pb2.CancelAppointmentResponse(
            appointment=convert.appointment(current)
        )
        return HisOutcome(
            receipt=current.appointment_id or current.hold_id,
            result=response.SerializeToString(),
        )

    async def _probe_release(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        if not isinstance(request, appointment_pb2.ReleaseHoldRequest):
            raise LookupError("no evidence available")
        current = await self._h.adapter.get_appointment(request.hold_id)
        if current.status == "HELD":
            return None
        response = appointment_pb2.ReleaseHoldResponse(appointment=convert.appointment(current))
        return HisOutcome(receipt=current.hold_id, result=response.SerializeToString())


def _empty(response: appointment_pb2.CancelAppointmentResponse) -> str:
    return ""


def _appointment_of(method: str, result: bytes | None) -> str:
    """The HIS id of what a recorded hold or booking created (what to cancel)."""
    response_type = _RESPONSES.get(method)
    if response_type is None:
        raise InvalidRequest([("target_idempotency_key", "names a write of another kind")])
    response = response_type.FromString(result or b"")
    appointment: appointment_pb2.Appointment = getattr(response, "appointment")  # noqa: B009
    return appointment.appointment_id or appointment.hold_id

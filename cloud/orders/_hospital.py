"""The order coordinator's calls to a hospital: its writes, and the evidence read by key.

Calls go through the node's ``HospitalRouter`` (the hospital's tunnel here or on a peer)
with a deadline, as ``cloud.accounts`` calls FindPatient. Each write's outcome is one of
three kinds, and the coordinator treats each differently:

* an **answer** (the response);
* a **refusal** (`Refused`): the hospital said no. Evidence, but it is confirmed by reading
  the write's key again before anything irreversible (a refund) follows;
* a **lost answer** (`Lost`): a timeout, a dropped tunnel, a node or edge that went away,
  an error that says nothing final. Never a failure: the order becomes OUTCOME_UNKNOWN and
  the key is read (GetAppointment) until the edge's ledger says what happened.

A call that never left this node (the hospital has no tunnel anywhere: `NotSent`) had no
effect.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable

import grpc
from google.type import money_pb2

from hplus.hospital.v1 import appointment_pb2, appointment_pb2_grpc, common_pb2
from mesh import errors

__all__ = [
    "ChannelFor",
    "Evidence",
    "HospitalAppointments",
    "Lost",
    "NotSent",
    "Refused",
    "fen_of",
    "money",
]

ChannelFor = Callable[[str], Awaitable[grpc.aio.Channel]]
"""The router's ``channel_for``: a channel to a hospital, or ``HospitalUnavailable``."""

_REFUSALS = (
    errors.InvalidArgument,
    errors.NotFound,
    errors.AlreadyExists,
    errors.PermissionDenied,
    errors.FailedPrecondition,
    errors.OutOfRange,
    errors.Unimplemented,
)
"""Statuses only a hospital's decision produces (recorded by the edge's ledger and replayed)."""


class Refused(Exception):
    """The hospital refused the write (or the edge did, before any effect)."""

    def __init__(self, error: errors.StatusError) -> None:
        super().__init__(str(error))
        self.error = error


class Lost(Exception):
    """The write's answer is unknown: it may or may not have happened."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error) or type(error).__name__)
        self.error = error


class NotSent(Exception):
    """The call never left this node (no tunnel to the hospital): it had no effect."""

    def __init__(self, error: errors.StatusError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the edge's ledger says of one write, read by its idempotency key."""

    state: int
    """``hplus.hospital.v1.OperationState``."""
    appointment: appointment_pb2.Appointment | None
    """What the write produced (SUCCEEDED), if anything."""
    error: errors.StatusError | None
    """Why it failed (FAILED)."""

    @property
    def succeeded(self) -> bool:
        return self.state == common_pb2.OPERATION_STATE_SUCCEEDED

    @property
    def failed(self) -> bool:
        return self.state == common_pb2.OPERATION_STATE_FAILED

    @property
    def absent(self) -> bool:
        return self.state == common_pb2.OPERATION_STATE_NOT_RECEIVED

    def describe(self) -> str:
        name = common_pb2.OperationState.Name(self.state)  # type: ignore[arg-type]
        text = name.removeprefix("OPERATION_STATE_").lower()
        if self.error is not None:
            text += f": {_short(self.error)}"
        if self.appointment is not None and self.appointment.status:
            status = appointment_pb2.AppointmentStatus.Name(self.appointment.status)
            text += f" ({status.removeprefix('APPOINTMENT_STATUS_').lower()})"
        return text


def _short(err: errors.StatusError) -> str:
    code = err.code.name if isinstance(err.code, grpc.StatusCode) else str(err.code)
    reason = f" {err.reason}" if err.reason else ""
    return f"{code}{reason}: {err.message}"[:300]


def describe_error(err: BaseException) -> str:
    """One line for the order's history (no patient data: statuses and reasons only)."""
    if isinstance(err, errors.StatusError):
        return _short(err)
    return type(err).__name__


def money(fen: int) -> money_pb2.Money:
    """``fen`` as a ``google.type.Money`` in CNY."""
    return money_pb2.Money(currency_code="CNY", units=fen // 100, nanos=(fen % 100) * 10_000_000)


def fen_of(amount: money_pb2.Money) -> int:
    """A ``google.type.Money`` in fen (rounded to the fen)."""
    return amount.units * 100 + round(amount.nanos / 10_000_000)


class HospitalAppointments:
    """HoldSlot, BookAppointment, CancelAppointment, ReleaseHold and GetAppointment.

    Args:
        channel_for: the router's ``channel_for``.
        timeout: deadline of each call, seconds.
    """

    def __init__(self, channel_for: ChannelFor, *, timeout: float = 10.0) -> None:
        self._channel_for = channel_for
        self._timeout = timeout

    async def _stub(self, hospital_id: str) -> appointment_pb2_grpc.AppointmentServiceAsyncStub:
        try:
            channel = await self._channel_for(hospital_id)
        except errors.Unavailable as err:
            raise NotSent(err) from None
        return errors.wrap(appointment_pb2_grpc.AppointmentServiceStub(channel))

    async def reachable(self, hospital_id: str) -> None:
        """Check that the hospital has a tunnel somewhere.

        Raises:
            NotSent: it has none.
        """
        await self._stub(hospital_id)

    async def _write(self, hospital_id: str, method: str, request: object) -> object:
        stub = await self._stub(hospital_id)
        try:
            return await getattr(stub, method)(request, timeout=self._timeout)
        except errors.ResourceExhausted as err:
            if err.reason == "SLOT_FULL":
                raise Refused(err) from None
            raise Lost(err) from None
        except _REFUSALS as err:
            raise Refused(err) from None
        except (errors.StatusError, OSError, TimeoutError) as err:
            raise Lost(err) from None

    async def hold(
        self, hospital_id: str, key: str, *, slot_id: str, patient_id: str, phone: str, minutes: int
    ) -> appointment_pb2.Appointment:
        """Hold one place of ``slot_id`` for the patient (HoldSlot)."""
        request = appointment_pb2.HoldSlotRequest(
            idempotency_key=key,
            slot_id=slot_id,
            patient=common_pb2.PatientRef(patient_id=patient_id),
            payer_type=common_pb2.PAYER_TYPE_SELF_PAY,
            contact_phone=phone,
        )
        request.hold_duration.FromSeconds(minutes * 60)
        reply = await self._write(hospital_id, "HoldSlot", request)
        assert isinstance(reply, appointment_pb2.HoldSlotResponse)
        return reply.appointment

    async def book(
        self,
        hospital_id: str,
        key: str,
        *,
        hold_id: str,
        slot_id: str = "",
        patient_id: str,
        paid_fen: int,
        transaction_id: str,
        out_trade_no: str,
        paid_at: dt.datetime | None,
    ) -> appointment_pb2.Appointment:
        """Book the held place, recording the payment (BookAppointment).

        With no ``hold_id`` (a hospital that cannot hold) ``slot_id`` is booked directly.
        """
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key=key,
            patient=common_pb2.PatientRef(patient_id=patient_id),
            payer_type=common_pb2.PAYER_TYPE_SELF_PAY,
        )
        if hold_id:
            request.hold_id = hold_id
        else:
            request.slot_id = slot_id
        if paid_fen > 0:
            payment = common_pb2.Payment(
                method=common_pb2.PAYMENT_METHOD_WECHAT_PAY,
                transaction_id=transaction_id,
                merchant_order_id=out_trade_no,
                amount=money(paid_fen),
            )
            if paid_at is not None:
                payment.paid_time.FromDatetime(paid_at)
            request.payment.CopyFrom(payment)
        reply = await self._write(hospital_id, "BookAppointment", request)
        assert isinstance(reply, appointment_pb2.BookAppointmentResponse)
        return reply.appointment

    async def cancel(
        self, hospital_id: str, key: str, *, appointment_id: str, patient_id: str, reason: str
    ) -> appointment_pb2.Appointment:
        """Cancel a booking (or a hold) by its HIS id (CancelAppointment)."""
        request = appointment_pb2.CancelAppointmentRequest(
            idempotency_key=key,
            appointment_id=appointment_id,
            patient=common_pb2.PatientRef(patient_id=patient_id),
            origin=appointment_pb2.CANCELLATION_ORIGIN_PATIENT,
            reason=reason,
        )
        reply = await self._write(hospital_id, "CancelAppointment", request)
        assert isinstance(reply, appointment_pb2.CancelAppointmentResponse)
        return reply.appointment

    async def release(
        self, hospital_id: str, key: str, *, hold_id: str
    ) -> appointment_pb2.Appointment:
        """Release a hold (ReleaseHold); releasing twice returns the same final state."""
        request = appointment_pb2.ReleaseHoldRequest(
            idempotency_key=key, hold_id=hold_id, reason="payment deadline passed"
        )
        reply = await self._write(hospital_id, "ReleaseHold", request)
        assert isinstance(reply, appointment_pb2.ReleaseHoldResponse)
        return reply.appointment

    async def evidence(self, hospital_id: str, key: str, *, refresh: bool) -> Evidence:
        """Read what the edge knows of the write with ``key`` (GetAppointment).

        Raises:
            Lost: the read itself failed (never evidence).
            NotSent: the hospital has no tunnel.
        """
        stub = await self._stub(hospital_id)
        try:
            reply = await stub.GetAppointment(
                appointment_pb2.GetAppointmentRequest(idempotency_key=key, refresh=refresh),
                timeout=self._timeout,
            )
        except (errors.StatusError, OSError, TimeoutError) as err:
            raise Lost(err) from None
        operation = reply.operation
        error = (
            errors.StatusError.from_status(operation.error) if operation.HasField("error") else None
        )
        return Evidence(
            state=int(operation.state),
            appointment=reply.appointment if reply.HasField("appointment") else None,
            error=error,
        )

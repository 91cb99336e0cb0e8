"""The patient API's write side: BookAppointment, CancelAppointment, PayOrder, GetOrder, ListOrders.

`OrderApi` is what the patient API's servicer delegates to once it has authenticated the
call: each method takes the ``hplus.cloud.v1`` request and the `cloud.accounts.Caller` and
returns the response. Errors are tree errors, only for requests that never reached the
hospital (bad input, an order of someone else, a hospital with no tunnel); whatever the
hospital said, or did not say, is in the returned order.

Every order call is routed by the caller's partition (its account's region); an order id
of another account or another partition is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import duration_pb2
from google.rpc import status_pb2
from sqlalchemy.exc import IntegrityError

from cloud.accounts import Caller, Session, mask_id_number, mask_phone
from cloud.errors import ERROR_DOMAIN
from cloud.orders._coordinator import OrderCoordinator, key_for
from cloud.orders._hospital import NotSent, fen_of, money
from cloud.orders._machine import FINAL, Step, public_status, unresolved_operation
from cloud.orders._store import Conflict, OrderRow, OrderStore, fingerprint, region_of
from cloud.payments import TradeState
from hplus.cloud.v1 import patient_pb2
from hplus.hospital.v1 import appointment_pb2
from mesh import errors

__all__ = ["BoundPatientLookup", "OrderApi", "to_order"]

BoundPatientLookup = Callable[[Session, str, int, str], Awaitable[tuple[str, str] | None]]
"""``(session, hospital_id, id_card_type, id_card_number)`` → ``(patient id, the hospital's
patient id)`` of a patient the account bound at that hospital, or ``None``
(`cloud.accounts.Patients.at_hospital`)."""

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_PAGE_DEFAULT, _PAGE_MAX = 50, 500
_POLL_SECONDS = 2
_POLL_UNKNOWN_SECONDS = 5
_PAYMENT_STATUS = {
    "": patient_pb2.PAYMENT_STATUS_PENDING,
    TradeState.NOTPAY.value: patient_pb2.PAYMENT_STATUS_PENDING,
    TradeState.USERPAYING.value: patient_pb2.PAYMENT_STATUS_PENDING,
    TradeState.SUCCESS.value: patient_pb2.PAYMENT_STATUS_SUCCEEDED,
    TradeState.REFUND.value: patient_pb2.PAYMENT_STATUS_SUCCEEDED,
    TradeState.CLOSED.value: patient_pb2.PAYMENT_STATUS_CLOSED,
    TradeState.PAYERROR.value: patient_pb2.PAYMENT_STATUS_FAILED,
    TradeState.NOT_FOUND.value: patient_pb2.PAYMENT_STATUS_UNKNOWN,
}


def _bad(*violations: tuple[str, str]) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        "the request is invalid: " + "; ".join(f"{f}: {d}" for f, d in violations),
        reason="INVALID_REQUEST",
        domain=ERROR_DOMAIN,
        field_violations=violations,
    )


def _request_id(value: str) -> list[tuple[str, str]]:
    if not value:
        return [("request_id", "required")]
    if not _UUID.match(value):
        return [("request_id", "must be a UUID in canonical text form")]
    return []


def _not_found(order_id: str) -> errors.NotFound:
    return errors.NotFound(
        "no such order",
        reason="ORDER_NOT_FOUND",
        domain=ERROR_DOMAIN,
        resource=errors.Resource("order", order_id[:64]),
    )


def _ts(value: dt.datetime | None, target: Any) -> None:
    if value is not None:
        target.FromDatetime(value)


def _patient_identity(data: bytes) -> patient_pb2.PatientIdentity:
    return patient_pb2.PatientIdentity.FromString(data)


def _masked(who: patient_pb2.PatientIdentity) -> patient_pb2.PatientIdentity:
    out = patient_pb2.PatientIdentity()
    out.CopyFrom(who)
    out.id_card_number = mask_id_number(who.id_card_number)
    if who.phone:
        out.phone = f"+86{mask_phone(who.phone)}"
    if who.medical_card_number:
        out.medical_card_number = mask_id_number(who.medical_card_number)
    return out


def _appointment(row: OrderRow) -> patient_pb2.Appointment:
    his = appointment_pb2.Appointment.FromString(row.appointment)
    out = patient_pb2.Appointment(
        slot_id=row.slot_id,
        department_id=his.department_id,
        doctor_id=his.doctor_id,
        registration_type=his.extensions.get("his/registration_type", ""),
        queue_number=his.ticket_number,
        visit_location=his.location,
        hospital_appointment_number=his.appointment_id if row.step is Step.CONFIRMED else "",
    )
    if his.HasField("visit_date"):
        out.date.CopyFrom(his.visit_date)
    if his.period:
        out.period = his.period  # type: ignore[assignment]  # same numbers, 1-4
    if his.HasField("visit_window"):
        start = his.visit_window.start_time.ToDatetime(dt.UTC).astimezone(
            dt.timezone(dt.timedelta(hours=8))
        )
        end = his.visit_window.end_time.ToDatetime(dt.UTC).astimezone(
            dt.timezone(dt.timedelta(hours=8))
        )
        out.start_time.hours, out.start_time.minutes = start.hour, start.minute
        out.end_time.hours, out.end_time.minutes = end.hour, end.minute
    if his.HasField("cancel_deadline"):
        out.cancel_deadline.CopyFrom(his.cancel_deadline)
    return out


def to_order(row: OrderRow) -> patient_pb2.Order:
    """The order as patients see it."""
    out = patient_pb2.Order(
        order_id=row.order_id,
        request_id=row.request_id,
        kind=patient_pb2.ORDER_KIND_APPOINTMENT,
        hospital_id=row.hospital_id,
        patient=_masked(_patient_identity(row.patient)),
        status=public_status(  # type: ignore[arg-type]
            row.step,
            unknown=row.unknown,
            review=row.review,
            refund_for=row.refund_for,
            paid=row.paid,
        ),
        unresolved_operation=unresolved_operation(  # type: ignore[arg-type]
            row.step, unknown=row.unknown, review=row.review
        ),
        appointment=_appointment(row),
        amount_due=money(row.amount_due_fen),
        amount_paid=money(row.paid_fen),
        amount_refunded=money(row.refunded_fen),
    )
    if row.review:
        out.status_reason.CopyFrom(
            status_pb2.Status(code=2, message="confirming with the hospital (under review)")
        )
    elif row.status_code and row.step in (Step.FAILED, Step.REFUNDING, *FINAL):
        out.status_reason.CopyFrom(
            status_pb2.Status(code=row.status_code, message=row.status_message)
        )
    _ts(row.status_changed_at, out.status_change_time)
    if row.step is Step.AWAITING_PAYMENT:
        _ts(row.payment_deadline, out.payment_deadline)
    if row.out_trade_no:
        payment = out.payments.add(
            payment_id=row.out_trade_no,
            channel=row.pay_channel,
            amount=money(row.amount_due_fen),
            status=_PAYMENT_STATUS.get(row.payment_state, patient_pb2.PAYMENT_STATUS_UNKNOWN),
            channel_transaction_id=row.transaction_id,
        )
        _ts(row.payment_created_at, payment.create_time)
        _ts(row.paid_at, payment.paid_time)
    if row.refund_no:
        refund = out.refunds.add(
            refund_id=row.refund_no,
            payment_id=row.out_trade_no,
            amount=money(row.refund_fen),
            status=patient_pb2.REFUND_STATUS_SUCCEEDED
            if row.refund_state == "SUCCESS"
            else patient_pb2.REFUND_STATUS_FAILED
            if row.refund_state in ("CLOSED", "ABNORMAL")
            else patient_pb2.REFUND_STATUS_PENDING,
        )
        _ts(row.refund_created_at, refund.create_time)
        _ts(row.refund_completed_at, refund.complete_time)
    _ts(row.created_at, out.create_time)
    _ts(row.updated_at, out.update_time)
    return out


def _poll_after(row: OrderRow) -> duration_pb2.Duration | None:
    status = to_order(row).status
    if status == patient_pb2.ORDER_STATUS_OUTCOME_UNKNOWN:
        return duration_pb2.Duration(seconds=_POLL_UNKNOWN_SECONDS)
    if status in (
        patient_pb2.ORDER_STATUS_BOOKING,
        patient_pb2.ORDER_STATUS_PAYING,
        patient_pb2.ORDER_STATUS_CANCELLING,
    ) or (row.step is Step.REFUNDING):
        return duration_pb2.Duration(seconds=_POLL_SECONDS)
    return None


class OrderApi:
    """The order RPCs of ``PatientApiService``, for the servicer to delegate to.

    Args:
        coordinator: moves the orders.
        patients: finds the hospital's id of a patient the account bound there.
    """

    def __init__(self, coordinator: OrderCoordinator, patients: BoundPatientLookup) -> None:
        self.coordinator = coordinator
        self.store: OrderStore = coordinator.store
        self._patients = patients

    @staticmethod
    def _session(caller: Caller) -> Session:
        if caller.session is None:
            raise errors.Unauthenticated(
                "this call needs a signed-in account", reason="TOKEN_MISSING", domain=ERROR_DOMAIN
            )
        return caller.session

    async def _own(self, session: Session, order_id: str) -> OrderRow:
        if not order_id:
            raise _bad(("order_id", "required"))
        if len(order_id) > 64:
            raise _bad(("order_id", "at most 64 characters"))
        if region_of(order_id) != session.region:
            raise _not_found(order_id)
        row = await self.store.get(order_id)
        if row is None or row.account_id != session.account_id:
            raise _not_found(order_id)
        return row

    async def _recall(
        self, session: Session, request_id: str, method: str, digest: str
    ) -> OrderRow | None:
        earlier = await self.store.request(session.region, session.account_id, request_id)
        if earlier is None:
            return None
        if earlier.method != method or earlier.fingerprint != digest:
            raise errors.InvalidArgument(
                "request_id was used for another request",
                reason="IDEMPOTENCY_KEY_REUSED",
                domain=ERROR_DOMAIN,
                field_violations=[("request_id", "already used with other parameters")],
            )
        return await self.store.get(earlier.order_id)

    # -- BookAppointment ---------------------------------------------------------------------

    async def book_appointment(
        self, request: patient_pb2.BookAppointmentRequest, caller: Caller
    ) -> patient_pb2.BookAppointmentResponse:
        """Book a slot for a bound patient: hold it at the hospital (see the contract)."""
        session = self._session(caller)
        problems = _request_id(request.request_id)
        for name, value in (("hospital_id", request.hospital_id), ("slot_id", request.slot_id)):
            if not value:
                problems.append((name, "required"))
            elif not _ID.match(value):
                problems.append((name, "1-64 letters, digits or . _ : -"))
        who = request.patient
        if not who.name:
            problems.append(("patient.name", "required"))
        elif len(who.name) > 64:
            problems.append(("patient.name", "at most 64 characters"))
        if not who.id_card_type:
            problems.append(("patient.id_card_type", "required"))
        if not who.id_card_number:
            problems.append(("patient.id_card_number", "required"))
        elif len(who.id_card_number) > 32:
            problems.append(("patient.id_card_number", "at most 32 characters"))
        if len(who.phone) > 20:
            problems.append(("patient.phone", "at most 20 characters"))
        if len(request.symptom_description) > 500:
            problems.append(("symptom_description", "at most 500 characters"))
        expected: int | None = None
        if request.HasField("expected_fee"):
            fee = request.expected_fee
            if fee.currency_code not in ("", "CNY"):
                problems.append(("expected_fee.currency_code", "must be CNY"))
            elif fee.units < 0 or fee.nanos < 0 or fee.nanos >= 1_000_000_000:
                problems.append(("expected_fee", "must be a non-negative amount"))
            else:
                expected = fen_of(fee)
        if problems:
            raise _bad(*problems)
        digest = fingerprint(request)
        earlier, bound = await asyncio.gather(
            self._recall(session, request.request_id, "BookAppointment", digest),
            self._patients(session, request.hospital_id, who.id_card_type, who.id_card_number),
        )
        if earlier is not None:
            return patient_pb2.BookAppointmentResponse(order=to_order(earlier))
        if bound is None:
            raise errors.FailedPrecondition(
                "this patient is not bound to the account at this hospital; bind them first "
                "(AccountService.BindPatient)",
                reason="PATIENT_NOT_BOUND",
                domain=ERROR_DOMAIN,
                precondition_violations=[
                    ("PATIENT", f"{request.hospital_id}/patient", "not bound to this account")
                ],
            )
        try:
            await self.coordinator.hospital.reachable(request.hospital_id)
        except NotSent as err:
            raise err.error from None
        if expected is not None:
            # The fee the directory shows now; the hospital's own quote is checked again
            # when it holds the place (the coordinator gives the place up if it differs).
            shown = await self.coordinator.slot_fee(request.hospital_id, request.slot_id)
            if shown is not None and shown != expected:
                raise errors.FailedPrecondition(
                    f"the slot's fee is now {shown / 100:.2f} CNY, not {expected / 100:.2f}",
                    reason="FEE_CHANGED",
                    domain=ERROR_DOMAIN,
                    precondition_violations=[
                        ("SLOT", f"{request.hospital_id}/{request.slot_id}", "fee changed")
                    ],
                )
        now = dt.datetime.now(dt.UTC)
        order_id = f"{session.region}-{secrets.token_hex(8)}"
        identity = patient_pb2.PatientIdentity()
        identity.CopyFrom(who)
        identity.id_card_number = who.id_card_number.strip().upper()
        values = {
            "order_id": order_id,
            "region": session.region,
            "account_id": session.account_id,
            "app_id": caller.app.app_id,
            "request_id": request.request_id,
            "hospital_id": request.hospital_id,
            "slot_id": request.slot_id,
            "patient_id": bound[0],
            "hospital_patient_id": bound[1],
            "patient": identity.SerializeToString(),
            "step": Step.HOLDING.value,
            "unknown": False,
            "review": False,
            "in_flight": True,  # the intent: HoldSlot under this key is sent right after
            "step_key": key_for(order_id, Step.HOLDING),
            "appointment": appointment_pb2.Appointment(slot_id=request.slot_id).SerializeToString(),
            "expected_fee_fen": expected,
            "created_at": now,
            "updated_at": now,
            "status_changed_at": now,
            "version": 1,
        }
        try:
            created = await self.store.create(
                values,
                method="BookAppointment",
                digest=digest,
                history=[
                    ("created", f"BookAppointment slot {request.slot_id}"),
                    ("intent", "send holding write"),
                ],
            )
        except IntegrityError:  # a concurrent retry of this request made it first
            again = await self._recall(session, request.request_id, "BookAppointment", digest)
            if again is None:
                raise
            return patient_pb2.BookAppointmentResponse(order=to_order(again))
        self.coordinator.fresh(created)
        row = await self.coordinator.drive(order_id, created)
        assert row is not None
        return patient_pb2.BookAppointmentResponse(order=to_order(row))

    # -- PayOrder ----------------------------------------------------------------------------

    async def pay_order(
        self, request: patient_pb2.PayOrderRequest, caller: Caller
    ) -> patient_pb2.PayOrderResponse:
        """Start paying an order at the channel (prepay; idempotent by ``request_id``)."""
        session = self._session(caller)
        problems = _request_id(request.request_id)
        if not request.channel:
            problems.append(("channel", "required"))
        elif request.channel != patient_pb2.PAYMENT_CHANNEL_WECHAT_PAY:
            problems.append(("channel", "only PAYMENT_CHANNEL_WECHAT_PAY is offered"))
        if not request.HasField("amount"):
            problems.append(("amount", "required"))
        elif request.amount.currency_code not in ("", "CNY"):
            problems.append(("amount.currency_code", "must be CNY"))
        if len(request.payer_channel_id) > 128:
            problems.append(("payer_channel_id", "at most 128 characters"))
        if not request.order_id:
            problems.append(("order_id", "required"))
        if problems:
            raise _bad(*problems)
        channel = self.coordinator.channel
        if channel is None:
            raise errors.Unavailable(
                "payments are not configured on this node",
                reason="PAYMENTS_UNAVAILABLE",
                domain=ERROR_DOMAIN,
            )
        digest = fingerprint(request)
        row, earlier = await asyncio.gather(
            self._own(session, request.order_id),
            self._recall(session, request.request_id, "PayOrder", digest),
        )
        if earlier is None:
            if row.out_trade_no:
                raise errors.FailedPrecondition(
                    "the order has a payment attempt already; retry it with its request_id",
                    reason="PAYMENT_ATTEMPT_EXISTS",
                    domain=ERROR_DOMAIN,
                    precondition_violations=[("ORDER", row.order_id, "payment already started")],
                )
            if row.step is not Step.AWAITING_PAYMENT or row.unknown or row.review:
                raise errors.FailedPrecondition(
                    "the order is not awaiting payment",
                    reason="ORDER_NOT_PAYABLE",
                    domain=ERROR_DOMAIN,
                    precondition_violations=[("ORDER", row.order_id, row.step.value)],
                )
            if row.payment_deadline is not None and row.payment_deadline <= dt.datetime.now(dt.UTC):
                raise errors.FailedPrecondition(
                    "the payment deadline has passed",
                    reason="PAYMENT_DEADLINE_PASSED",
                    domain=ERROR_DOMAIN,
                )
            if fen_of(request.amount) != row.amount_due_fen:
                raise errors.InvalidArgument(
                    f"amount differs from the amount due ({row.amount_due_fen} fen)",
                    reason="AMOUNT_MISMATCH",
                    domain=ERROR_DOMAIN,
                    field_violations=[("amount", "must equal the order's amount due")],
                )
            # The intent (the out-trade number) is written before the channel hears of it.
            try:
                row = await self._pay_intent(row, request, digest)
            except (IntegrityError, Conflict):
                # A concurrent retry of this request (or another change) came first.
                again = await self._recall(session, request.request_id, "PayOrder", digest)
                if again is None or again.order_id != row.order_id:
                    raise errors.Aborted(
                        "the order changed meanwhile; retry",
                        reason="ORDER_CHANGED",
                        domain=ERROR_DOMAIN,
                        retry_delay=0.2,
                    ) from None
                row = again
        elif earlier.order_id != row.order_id:
            raise _not_found(request.order_id)
        else:
            row = earlier
        return await self._prepay(row, request)

    async def _pay_intent(
        self, row: OrderRow, request: patient_pb2.PayOrderRequest, digest: str
    ) -> OrderRow:
        return await self.store.update(
            row,
            {
                "pay_request_id": request.request_id,
                "pay_channel": int(request.channel),
                "out_trade_no": f"{row.order_id}-p1",
                "payment_state": TradeState.NOTPAY.value,
                "payment_created_at": dt.datetime.now(dt.UTC),
                # From now on the channel is asked too (a notification may be lost).
                "next_attempt_at": dt.datetime.now(dt.UTC)
                + dt.timedelta(seconds=self.coordinator.config.payment_poll),
            },
            [("intent", "prepay at the channel")],
            request=(request.request_id, "PayOrder", digest),
        )

    async def _prepay(
        self, row: OrderRow, request: patient_pb2.PayOrderRequest
    ) -> patient_pb2.PayOrderResponse:
        channel = self.coordinator.channel
        assert channel is not None
        try:
            prepay = await channel.prepay(
                row.out_trade_no,
                row.amount_due_fen,
                f"registration {row.hospital_id}",
                request.payer_channel_id,
            )
        except errors.StatusError as err:
            if isinstance(err, (errors.Unavailable, errors.DeadlineExceeded)):
                raise errors.Unavailable(
                    "the payment channel did not answer; retry with the same request_id",
                    reason="CHANNEL_UNAVAILABLE",
                    domain=ERROR_DOMAIN,
                    retry_delay=1.0,
                ) from None
            raise
        self.coordinator.wake()
        # ``row`` is the order as the intent wrote it (or as a retry read it): the app pays
        # only with what this answer carries, so nothing newer can have happened meanwhile.
        order = to_order(row)
        payment = order.payments[0] if order.payments else patient_pb2.Payment()
        return patient_pb2.PayOrderResponse(
            payment=payment, channel_parameters=dict(prepay.app_parameters), order=order
        )

    # -- CancelAppointment -------------------------------------------------------------------

    async def cancel_appointment(
        self, request: patient_pb2.CancelAppointmentRequest, caller: Caller
    ) -> patient_pb2.CancelAppointmentResponse:
        """Cancel through the hospital's rules, then refund what was paid."""
        session = self._session(caller)
        problems = _request_id(request.request_id)
        if len(request.reason_text) > 200:
            problems.append(("reason_text", "at most 200 characters"))
        if not request.order_id:
            problems.append(("order_id", "required"))
        if problems:
            raise _bad(*problems)
        row = await self._own(session, request.order_id)
        digest = fingerprint(request)
        earlier = await self._recall(session, request.request_id, "CancelAppointment", digest)
        if earlier is not None:
            if earlier.order_id != row.order_id:
                raise _not_found(request.order_id)
            return patient_pb2.CancelAppointmentResponse(order=to_order(earlier))
        if (
            row.step is Step.CANCELLED
            or row.step is Step.CANCELLING
            or (row.step is Step.REFUNDING and row.refund_for == Step.CANCELLED.value)
        ):
            return patient_pb2.CancelAppointmentResponse(order=to_order(row))
        if row.step not in (Step.AWAITING_PAYMENT, Step.CONFIRMED) or row.unknown or row.review:
            raise errors.FailedPrecondition(
                "the order cannot be cancelled in its state",
                reason="ORDER_NOT_CANCELLABLE",
                domain=ERROR_DOMAIN,
                precondition_violations=[("ORDER", row.order_id, row.step.value)],
            )
        await self.coordinator.request_cancel(
            row, request.reason, (request.request_id, "CancelAppointment", digest)
        )
        after = await self.coordinator.drive(row.order_id)
        assert after is not None
        if after.step.value == row.step.value and after.status_code and not after.unknown:
            # The hospital refused (its cancellation deadline, a check-in): say why.
            raise errors.FailedPrecondition(
                after.status_message or "the hospital refused the cancellation",
                reason="CANCELLATION_REFUSED",
                domain=ERROR_DOMAIN,
                metadata={"order_id": after.order_id},
            )
        return patient_pb2.CancelAppointmentResponse(order=to_order(after))

    # -- reads -------------------------------------------------------------------------------

    async def get_order(
        self, request: patient_pb2.GetOrderRequest, caller: Caller
    ) -> patient_pb2.GetOrderResponse:
        """One order of the calling account, with ``poll_after`` while it is unsettled."""
        session = self._session(caller)
        row = await self._own(session, request.order_id)
        out = patient_pb2.GetOrderResponse(order=_masked_fields(to_order(row), request.read_mask))
        poll = _poll_after(row)
        if poll is not None:
            out.poll_after.CopyFrom(poll)
        return out

    async def list_orders(
        self, request: patient_pb2.ListOrdersRequest, caller: Caller
    ) -> patient_pb2.ListOrdersResponse:
        """The calling account's orders, newest first, a page at a time."""
        session = self._session(caller)
        size = request.page_size
        if size < 0:
            raise _bad(("page_size", "must not be negative"))
        size = min(size or _PAGE_DEFAULT, _PAGE_MAX)
        filters = {
            "statuses": sorted(int(s) for s in request.statuses),
            "hospital_id": request.hospital_id,
            "start": request.create_time_start.ToJsonString()
            if request.HasField("create_time_start")
            else "",
            "end": request.create_time_end.ToJsonString()
            if request.HasField("create_time_end")
            else "",
        }
        bound = hashlib.sha256(
            json.dumps([session.account_id, filters], sort_keys=True).encode()
        ).hexdigest()[:16]
        after = None
        if request.page_token:
            after = _decode_token(request.page_token, bound)
        rows = await self.store.list_for(
            session.region,
            session.account_id,
            filtered=bool(request.statuses),
            hospital_id=request.hospital_id,
            start=request.create_time_start.ToDatetime(dt.UTC)
            if request.HasField("create_time_start")
            else None,
            end=request.create_time_end.ToDatetime(dt.UTC)
            if request.HasField("create_time_end")
            else None,
            after=after,
            limit=size + 1,
        )
        orders = [(row, to_order(row)) for row in rows]
        if request.statuses:
            wanted = set(request.statuses)
            orders = [(r, o) for r, o in orders if o.status in wanted]
        page, more = orders[:size], len(orders) > size
        token = ""
        if more and page:
            last = page[-1][0]
            token = _encode_token(last.created_at, last.order_id, bound)
        return patient_pb2.ListOrdersResponse(
            orders=[_masked_fields(o, request.read_mask) for _, o in page], next_page_token=token
        )


def _masked_fields(order: patient_pb2.Order, mask: Any) -> patient_pb2.Order:
    if not mask.paths:
        return order
    try:
        out = patient_pb2.Order()
        mask.MergeMessage(order, out)
    except ValueError as err:
        raise _bad(("read_mask", str(err)[:200])) from None
    return out


def _encode_token(at: dt.datetime, order_id: str, bound: str) -> str:
    raw = json.dumps([at.isoformat(), order_id, bound, dt.datetime.now(dt.UTC).timestamp()])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_token(token: str, bound: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        at, order_id, was_bound, issued = json.loads(raw)
        when = dt.datetime.fromisoformat(at)
        if was_bound != bound:
            raise ValueError("issued for another filter")
        if dt.datetime.now(dt.UTC).timestamp() - float(issued) > 86400:
            raise ValueError("expired")
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise _bad(("page_token", f"invalid ({err})"[:100])) from None
    return when, str(order_id)

"""The order state machine: steps, the events that move an order, and what patients see.

An order is always at one **step**; two flags ride on it:

* ``unknown``: the answer to the step's hospital write was lost (or the node stopped after
  writing the intent). Only evidence read by the write's idempotency key clears it; while
  set, the order shows ``ORDER_STATUS_OUTCOME_UNKNOWN``.
* ``review``: evidence stayed missing past the deadline; an operator decides (``hplus
  orders review --resolve``), feeding the step's success or refusal event. Never an
  automatic refund.

Events are what the hospital or the payment channel said (as a direct answer, or as
evidence read by key); `advance` is the whole table, and anything not in it is refused with
`IllegalTransition`, so a late or duplicated piece of evidence cannot move an order
backwards.
"""

from __future__ import annotations

import enum

from hplus.cloud.v1 import patient_pb2

__all__ = [
    "FINAL",
    "TRANSITIONS",
    "Event",
    "IllegalTransition",
    "Step",
    "advance",
    "public_status",
    "unresolved_operation",
]


class Step(enum.StrEnum):
    """Where an order stands."""

    HOLDING = "holding"
    """HoldSlot (or, for a hospital that cannot hold, nothing yet) is being sent."""
    AWAITING_PAYMENT = "awaiting_payment"
    """The hospital holds the place; the patient pays by the deadline."""
    CONFIRMING = "confirming"
    """Paid (or free): BookAppointment of the hold, with the payment, is being sent."""
    CONFIRMED = "confirmed"
    """Booked and confirmed by the hospital."""
    CANCELLING = "cancelling"
    """CancelAppointment (of the booking, or of the hold) is being sent."""
    EXPIRING = "expiring"
    """Unpaid past the deadline: the payment is closed and the hold released."""
    REFUNDING = "refunding"
    """The hospital's evidence says the booking did not happen or was cancelled: the
    payment is being returned through the channel."""
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"


FINAL = frozenset({Step.CANCELLED, Step.FAILED, Step.EXPIRED})
"""Steps nothing moves an order out of (a late payment into one is refunded: REFUNDING)."""


class Event(enum.StrEnum):
    """What moves an order."""

    HELD = "held"
    """The hospital holds a place (HoldSlot succeeded) and a fee is due."""
    HELD_FREE = "held_free"
    """The hospital holds a place and nothing is due: confirm at once."""
    PAID = "paid"
    """The channel says the money was taken."""
    CONFIRMED = "confirmed"
    """The hospital booked (BookAppointment succeeded)."""
    REFUSED = "refused"
    """The hospital refused the step's write (confirmed by more than one probe)."""
    CANCEL = "cancel"
    """The patient asks to cancel."""
    CANCELLED = "cancelled"
    """The hospital cancelled (or released) the booking."""
    DEADLINE = "deadline"
    """The payment deadline passed unpaid."""
    RELEASED = "released"
    """The hospital released the hold after the deadline."""
    REFUNDED = "refunded"
    """The channel returned the money."""
    LATE_PAYMENT = "late_payment"
    """Money arrived for an order that will not be booked: return it."""


# The refusal of a cancellation puts the order back where it was; that step is kept on the
# row (``cancel_from``), so the table names the two it can be.
TRANSITIONS: dict[tuple[Step, Event], Step] = {
    (Step.HOLDING, Event.HELD): Step.AWAITING_PAYMENT,
    (Step.HOLDING, Event.HELD_FREE): Step.CONFIRMING,
    (Step.HOLDING, Event.REFUSED): Step.FAILED,
    (Step.AWAITING_PAYMENT, Event.PAID): Step.CONFIRMING,
    (Step.AWAITING_PAYMENT, Event.CANCEL): Step.CANCELLING,
    (Step.AWAITING_PAYMENT, Event.DEADLINE): Step.EXPIRING,
    (Step.CONFIRMING, Event.CONFIRMED): Step.CONFIRMED,
    (Step.CONFIRMING, Event.REFUSED): Step.REFUNDING,
    (Step.CONFIRMED, Event.CANCEL): Step.CANCELLING,
    (Step.CANCELLING, Event.CANCELLED): Step.CANCELLED,
    (Step.CANCELLING, Event.REFUSED): Step.CONFIRMED,
    (Step.EXPIRING, Event.RELEASED): Step.EXPIRED,
    (Step.REFUNDING, Event.REFUNDED): Step.FAILED,
    (Step.CANCELLED, Event.LATE_PAYMENT): Step.REFUNDING,
    (Step.EXPIRED, Event.LATE_PAYMENT): Step.REFUNDING,
    (Step.FAILED, Event.LATE_PAYMENT): Step.REFUNDING,
}
"""Every legal move. Some targets depend on the order (see `advance`)."""


class IllegalTransition(Exception):
    """An event that does not apply to the order's step; nothing was changed."""

    def __init__(self, step: Step, event: Event) -> None:
        super().__init__(f"{event.value} does not apply to an order at step {step.value}")
        self.step = step
        self.event = event


def advance(
    step: Step, event: Event, *, paid: bool = False, cancel_from: str = "", refund_for: str = ""
) -> Step:
    """The step ``event`` moves an order at ``step`` to.

    Args:
        step: the order's step.
        event: what happened.
        paid: whether the channel took the order's money (decides whether a cancellation
            or a release ends in a refund).
        cancel_from: the step a cancellation started from (where its refusal returns).
        refund_for: the final step a refund leads to.

    Raises:
        IllegalTransition: the event does not apply to the step.
    """
    target = TRANSITIONS.get((step, event))
    if target is None:
        raise IllegalTransition(step, event)
    if step is Step.CANCELLING and event is Event.REFUSED:
        return Step(cancel_from) if cancel_from else Step.CONFIRMED
    if target in (Step.CANCELLED, Step.EXPIRED) and paid:
        return Step.REFUNDING
    if step is Step.REFUNDING:
        return Step(refund_for) if refund_for else Step.FAILED
    return target


_PUBLIC: dict[Step, int] = {
    Step.HOLDING: patient_pb2.ORDER_STATUS_BOOKING,
    Step.AWAITING_PAYMENT: patient_pb2.ORDER_STATUS_AWAITING_PAYMENT,
    Step.CONFIRMING: patient_pb2.ORDER_STATUS_PAYING,
    Step.CONFIRMED: patient_pb2.ORDER_STATUS_CONFIRMED,
    Step.CANCELLING: patient_pb2.ORDER_STATUS_CANCELLING,
    Step.EXPIRING: patient_pb2.ORDER_STATUS_CANCELLING,
    Step.CANCELLED: patient_pb2.ORDER_STATUS_CANCELLED,
    Step.FAILED: patient_pb2.ORDER_STATUS_FAILED,
    Step.EXPIRED: patient_pb2.ORDER_STATUS_EXPIRED,
}

_OPERATION: dict[Step, int] = {
    Step.HOLDING: patient_pb2.ORDER_OPERATION_BOOK,
    Step.CONFIRMING: patient_pb2.ORDER_OPERATION_CONFIRM_PAYMENT,
    Step.CANCELLING: patient_pb2.ORDER_OPERATION_CANCEL,
    Step.EXPIRING: patient_pb2.ORDER_OPERATION_CANCEL,
}


def public_status(
    step: Step, *, unknown: bool, review: bool, refund_for: str = "", paid: bool = False
) -> int:
    """The ``OrderStatus`` patients see for an order at ``step``.

    An unresolved hospital write (or one under review) is OUTCOME_UNKNOWN; a refund shows
    the state it leads to, with the refund PENDING in ``refunds``; a free booking being
    confirmed is BOOKING (nothing is being paid).
    """
    if (unknown or review) and step in _OPERATION:
        return patient_pb2.ORDER_STATUS_OUTCOME_UNKNOWN
    if step is Step.REFUNDING:
        return _PUBLIC[Step(refund_for) if refund_for else Step.FAILED]
    if step is Step.CONFIRMING and not paid:
        return patient_pb2.ORDER_STATUS_BOOKING
    return _PUBLIC[step]


def unresolved_operation(step: Step, *, unknown: bool, review: bool) -> int:
    """The ``OrderOperation`` an OUTCOME_UNKNOWN order waits on (unspecified otherwise)."""
    if (unknown or review) and step in _OPERATION:
        return _OPERATION[step]
    return patient_pb2.ORDER_OPERATION_UNSPECIFIED

"""The order state machine, exhaustively: every (step, event) pair is either a listed move
or refused, and what patients see of every step and flag."""

from __future__ import annotations

import itertools

import pytest

from cloud.orders import (
    FINAL,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Step,
    advance,
    public_status,
    unresolved_operation,
)
from hplus.cloud.v1 import patient_pb2 as p

EXPECTED = {
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


def test_the_table_is_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(("step", "event"), list(itertools.product(Step, Event)))
def test_every_pair_moves_as_listed_or_is_refused(step: Step, event: Event) -> None:
    if (step, event) in EXPECTED:
        assert advance(step, event) is EXPECTED[step, event]
    else:
        with pytest.raises(IllegalTransition) as refused:
            advance(step, event)
        assert refused.value.step is step
        assert refused.value.event is event
        assert step.value in str(refused.value)


def test_nothing_leaves_a_final_step_but_a_late_payments_refund() -> None:
    for step in FINAL:
        for event in Event:
            if event is Event.LATE_PAYMENT:
                assert advance(step, event) is Step.REFUNDING
            else:
                with pytest.raises(IllegalTransition):
                    advance(step, event)


def test_paid_orders_end_in_a_refund_not_in_a_final_step() -> None:
    assert advance(Step.CANCELLING, Event.CANCELLED, paid=True) is Step.REFUNDING
    assert advance(Step.CANCELLING, Event.CANCELLED, paid=False) is Step.CANCELLED
    assert advance(Step.EXPIRING, Event.RELEASED, paid=True) is Step.REFUNDING
    assert advance(Step.EXPIRING, Event.RELEASED, paid=False) is Step.EXPIRED


def test_a_refused_cancellation_returns_where_it_started() -> None:
    assert (
        advance(Step.CANCELLING, Event.REFUSED, cancel_from="awaiting_payment")
        is Step.AWAITING_PAYMENT
    )
    assert advance(Step.CANCELLING, Event.REFUSED, cancel_from="confirmed") is Step.CONFIRMED


def test_a_refund_ends_where_it_was_for() -> None:
    for final in FINAL:
        assert advance(Step.REFUNDING, Event.REFUNDED, refund_for=final.value) is final


PUBLIC = {
    Step.HOLDING: p.ORDER_STATUS_BOOKING,
    Step.AWAITING_PAYMENT: p.ORDER_STATUS_AWAITING_PAYMENT,
    Step.CONFIRMING: p.ORDER_STATUS_PAYING,
    Step.CONFIRMED: p.ORDER_STATUS_CONFIRMED,
    Step.CANCELLING: p.ORDER_STATUS_CANCELLING,
    Step.EXPIRING: p.ORDER_STATUS_CANCELLING,
    Step.CANCELLED: p.ORDER_STATUS_CANCELLED,
    Step.FAILED: p.ORDER_STATUS_FAILED,
    Step.EXPIRED: p.ORDER_STATUS_EXPIRED,
}
OPERATION = {
    Step.HOLDING: p.ORDER_OPERATION_BOOK,
    Step.CONFIRMING: p.ORDER_OPERATION_CONFIRM_PAYMENT,
    Step.CANCELLING: p.ORDER_OPERATION_CANCEL,
    Step.EXPIRING: p.ORDER_OPERATION_CANCEL,
}


@pytest.mark.parametrize(
    ("step", "unknown", "review"), list(itertools.product(Step, [False, True], [False, True]))
)
def test_what_patients_see(step: Step, unknown: bool, review: bool) -> None:
    status = public_status(step, unknown=unknown, review=review, refund_for="cancelled", paid=True)
    operation = unresolved_operation(step, unknown=unknown, review=review)
    if (unknown or review) and step in OPERATION:
        assert status == p.ORDER_STATUS_OUTCOME_UNKNOWN
        assert operation == OPERATION[step]
        return
    assert operation == p.ORDER_OPERATION_UNSPECIFIED
    if step is Step.REFUNDING:
        assert status == p.ORDER_STATUS_CANCELLED  # with its refund pending
    else:
        assert status == PUBLIC[step]


def test_a_free_booking_being_confirmed_is_booking_not_paying() -> None:
    assert (
        public_status(Step.CONFIRMING, unknown=False, review=False, paid=False)
        == p.ORDER_STATUS_BOOKING
    )

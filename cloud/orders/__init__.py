"""Orders of the patient API: the coordinator that never refunds blindly.

An order books one slot for one patient: the hospital holds the place (``HoldSlot``), the
patient pays through the payment channel, the hospital books the held place with the
payment (``BookAppointment``); cancellations go through the hospital's rules and end in a
refund. Every hospital write is written as an intent with its idempotency key before it is
sent; a lost answer makes the order OUTCOME_UNKNOWN until the hospital's evidence, read by
that key, says what happened. A refund follows only evidence that the booking did not
happen or was cancelled, confirmed by more than one read; evidence missing past a deadline
puts the order in the manual-review queue (`OrderCoordinator.resolve`).

`OrderApi` is what the patient API's servicer delegates BookAppointment, CancelAppointment,
PayOrder, GetOrder and ListOrders to; `Orders` builds the parts for the node.
"""

from __future__ import annotations

from cloud.orders._api import BoundPatientLookup, OrderApi, to_order
from cloud.orders._coordinator import OrderCoordinator, SlotFees, key_for
from cloud.orders._hospital import (
    Evidence,
    HospitalAppointments,
    Lost,
    NotSent,
    Refused,
    fen_of,
    money,
)
from cloud.orders._ledger import OrdersLedger
from cloud.orders._machine import (
    FINAL,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Step,
    advance,
    public_status,
    unresolved_operation,
)
from cloud.orders._service import ORDERS_SCHEMA, Orders
from cloud.orders._store import (
    BUSINESS_ZONE,
    Conflict,
    HistoryEntry,
    OrderPayment,
    OrderRow,
    OrderStore,
)

__all__ = [
    "BUSINESS_ZONE",
    "FINAL",
    "ORDERS_SCHEMA",
    "TRANSITIONS",
    "BoundPatientLookup",
    "Conflict",
    "Event",
    "Evidence",
    "HistoryEntry",
    "HospitalAppointments",
    "IllegalTransition",
    "Lost",
    "NotSent",
    "OrderApi",
    "OrderCoordinator",
    "OrderPayment",
    "OrderRow",
    "OrderStore",
    "Orders",
    "OrdersLedger",
    "Refused",
    "SlotFees",
    "Step",
    "advance",
    "fen_of",
    "key_for",
    "money",
    "public_status",
    "to_order",
    "unresolved_operation",
]

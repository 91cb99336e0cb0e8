"""Reading a hospital's daily ledger through its tunnel (``BillingService.GetDailyLedger``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import grpc
from google.type import date_pb2, money_pb2

from cloud.reconcile._model import HospitalEntry, HospitalLedger
from hplus.hospital.v1 import billing_pb2, billing_pb2_grpc
from mesh import errors

__all__ = ["ChannelFor", "read_ledger"]

log = logging.getLogger(__name__)

ChannelFor = Callable[[str], Awaitable[grpc.aio.Channel]]
"""A channel whose calls reach one hospital's edge (`cloud.gateway.HospitalRouter.channel_for`)."""

_PAGE = 5000
_MAX_PAGES = 1000
_PAYMENTS = {
    billing_pb2.LEDGER_ENTRY_KIND_REGISTRATION: "payment",
    billing_pb2.LEDGER_ENTRY_KIND_CHARGE: "payment",
    billing_pb2.LEDGER_ENTRY_KIND_REGISTRATION_REFUND: "refund",
    billing_pb2.LEDGER_ENTRY_KIND_CHARGE_REFUND: "refund",
}


def _fen(money: money_pb2.Money) -> int:
    return int(money.units) * 100 + int(money.nanos) // 10_000_000


async def read_ledger(
    channel_for: ChannelFor, hospital_id: str, day: dt.date, *, call_timeout: float
) -> HospitalLedger:
    """Every entry of one hospital's ledger for ``day`` (its local date), all pages.

    A hospital that cannot be reached or refuses gives a ledger not read, with the error:
    reconciliation then claims nothing about that hospital's side.
    """
    try:
        stub = errors.wrap(billing_pb2_grpc.BillingServiceStub(await channel_for(hospital_id)))
        entries: list[HospitalEntry] = []
        token = ""
        closed = False
        for _ in range(_MAX_PAGES):
            reply = await stub.GetDailyLedger(
                billing_pb2.GetDailyLedgerRequest(
                    business_date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
                    page_size=_PAGE,
                    page_token=token,
                ),
                timeout=call_timeout,
            )
            closed = reply.day_closed
            for e in reply.entries:
                kind = _PAYMENTS.get(e.kind)
                if kind is None:
                    continue
                entries.append(
                    HospitalEntry(
                        hospital_id=hospital_id,
                        kind=kind,
                        receipt=e.receipt_number,
                        transaction_id=e.transaction_id,
                        cash_fen=_fen(e.fee.cash_amount),
                        entry_time=e.entry_time.ToDatetime(dt.UTC)
                        if e.HasField("entry_time")
                        else None,
                    )
                )
            token = reply.next_page_token
            if not token:
                break
        else:
            raise errors.DataLoss(f"ledger has more than {_MAX_PAGES} pages")
    except errors.StatusError as err:
        log.warning("reconcile: ledger of hospital %s for %s not read: %s", hospital_id, day, err)
        return HospitalLedger(hospital_id, error=f"{err.code.name}: {err.message}")
    return HospitalLedger(hospital_id, tuple(entries), read=True, day_closed=closed)

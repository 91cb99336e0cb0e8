"""``hplus.hospital.v1.BillingService`` over the HIS adapter and the ledger."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict

import grpc
from google.protobuf import message as pb_message
from google.protobuf import timestamp_pb2

from frontend_server import adapters as d
from frontend_server.adapters import HisRejected, RejectReason
from frontend_server.ledger import (
    HisOutcome,
    OperationError,
    OperationRecord,
    OperationState,
    not_received,
    to_operation_record,
)
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, page, require_key, require_mode
from frontend_server.services._errors import (
    HOSPITAL_ERRORS,
    InvalidRequest,
    PatientMismatch,
    Unsupported,
)
from hplus.hospital.v1 import billing_pb2, billing_pb2_grpc, common_pb2
from mesh import errors

__all__ = ["BillingServicer"]

_SERVICE = "hplus.hospital.v1.BillingService"
QUOTE = f"{_SERVICE}/QuoteCharge"
SETTLE = f"{_SERVICE}/SettleCharge"
REFUND = f"{_SERVICE}/RefundCharge"

Ctx = grpc.aio.ServicerContext


@HOSPITAL_ERRORS.servicer
class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    """Bills, quotes, charges and refunds; evidence reads answer from the ledger.

    Args:
        hospital: the servicers' collaborators.
    """

    def __init__(self, hospital: Hospital) -> None:
        self._h = hospital
        self._zone = zoneinfo.ZoneInfo(hospital.profile.business_hours.timezone)
        hospital.writes.register_probe(SETTLE, self._probe_settle)
        hospital.writes.register_probe(REFUND, self._probe_refund)

    async def ListPayableBills(
        self,
        request: billing_pb2.ListPayableBillsRequest,
        context: Ctx[billing_pb2.ListPayableBillsRequest, billing_pb2.ListPayableBillsResponse],
    ) -> billing_pb2.ListPayableBillsResponse:
        """A patient's unpaid bills, oldest first."""
        require_mode(self._h.profile, "list_payable_bills")
        patient_id = await self._h.patient_id(request.patient)
        bills = [
            convert.bill(b)
            for b in await self._h.adapter.list_bills(patient_id)
            if not request.appointment_id or b.appointment_id == request.appointment_id
        ]
        chunk, token = page(
            bills, size=request.page_size, token=request.page_token, default=50, maximum=200
        )
        return billing_pb2.ListPayableBillsResponse(bills=chunk, next_page_token=token)

    async def QuoteCharge(
        self,
        request: billing_pb2.QuoteChargeRequest,
        context: Ctx[billing_pb2.QuoteChargeRequest, billing_pb2.QuoteChargeResponse],
    ) -> billing_pb2.QuoteChargeResponse:
        """Pre-settles bills (a write: a retried quote registers nothing twice)."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "quote_charge")
        if not request.bill_ids:
            raise InvalidRequest([("bill_ids", "at least one bill is required")])
        patient_id = await self._h.patient_id(request.patient)

        async def call() -> billing_pb2.QuoteChargeResponse:
            quote = await self._h.adapter.quote(
                patient_id=patient_id,
                bill_ids=list(request.bill_ids),
                payer=convert.payer_code(request.payer_type),
            )
            out = billing_pb2.QuoteChargeResponse(
                fee=common_pb2.FeeSummary(
                    total_amount=convert.money(quote.total),
                    insurance_fund_amount=convert.money(quote.fund),
                    personal_account_amount=convert.money(quote.account),
                    cash_amount=convert.money(quote.cash),
                ),
                quote_id=quote.quote_id,
            )
            expire = convert.timestamp(quote.expires_at)
            if expire is not None:
                out.expire_time.CopyFrom(expire)
            return out

        return await self._h.writes.run(
            QUOTE, request, billing_pb2.QuoteChargeResponse, call, lambda r: r.quote_id
        )

    async def SettleCharge(
        self,
        request: billing_pb2.SettleChargeRequest,
        context: Ctx[billing_pb2.SettleChargeRequest, billing_pb2.SettleChargeResponse],
    ) -> billing_pb2.SettleChargeResponse:
        """Records a collected payment for bills in the HIS."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "settle_charge")
        violations = []
        if not request.bill_ids:
            violations.append(("bill_ids", "at least one bill is required"))
        if not request.HasField("payment"):
            violations.append(("payment", "required"))
        if violations:
            raise InvalidRequest(violations)
        payment = convert.payment_to_domain(request.payment)
        if payment is None:
            raise InvalidRequest([("payment.method", "not accepted by this hospital")])
        patient_id = await self._h.patient_id(request.patient)
        key = request.idempotency_key

        async def call() -> billing_pb2.SettleChargeResponse:
            charge = await self._h.adapter.settle(
                patient_id=patient_id,
                bill_ids=list(request.bill_ids),
                payment=payment,
                key=key,
                payer=convert.payer_code(request.payer_type),
            )
            return billing_pb2.SettleChargeResponse(charge=self._charge(charge, key, request))

        return await self._h.writes.run(
            SETTLE, request, billing_pb2.SettleChargeResponse, call, lambda r: r.charge.charge_id
        )

    async def GetCharge(
        self,
        request: billing_pb2.GetChargeRequest,
        context: Ctx[billing_pb2.GetChargeRequest, billing_pb2.GetChargeResponse],
    ) -> billing_pb2.GetChargeResponse:
        """The evidence read of a SettleCharge (or a charge by id)."""
        key, wanted = request.idempotency_key, request.charge_id
        if not key and not wanted:
            raise InvalidRequest([("idempotency_key", "idempotency_key or charge_id")])
        out = billing_pb2.GetChargeResponse()
        if not key:
            out.charge.CopyFrom(await self._read_charge(wanted))
            return out
        record = await self._evidence(key, request.refresh)
        if record is None:
            out.operation.CopyFrom(not_received(key))
            return out
        out.operation.CopyFrom(to_operation_record(record))
        if record.state is OperationState.SUCCEEDED and record.method == SETTLE:
            charge = billing_pb2.SettleChargeResponse.FromString(record.result or b"").charge
            if wanted and wanted != charge.charge_id:
                raise InvalidRequest([("charge_id", "names another charge than the key")])
            if request.refresh:
                fresh = await self._read_charge(charge.charge_id)
                fresh.idempotency_key = key
                charge = fresh
            out.charge.CopyFrom(charge)
        return out

    async def RefundCharge(
        self,
        request: billing_pb2.RefundChargeRequest,
        context: Ctx[billing_pb2.RefundChargeRequest, billing_pb2.RefundChargeResponse],
    ) -> billing_pb2.RefundChargeResponse:
        """Refunds (part of) a charge, or compensates a SettleCharge by its key."""
        require_key(request.idempotency_key)
        require_mode(self._h.profile, "refund_charge")
        target = request.WhichOneof("target")
        if target is None or not getattr(request, target):
            raise InvalidRequest([("target", "charge_id or target_idempotency_key")])
        if request.item_codes:
            raise Unsupported("refunds by item are not offered by this hospital")
        patient_id = await self._h.patient_id(request.patient)
        charge_id = request.charge_id
        if target == "target_idempotency_key":
            await self._h.writes.settle(request.target_idempotency_key)
            fenced = await self._h.writes.ledger.fence(
                request.target_idempotency_key, method=SETTLE
            )
            if fenced.empty:

                async def nothing() -> billing_pb2.RefundChargeResponse:
                    return billing_pb2.RefundChargeResponse(empty_compensation=True)

                return await self._h.writes.run(
                    REFUND, request, billing_pb2.RefundChargeResponse, nothing, lambda r: ""
                )
            if fenced.record.method != SETTLE:
                raise InvalidRequest([("target_idempotency_key", "names a write of another kind")])
            settled = billing_pb2.SettleChargeResponse.FromString(fenced.record.result or b"")
            charge_id = settled.charge.charge_id
        amount = None
        if request.HasField("amount"):
            amount = d.Money(convert.fen(request.amount), request.amount.currency_code or "CNY")
        key = request.idempotency_key

        async def call() -> billing_pb2.RefundChargeResponse:
            charge = await self._h.adapter.get_charge(charge_id)
            if charge.patient_id != patient_id:
                raise PatientMismatch("the charge belongs to another patient")
            refund = await self._h.adapter.refund(
                charge_id=charge_id, key=key, amount=amount, reason=request.reason
            )
            out = convert.refund(refund)
            out.idempotency_key = key
            return billing_pb2.RefundChargeResponse(refund=out)

        return await self._h.writes.run(
            REFUND, request, billing_pb2.RefundChargeResponse, call, lambda r: r.refund.refund_id
        )

    async def GetRefund(
        self,
        request: billing_pb2.GetRefundRequest,
        context: Ctx[billing_pb2.GetRefundRequest, billing_pb2.GetRefundResponse],
    ) -> billing_pb2.GetRefundResponse:
        """The evidence read of a RefundCharge (or a refund by id)."""
        key, wanted = request.idempotency_key, request.refund_id
        if not key and not wanted:
            raise InvalidRequest([("idempotency_key", "idempotency_key or refund_id")])
        out = billing_pb2.GetRefundResponse()
        if not key:
            out.refund.CopyFrom(await self._read_refund(wanted))
            return out
        record = await self._evidence(key, request.refresh)
        if record is None:
            out.operation.CopyFrom(not_received(key))
            return out
        out.operation.CopyFrom(to_operation_record(record))
        if record.state is OperationState.SUCCEEDED and record.method == REFUND:
            response = billing_pb2.RefundChargeResponse.FromString(record.result or b"")
            if response.HasField("refund"):
                refund = response.refund
                if wanted and wanted != refund.refund_id:
                    raise InvalidRequest([("refund_id", "names another refund than the key")])
                if request.refresh:
                    fresh = await self._read_refund(refund.refund_id)
                    fresh.idempotency_key = key
                    refund = fresh
                out.refund.CopyFrom(refund)
        return out

    async def GetDailyLedger(
        self,
        request: billing_pb2.GetDailyLedgerRequest,
        context: Ctx[billing_pb2.GetDailyLedgerRequest, billing_pb2.GetDailyLedgerResponse],
    ) -> billing_pb2.GetDailyLedgerResponse:
        """The HIS ledger of one business day, with totals per kind."""
        require_mode(self._h.profile, "get_daily_ledger")
        day = convert.from_date(request.business_date)
        if day is None:
            raise InvalidRequest([("business_date", "required")])
        as_of = timestamp_pb2.Timestamp()
        as_of.GetCurrentTime()
        ledger = await self._h.adapter.daily_ledger(day)
        entries = [convert.ledger_entry(e) for e in ledger.entries]
        if request.kind:
            entries = [e for e in entries if e.kind == request.kind]
        totals: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for e in entries:
            row = totals[e.kind]
            row[0] += 1
            row[1] += convert.fen(e.fee.total_amount)
            row[2] += convert.fen(e.fee.cash_amount)
        chunk, token = page(
            entries, size=request.page_size, token=request.page_token, default=500, maximum=5000
        )
        return billing_pb2.GetDailyLedgerResponse(
            entries=chunk,
            next_page_token=token,
            totals=[
                billing_pb2.LedgerTotal(
                    kind=kind,  # type: ignore[arg-type]
                    count=row[0],
                    total_amount=convert.money(d.Money(row[1])),
                    cash_amount=convert.money(d.Money(row[2])),
                )
                for kind, row in sorted(totals.items())
            ],
            day_closed=ledger.closed,
            as_of_time=as_of,
        )

    # -- helpers -------------------------------------------------------------------------

    async def _evidence(self, key: str, refresh: bool) -> OperationRecord | None:
        ledger = self._h.writes.ledger
        record = await ledger.get(key)
        if refresh and record is not None and record.state is OperationState.UNKNOWN:
            await self._h.writes.settle(key)
            record = await ledger.get(key)
        return record

    @staticmethod
    def _charge(
        charge: d.Charge, key: str, request: billing_pb2.SettleChargeRequest | None
    ) -> billing_pb2.Charge:
        out = convert.charge(charge, payment=request.payment if request is not None else None)
        out.idempotency_key = key
        return out

    async def _read_charge(self, charge_id: str) -> billing_pb2.Charge:
        try:
            return convert.charge(await self._h.adapter.get_charge(charge_id))
        except HisRejected as err:
            if err.reason is RejectReason.NOT_FOUND:
                raise errors.NotFound("no such charge") from err
            raise

    async def _read_refund(self, refund_id: str) -> billing_pb2.Refund:
        try:
            return convert.refund(await self._h.adapter.get_refund(refund_id))
        except HisRejected as err:
            if err.reason is RejectReason.NOT_FOUND:
                raise errors.NotFound("no such refund") from err
            raise

    # -- probes --------------------------------------------------------------------------

    async def _probe_settle(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        adapter = self._h.adapter
        settle = request if isinstance(request, billing_pb2.SettleChargeRequest) else None
        if adapter.capabilities.charge_query_by_key:
            charge = await adapter.find_charge_by_key(key)
        elif settle is not None and settle.payment.transaction_id:
            # No query by our key: the day's ledger names the charge by the payment's
            # transaction id, which is unique per payment.
            today = dt.datetime.now(self._zone).date()
            matches = {
                e.receipt_number
                for e in (await adapter.daily_ledger(today)).entries
                if e.kind == "CHARGE"
                and e.patient_id == settle.patient.patient_id
                and e.transaction_id == settle.payment.transaction_id
            }
            if len(matches) > 1:
                raise LookupError("ambiguous evidence")
            charge = await adapter.get_charge(matches.pop()) if matches else None
        else:
            raise LookupError("no evidence available")
        if charge is None:
            return None
        response = billing_pb2.SettleChargeResponse(charge=self._charge(charge, key, settle))
        return HisOutcome(receipt=charge.charge_id, result=response.SerializeToString())

    async def _probe_refund(
        self, key: str, request: pb_message.Message | None
    ) -> HisOutcome | OperationError | None:
        if not self._h.adapter.capabilities.refund_query_by_key:
            raise LookupError("no evidence available")
        refund = await self._h.adapter.find_refund_by_key(key)
        if refund is None:
            return None
        out = convert.refund(refund)
        out.idempotency_key = key
        response = billing_pb2.RefundChargeResponse(refund=out)
        return HisOutcome(receipt=refund.refund_id, result=response.SerializeToString())

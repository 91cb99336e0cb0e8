"""Outpatient billing of the simulated HIS: bills, quotes, charges, refunds, the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from tools.his_sim._model import Bill, Charge, HisError, Payment, Quote, Refund
from tools.his_sim._seed import make_bill
from tools.his_sim._state import CoreState, split_fee

__all__ = ["BillingOps", "LedgerLine"]


@dataclass(frozen=True)
class LedgerLine:
    """One line of the daily ledger; ``kind`` REG, REG_REFUND, CHARGE or CHARGE_REFUND."""

    kind: str
    receipt: str
    patient_id: str
    appt_id: str
    payer: str
    total: int
    cash: int
    method: str
    transaction_id: str
    time: dt.datetime


class BillingOps(CoreState):
    """Billing operations on top of the hospital state."""

    # ----------------------------------------------------------------- billing

    def unpaid_bills(self, patient_id: str) -> list[Bill]:
        """Lists a patient's unpaid bills, oldest first.

        Args:
            patient_id: The patient.

        Returns:
            Bills.
        """
        self.patient(patient_id)
        return sorted(
            (b for b in self.bills.values() if b.patient_id == patient_id and b.status == "UNPAID"),
            key=lambda b: (b.order_time, b.bill_id),
        )

    def add_bill(self, patient_id: str) -> Bill:
        """Issues a new unpaid bill for a patient (a doctor's order after a visit).

        Args:
            patient_id: The patient.

        Returns:
            The bill.
        """
        self.patient(patient_id)
        dept = self.departments["0101"]
        doctor = min(
            (d for d in self.doctors.values() if dept.dept_id in d.dept_ids),
            key=lambda d: d.doctor_id,
        )
        bill = make_bill(
            self._rng, self._next_id("CF"), patient_id, dept.dept_id, doctor.doctor_id, self.now()
        )
        self.bills[bill.bill_id] = bill
        self._mark("BILL", bill.bill_id)
        return bill

    def _payable(self, patient_id: str, bill_ids: Iterable[str]) -> list[Bill]:
        ids = list(bill_ids)
        if not ids:
            raise HisError("INVALID", "处方号不能为空")
        bills = []
        for bill_id in ids:
            bill = self.bills.get(bill_id)
            if bill is None or bill.patient_id != patient_id:
                raise HisError("NOT_FOUND", f"处方{bill_id}不存在")
            if bill.status != "UNPAID":
                raise HisError("BILL_NOT_PAYABLE", f"处方{bill_id}已缴费或已作废")
            bills.append(bill)
        return bills

    def quote(self, patient_id: str, bill_ids: Iterable[str], payer: str = "SELF") -> Quote:
        """Pre-settles bills (预结算) without recording a charge.

        Args:
            patient_id: The patient.
            bill_ids: Bills to pay together.
            payer: Payer code.

        Returns:
            The quote.

        Raises:
            HisError: On any refusal.
        """
        self.patient(patient_id)
        bills = self._payable(patient_id, bill_ids)
        total = sum(b.total for b in bills)
        fund, account, cash = split_fee(total, payer)
        quote = Quote(
            self._next_id("YJ"),
            patient_id,
            [b.bill_id for b in bills],
            payer,
            total,
            fund,
            account,
            cash,
            self.now() + dt.timedelta(minutes=30),
        )
        self.quotes[quote.quote_id] = quote
        return quote

    def settle(
        self,
        patient_id: str,
        bill_ids: Iterable[str],
        payment: Payment,
        *,
        payer: str = "SELF",
        ref: str = "",
    ) -> Charge:
        """Records a payment for bills (结算).

        Args:
            patient_id: The patient.
            bill_ids: Bills paid.
            payment: Payment collected; its amount must equal the cash part.
            payer: Payer code.
            ref: Caller's reference.

        Returns:
            The charge.

        Raises:
            HisError: On any refusal.
        """
        self.patient(patient_id)
        if ref and any(c.caller_ref == ref for c in self.charges.values()):
            raise HisError("DUPLICATE_REF", f"订单号{ref}重复")
        bills = self._payable(patient_id, bill_ids)
        total = sum(b.total for b in bills)
        fund, account, cash = split_fee(total, payer)
        if payment.amount != cash:
            raise HisError("AMOUNT_MISMATCH", f"支付金额{payment.amount}与应付金额{cash}不符(分)")
        now = self._stamp()
        charge = Charge(
            self._next_id("JS"),
            patient_id,
            [b.bill_id for b in bills],
            payer,
            total,
            fund,
            account,
            cash,
            payment,
            "SETTLED",
            0,
            f"EI{self._rng.randrange(10**10):010d}",
            "请到门诊药房取药"
            if any(b.title.startswith("西药") for b in bills)
            else "请到检验科采血",
            now,
            ref,
        )
        for bill in bills:
            bill.status = "PAID"
            self._mark("BILL", bill.bill_id)
        self.charges[charge.charge_id] = charge
        self._mark("CHARGE", charge.charge_id)
        return charge

    def charge(self, charge_id: str) -> Charge:
        """Returns a charge by id.

        Args:
            charge_id: HIS settlement id.

        Returns:
            The charge.

        Raises:
            HisError: NOT_FOUND.
        """
        charge = self.charges.get(charge_id)
        if charge is None:
            raise HisError("NOT_FOUND", f"结算记录{charge_id}不存在")
        return charge

    def charge_by_ref(self, ref: str) -> Charge:
        """Returns the charge a caller reference made.

        Args:
            ref: Caller reference.

        Returns:
            The charge.

        Raises:
            HisError: NOT_FOUND.
        """
        for charge in self.charges.values():
            if ref and charge.caller_ref == ref:
                return charge
        raise HisError("NOT_FOUND", f"订单号{ref}无对应结算记录")

    def refund(
        self, charge_id: str, *, amount: int | None = None, reason: str = "", ref: str = ""
    ) -> Refund:
        """Refunds all (``amount`` None) or part of a charge's cash (退费).

        Args:
            charge_id: The charge.
            amount: Cash to refund in fen; None for everything not yet refunded.
            reason: Why.
            ref: Caller's reference.

        Returns:
            The refund (SUCCEEDED).

        Raises:
            HisError: On any refusal.
        """
        if ref and any(r.caller_ref == ref for r in self.refunds.values()):
            raise HisError("DUPLICATE_REF", f"订单号{ref}重复")
        charge = self.charge(charge_id)
        left = charge.cash - charge.refunded_cash
        cash = left if amount is None else amount
        if cash <= 0 or cash > left:
            raise HisError("REFUND_EXCEEDS_CHARGE", f"退费金额{cash}超出可退金额{left}(分)")
        total = cash if charge.cash == 0 else charge.total * cash // charge.cash
        now = self._stamp()
        refund = Refund(
            self._next_id("TF"),
            charge_id,
            charge.patient_id,
            cash,
            total,
            reason,
            "SUCCEEDED",
            now,
            now,
            charge.payment.method,
            ref,
        )
        charge.refunded_cash += cash
        charge.status = "REFUNDED" if charge.refunded_cash == charge.cash else "PARTIALLY_REFUNDED"
        self.refunds[refund.refund_id] = refund
        self._mark("REFUND", refund.refund_id)
        self._mark("CHARGE", charge_id)
        return refund

    def get_refund(self, refund_id: str) -> Refund:
        """Returns a refund by id.

        Args:
            refund_id: HIS refund id.

        Returns:
            The refund.

        Raises:
            HisError: NOT_FOUND.
        """
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise HisError("NOT_FOUND", f"退费记录{refund_id}不存在")
        return refund

    def refund_by_ref(self, ref: str) -> Refund:
        """Returns the refund a caller reference made.

        Args:
            ref: Caller reference.

        Returns:
            The refund.

        Raises:
            HisError: NOT_FOUND.
        """
        for refund in self.refunds.values():
            if ref and refund.caller_ref == ref:
                return refund
        raise HisError("NOT_FOUND", f"订单号{ref}无对应退费记录")

    def ledger(self, day: dt.date) -> list[LedgerLine]:
        """Lists the day's ledger (registrations, charges and their refunds) by time.

        Args:
            day: Business day (local).

        Returns:
            Ledger lines.
        """
        lines: list[LedgerLine] = []
        for appt in self.appointments.values():
            method = appt.payment.method if appt.payment else "HOSPITAL"
            txn = appt.payment.transaction_id if appt.payment else ""
            if appt.book_time is not None and appt.book_time.date() == day:
                lines.append(
                    LedgerLine(
                        "REG",
                        appt.receipt_number,
                        appt.patient_id,
                        appt.appt_id,
                        appt.payer,
                        appt.fee_total,
                        appt.fee_cash,
                        method,
                        txn,
                        appt.book_time,
                    )
                )
            if appt.cancel_time is not None and appt.cancel_time.date() == day:
                lines.append(
                    LedgerLine(
                        "REG_REFUND",
                        appt.refund_receipt,
                        appt.patient_id,
                        appt.appt_id,
                        appt.payer,
                        appt.fee_total,
                        appt.fee_cash,
                        method,
                        txn,
                        appt.cancel_time,
                    )
                )
        for charge in self.charges.values():
            if charge.settle_time.date() == day:
                lines.append(
                    LedgerLine(
                        "CHARGE",
                        charge.charge_id,
                        charge.patient_id,
                        "",
                        charge.payer,
                        charge.total,
                        charge.cash,
                        charge.payment.method,
                        charge.payment.transaction_id,
                        charge.settle_time,
                    )
                )
        for refund in self.refunds.values():
            if refund.create_time.date() == day:
                charge = self.charges[refund.charge_id]
                lines.append(
                    LedgerLine(
                        "CHARGE_REFUND",
                        refund.refund_id,
                        refund.patient_id,
                        "",
                        charge.payer,
                        refund.total,
                        refund.cash,
                        refund.payment_method,
                        charge.payment.transaction_id,
                        refund.create_time,
                    )
                )
        return sorted(lines, key=lambda line: (line.time, line.receipt))

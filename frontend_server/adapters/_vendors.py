"""The documented vocabulary of each dialect: default code tables, paths, trade codes.

These are the vendor templates' defaults (the dialect as its vendor documents it); a
hospital's :class:`~frontend_server.adapters.DialectSettings` overrides any entry. Code
tables map an HIS code to the neutral value of :data:`NEUTRAL_CODES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from frontend_server.adapters._errors import RejectReason

__all__ = [
    "DEFAULT_CODE_TABLES",
    "DEFAULT_REST_PATHS",
    "DEFAULT_SOAP_TRADE_CODES",
    "NEUTRAL_CODES",
    "UNAVAILABLE_CODE",
]

UNAVAILABLE_CODE = "UNAVAILABLE"
"""Neutral value of the ``error`` table for a vendor code meaning "HIS down"."""

_REASONS = frozenset(r.value for r in RejectReason) | {UNAVAILABLE_CODE}

NEUTRAL_CODES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "gender": frozenset({"M", "F", "U", ""}),
        "title": frozenset({"CHIEF", "ASSOCIATE_CHIEF", "ATTENDING", "RESIDENT", "OTHER"}),
        "period": frozenset({"AM", "PM", "EVE", ""}),
        "clinic_type": frozenset({"GENERAL", "EXPERT", "RENOWNED", ""}),
        "slot_mode": frozenset({"UNLIMITED", "SESSION", "TIMED", "NUMBERED"}),
        "slot_status": frozenset({"FREE", "FULL", "HELD", "UNAVAILABLE"}),
        "schedule_status": frozenset({"NORMAL", "SUSPENDED"}),
        "appointment_status": frozenset({"HELD", "BOOKED", "CANCELLED", "RELEASED"}),
        "payer": frozenset({"SELF", "EMPLOYEE", "RESIDENT", "PUBLIC"}),
        "payment_method": frozenset({"WECHAT", "ALIPAY", "UNIONPAY", "HOSPITAL", ""}),
        "id_type": frozenset({"RESIDENT", "PASSPORT", "OTHER"}),
        "card_type": frozenset({"HOSPITAL", "SOCIAL", "HEALTH", "OTHER"}),
        "charge_status": frozenset({"SETTLED", "PARTIALLY_REFUNDED", "REFUNDED"}),
        "refund_status": frozenset({"SUCCESS", "PENDING", "FAILED"}),
        "ledger_kind": frozenset(
            {"REGISTRATION", "REGISTRATION_REFUND", "CHARGE", "CHARGE_REFUND"}
        ),
        "report_type": frozenset({"LAB", "IMAGING"}),
        "report_status": frozenset({"FINAL", "PENDING"}),
        "error": _REASONS,
    }
)
"""Code table name -> the neutral values its entries may map to."""

R = RejectReason

_REST: dict[str, dict[str, str]] = {
    "gender": {"1": "M", "2": "F", "0": "U", "": ""},
    "title": {"231": "CHIEF", "232": "ASSOCIATE_CHIEF", "233": "ATTENDING", "234": "RESIDENT"},
    "period": {"AM": "AM", "PM": "PM", "EVE": "EVE", "": ""},
    "clinic_type": {"PT": "GENERAL", "ZJ": "EXPERT", "MZJ": "RENOWNED", "": ""},
    "slot_mode": {
        "UNLIMITED": "UNLIMITED",
        "HALF_DAY": "SESSION",
        "TIME": "TIMED",
        "NUMBER": "NUMBERED",
    },
    "slot_status": {"1": "FREE", "0": "FULL", "2": "HELD", "9": "UNAVAILABLE"},
    "schedule_status": {"1": "NORMAL", "0": "SUSPENDED"},
    "appointment_status": {
        "LOCKED": "HELD",
        "BOOKED": "BOOKED",
        "CANCELLED": "CANCELLED",
        "UNLOCKED": "RELEASED",
    },
    "payer": {"01": "SELF", "02": "EMPLOYEE", "03": "RESIDENT", "04": "PUBLIC"},
    "payment_method": {"WX": "WECHAT", "ZFB": "ALIPAY", "YL": "UNIONPAY", "XJ": "HOSPITAL"},
    "id_type": {"01": "RESIDENT", "03": "PASSPORT", "99": "OTHER"},
    "card_type": {"1": "HOSPITAL", "2": "SOCIAL", "3": "HEALTH", "9": "OTHER"},
    "charge_status": {"1": "SETTLED", "2": "PARTIALLY_REFUNDED", "3": "REFUNDED"},
    "refund_status": {"SUCCESS": "SUCCESS"},
    "ledger_kind": {
        "GH": "REGISTRATION",
        "TH": "REGISTRATION_REFUND",
        "JF": "CHARGE",
        "TF": "CHARGE_REFUND",
    },
    "report_type": {"LIS": "LAB", "PACS": "IMAGING"},
    "report_status": {"FINAL": "FINAL", "PENDING": "PENDING"},
    "error": {
        "40001": R.INVALID_ARGUMENT,
        "40401": R.NOT_FOUND,
        "40901": R.DUPLICATE_KEY,
        "42201": R.SLOT_FULL,
        "42202": R.BOOKING_RULE_VIOLATED,
        "42203": R.HOLD_EXPIRED,
        "42204": R.AMOUNT_MISMATCH,
        "42205": R.BILL_NOT_PAYABLE,
        "42206": R.INSUFFICIENT_AMOUNT,
        "42207": R.CANCEL_DEADLINE_PASSED,
        "42208": R.IDENTITY_MISMATCH,
        "42209": R.REPORT_ARCHIVED,
        "42210": R.PATIENT_MISMATCH,
        "42211": R.BOOKING_CLOSED,
        "50301": UNAVAILABLE_CODE,
    },
}

_SOAP: dict[str, dict[str, str]] = {
    "gender": {"1": "M", "2": "F", "0": "U", "": ""},
    "title": {"1": "CHIEF", "2": "ASSOCIATE_CHIEF", "3": "ATTENDING", "4": "RESIDENT"},
    "period": {"1": "AM", "2": "PM", "3": "EVE", "": ""},
    "clinic_type": {"1": "GENERAL", "2": "EXPERT", "3": "RENOWNED", "": ""},
    "slot_mode": {"0": "UNLIMITED", "1": "SESSION", "2": "TIMED", "3": "NUMBERED"},
    "slot_status": {"0": "FREE", "1": "FULL", "2": "HELD", "9": "UNAVAILABLE"},
    "schedule_status": {"1": "NORMAL", "2": "SUSPENDED"},
    "appointment_status": {"0": "HELD", "1": "BOOKED", "2": "CANCELLED", "3": "RELEASED"},
    "payer": {"1": "SELF", "2": "EMPLOYEE", "3": "RESIDENT", "4": "PUBLIC"},
    "payment_method": {"1": "WECHAT", "2": "ALIPAY", "3": "UNIONPAY", "9": "HOSPITAL", "": ""},
    "id_type": {"1": "RESIDENT", "2": "PASSPORT", "9": "OTHER"},
    "card_type": {"1": "HOSPITAL", "2": "SOCIAL", "3": "HEALTH", "9": "OTHER"},
    "charge_status": {"1": "SETTLED", "2": "PARTIALLY_REFUNDED", "3": "REFUNDED"},
    "refund_status": {"1": "SUCCESS"},
    "ledger_kind": {
        "1": "REGISTRATION",
        "2": "REGISTRATION_REFUND",
        "3": "CHARGE",
        "4": "CHARGE_REFUND",
    },
    "report_type": {"1": "LAB", "2": "IMAGING"},
    "report_status": {"1": "FINAL", "0": "PENDING"},
    "error": {
        "1001": R.INVALID_ARGUMENT,
        "1002": R.NOT_FOUND,
        "1003": R.DUPLICATE_KEY,
        "2001": R.SLOT_FULL,
        "2002": R.BOOKING_RULE_VIOLATED,
        "2003": R.HOLD_EXPIRED,
        "2004": R.AMOUNT_MISMATCH,
        "2005": R.CANCEL_DEADLINE_PASSED,
        "2006": R.PATIENT_MISMATCH,
        "2007": R.BOOKING_CLOSED,
        "3001": R.BILL_NOT_PAYABLE,
        "3002": R.INSUFFICIENT_AMOUNT,
        "4001": R.REPORT_ARCHIVED,
        "5001": R.IDENTITY_MISMATCH,
    },
}

_DB: dict[str, dict[str, str]] = {
    "gender": {"男": "M", "女": "F", "未知": "U", "": ""},
    "title": {"ZR": "CHIEF", "FZR": "ASSOCIATE_CHIEF", "ZZ": "ATTENDING", "ZY": "RESIDENT"},
    "period": {"01": "AM", "02": "PM", "03": "EVE", "": ""},
    "clinic_type": {"普通号": "GENERAL", "专家号": "EXPERT", "名医号": "RENOWNED", "": ""},
    "slot_mode": {"BXH": "UNLIMITED", "BT": "SESSION", "FSD": "TIMED", "XH": "NUMBERED"},
    "slot_status": {"0": "FREE", "1": "FULL", "2": "HELD", "9": "UNAVAILABLE"},
    "schedule_status": {"N": "NORMAL", "Y": "SUSPENDED"},
    "appointment_status": {"L": "HELD", "R": "BOOKED", "C": "CANCELLED", "U": "RELEASED"},
    "payer": {"ZF": "SELF", "ZG": "EMPLOYEE", "JM": "RESIDENT", "GF": "PUBLIC"},
    "payment_method": {
        "WX": "WECHAT",
        "ZFB": "ALIPAY",
        "YL": "UNIONPAY",
        "CASH": "HOSPITAL",
        "": "",
    },
    "id_type": {"SFZ": "RESIDENT", "HZ": "PASSPORT", "QT": "OTHER"},
    "card_type": {"JZK": "HOSPITAL", "SBK": "SOCIAL", "DZJKK": "HEALTH", "QT": "OTHER"},
    "charge_status": {"1": "SETTLED", "2": "PARTIALLY_REFUNDED", "3": "REFUNDED"},
    "refund_status": {"1": "SUCCESS"},
    "ledger_kind": {
        "GH": "REGISTRATION",
        "TH": "REGISTRATION_REFUND",
        "SF": "CHARGE",
        "TF": "CHARGE_REFUND",
    },
    "report_type": {"LIS": "LAB", "PACS": "IMAGING"},
    "report_status": {"1": "FINAL", "0": "PENDING"},
    "error": {
        "E001": R.INVALID_ARGUMENT,
        "E002": R.NOT_FOUND,
        "E003": R.DUPLICATE_KEY,
        "E101": R.SLOT_FULL,
        "E102": R.BOOKING_RULE_VIOLATED,
        "E103": R.HOLD_EXPIRED,
        "E104": R.AMOUNT_MISMATCH,
        "E105": R.CANCEL_DEADLINE_PASSED,
        "E106": R.PATIENT_MISMATCH,
        "E107": R.BOOKING_CLOSED,
        "E201": R.BILL_NOT_PAYABLE,
        "E202": R.INSUFFICIENT_AMOUNT,
        "E301": R.REPORT_ARCHIVED,
        "E401": R.IDENTITY_MISMATCH,
        "-9": UNAVAILABLE_CODE,
    },
}


def _freeze(tables: dict[str, dict[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType(
        {name: MappingProxyType({k: str(v) for k, v in t.items()}) for name, t in tables.items()}
    )


DEFAULT_CODE_TABLES: Mapping[str, Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {"rest": _freeze(_REST), "soap": _freeze(_SOAP), "db": _freeze(_DB)}
)
"""Dialect -> code table -> HIS code -> neutral value."""

DEFAULT_REST_PATHS: Mapping[str, str] = MappingProxyType(
    {
        "list_departments": "/depts",
        "list_doctors": "/doctors",
        "list_schedules": "/schedules",
        "list_slots": "/schedules/{id}/sources",
        "list_slots_between": "/sources",
        "get_changes": "/changes",
        "hold": "/registrations/lock",
        "release_hold": "/registrations/unlock",
        "book": "/registrations",
        "cancel": "/registrations/{id}/cancel",
        "get_appointment": "/registrations/{id}",
        "list_appointments": "/registrations",
        "list_bills": "/patients/{id}/unpaid-bills",
        "quote": "/settlements/preview",
        "settle": "/settlements",
        "get_charge": "/settlements/{id}",
        "find_charge": "/settlements",
        "refund": "/settlements/{id}/refund",
        "get_refund": "/refunds/{id}",
        "find_refund": "/refunds",
        "daily_ledger": "/ledger",
        "list_reports": "/patients/{id}/reports",
        "get_report": "/reports/{id}",
        "get_archived_report": "/archive/reports/{id}",
        "register_patient": "/patients",
        "find_patients": "/patients",
    }
)
"""REST operation -> path below the base path (``{id}`` is the resource id)."""

DEFAULT_SOAP_TRADE_CODES: Mapping[str, str] = MappingProxyType(
    {
        "list_departments": "1001",
        "list_doctors": "1002",
        "list_schedules": "1003",
        "list_slots": "1004",
        "list_slots_between": "1005",
        "hold": "2001",
        "release_hold": "2002",
        "book": "2003",
        "cancel": "2004",
        "get_appointment": "2005",
        "list_appointments": "2006",
        "list_bills": "3001",
        "quote": "3002",
        "settle": "3003",
        "get_charge": "3004",
        "refund": "3005",
        "get_refund": "3006",
        "daily_ledger": "3007",
        "list_reports": "4001",
        "get_report": "4002",
        "get_archived_report": "4003",
        "register_patient": "5001",
        "find_patients": "5002",
    }
)
"""SOAP operation -> trade code."""

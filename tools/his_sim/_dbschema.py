"""Schema and codes of the database HIS: base tables, views, code tables, error codes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Date, DateTime, Integer, String, Text

from tools.his_sim._model import CST, HisError

__all__ = [
    "CARD",
    "CERT",
    "ERRORS",
    "FEE_TYPE",
    "KEYS",
    "LEVEL",
    "MODE",
    "NOON",
    "OUTAGE_CODE",
    "PARAMS",
    "PAY_MODE",
    "REG_STATUS",
    "SEX",
    "SOURCE_STATUS",
    "TABLES",
    "TITLE",
    "VIEWS",
    "int_param",
    "naive",
    "rev",
    "yn",
]

SEX = {"M": "男", "F": "女", "U": "未知", "": ""}
TITLE = {"CHIEF": "ZR", "ASSOCIATE_CHIEF": "FZR", "ATTENDING": "ZZ", "RESIDENT": "ZY"}
NOON = {"AM": "01", "PM": "02", "EVE": "03"}
LEVEL = {"GENERAL": "普通号", "EXPERT": "专家号", "RENOWNED": "名医号"}
MODE = {"UNLIMITED": "BXH", "SESSION": "BT", "TIMED": "FSD", "NUMBERED": "XH"}
FEE_TYPE = {"SELF": "ZF", "EMPLOYEE": "ZG", "RESIDENT": "JM", "PUBLIC": "GF"}
PAY_MODE = {"WECHAT": "WX", "ALIPAY": "ZFB", "UNIONPAY": "YL", "HOSPITAL": "CASH"}
CERT = {"RESIDENT": "SFZ", "PASSPORT": "HZ", "OTHER": "QT"}
CARD = {"HOSPITAL": "JZK", "SOCIAL": "SBK", "HEALTH": "DZJKK"}
REG_STATUS = {"HELD": "L", "BOOKED": "R", "CANCELLED": "C", "RELEASED": "U"}
SOURCE_STATUS = {"FREE": "0", "BUSY": "1", "BUSY_TENTATIVE": "2", "BUSY_UNAVAILABLE": "9"}
ERRORS = {
    "INVALID": "E001",
    "NOT_FOUND": "E002",
    "DUPLICATE_REF": "E003",
    "SLOT_FULL": "E101",
    "RULE_VIOLATED": "E102",
    "HOLD_EXPIRED": "E103",
    "AMOUNT_MISMATCH": "E104",
    "CANCEL_DEADLINE_PASSED": "E105",
    "PATIENT_MISMATCH": "E106",
    "BOOKING_CLOSED": "E107",
    "BILL_NOT_PAYABLE": "E201",
    "REFUND_EXCEEDS_CHARGE": "E202",
    "ARCHIVED": "E301",
    "IDENTITY_MISMATCH": "E401",
}
PARAMS = {
    "name": "PATIENT_NAME",
    "id_number": "CERT_NO",
    "birth_date": "BIRTHDAY",
    "gender": "SEX",
    "phone": "MOBILE",
}
"""Neutral names of refusable parameters → this dialect's IN_PARAMS keys."""
OUTAGE_CODE = "-9"
"""RET_CODE written for every request during a "503" outage."""


def _s(length: int = 64) -> String:
    return String(length)


def naive(value: dt.datetime | None) -> dt.datetime | None:
    """Converts an aware time to naive local time (UTC+8), as the HIS stores it.

    Args:
        value: Aware datetime or None.

    Returns:
        Naive datetime or None.
    """
    return None if value is None else value.astimezone(CST).replace(tzinfo=None)


def yn(flag: bool) -> str:
    """Renders a flag as "Y" or "N".

    Args:
        flag: The flag.

    Returns:
        "Y" or "N".
    """
    return "Y" if flag else "N"


def rev(table: dict[str, str], value: str, name: str) -> str:
    """Maps a vendor code back to its neutral value.

    Args:
        table: Neutral value -> vendor code.
        value: Vendor code received.
        name: Parameter name, for the error.

    Returns:
        The neutral value.

    Raises:
        HisError: INVALID for an unknown code.
    """
    for neutral, code in table.items():
        if code == value:
            return neutral
    raise HisError("INVALID", f"参数{name}取值{value!r}无效", param=name)


def int_param(params: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    """Reads an integer parameter (JSON number or digit string).

    Args:
        params: Procedure parameters.
        name: Parameter name.
        required: Whether a missing value is an error.

    Returns:
        The value, or None when optional and missing.

    Raises:
        HisError: INVALID.
    """
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise HisError("INVALID", f"缺少必填参数{name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise HisError("INVALID", f"参数{name}须为整数")
    try:
        return int(value)
    except ValueError as err:
        raise HisError("INVALID", f"参数{name}须为整数") from err


# Base table name -> (columns, primary key columns). Views select every column of one table.
TABLES: dict[str, list[tuple[str, Any]]] = {
    "HIS_DEPT": [
        ("DEPT_ID", _s(20)),
        ("DEPT_NAME", _s(50)),
        ("PARENT_ID", _s(20)),
        ("SUBJECT_CODE", _s(20)),
        ("DEPT_ADDR", _s(100)),
        ("DEPT_DESC", Text()),
        ("IS_ONLINE", _s(1)),
        ("SORT_NO", Integer()),
        ("MODIFY_TIME", DateTime()),
    ],
    "HIS_DOCTOR": [
        ("DOC_ID", _s(20)),
        ("DEPT_ID", _s(20)),
        ("DOC_NAME", _s(50)),
        ("TITLE_CODE", _s(10)),
        ("TITLE_NAME", _s(50)),
        ("SEX", _s(4)),
        ("GOOD_AT", Text()),
        ("DOC_DESC", Text()),
        ("PHOTO_URL", _s(200)),
        ("IS_ONLINE", _s(1)),
        ("MODIFY_TIME", DateTime()),
    ],
    "HIS_SCHEDULE": [
        ("SCHEDULE_ID", _s(20)),
        ("DEPT_ID", _s(20)),
        ("DOC_ID", _s(20)),
        ("WORK_DATE", Date()),
        ("NOON_CODE", _s(2)),
        ("BEGIN_TIME", _s(5)),
        ("END_TIME", _s(5)),
        ("ROOM", _s(100)),
        ("REG_LEVEL", _s(20)),
        ("REG_FEE_FEN", Integer()),
        ("DIAG_FEE_FEN", Integer()),
        ("SOURCE_MODE", _s(4)),
        ("TOTAL_NUM", Integer()),
        ("REMAIN_NUM", Integer()),
        ("STOP_FLAG", _s(1)),
        ("STOP_REASON", _s(200)),
        ("AGE_MIN", Integer()),
        ("AGE_MAX", Integer()),
        ("SEX_LIMIT", _s(4)),
        ("MODIFY_TIME", DateTime()),
    ],
    "HIS_SOURCE": [
        ("SOURCE_ID", _s(20)),
        ("SCHEDULE_ID", _s(20)),
        ("SEQ_NO", Integer()),
        ("BEGIN_TIME", DateTime()),
        ("END_TIME", DateTime()),
        ("TOTAL_NUM", Integer()),
        ("REMAIN_NUM", Integer()),
        ("LOCK_NUM", Integer()),
        ("STATUS", _s(1)),
        ("MODIFY_TIME", DateTime()),
    ],
    "HIS_DELETED_LOG": [
        ("ENTITY_TYPE", _s(20)),
        ("ENTITY_ID", _s(20)),
        ("DELETE_TIME", DateTime()),
    ],
    "HIS_REG": [
        ("REG_ID", _s(30)),
        ("LOCK_ID", _s(30)),
        ("REG_STATUS", _s(1)),
        ("PATIENT_ID", _s(20)),
        ("PATIENT_NAME", _s(50)),
        ("DEPT_ID", _s(20)),
        ("DOC_ID", _s(20)),
        ("SCHEDULE_ID", _s(20)),
        ("SOURCE_ID", _s(20)),
        ("VISIT_DATE", Date()),
        ("NOON_CODE", _s(2)),
        ("VISIT_BEGIN", DateTime()),
        ("VISIT_END", DateTime()),
        ("SEQ_NO", Integer()),
        ("ROOM", _s(100)),
        ("TAKE_PWD", _s(10)),
        ("FEE_TYPE", _s(4)),
        ("TOTAL_FEE_FEN", Integer()),
        ("INSUR_FEE_FEN", Integer()),
        ("SELF_FEE_FEN", Integer()),
        ("PAY_MODE", _s(4)),
        ("PAY_TRADE_NO", _s(64)),
        ("RECEIPT_NO", _s(30)),
        ("LOCK_EXPIRE", DateTime()),
        ("CANCEL_TIME", DateTime()),
        ("CANCEL_REASON", _s(200)),
        ("REFUND_RECEIPT_NO", _s(30)),
        ("CREATE_TIME", DateTime()),
        ("MODIFY_TIME", DateTime()),
    ],
    "HIS_RECIPE": [
        ("RECIPE_NO", _s(30)),
        ("PATIENT_ID", _s(20)),
        ("REG_ID", _s(30)),
        ("DEPT_ID", _s(20)),
        ("DOC_ID", _s(20)),
        ("RECIPE_TITLE", _s(200)),
        ("ORDER_TIME", DateTime()),
        ("TOTAL_FEN", Integer()),
        ("PAY_FLAG", _s(1)),
    ],
    "HIS_RECIPE_ITEM": [
        ("RECIPE_NO", _s(30)),
        ("ITEM_NO", Integer()),
        ("ITEM_CODE", _s(20)),
        ("ITEM_NAME", _s(100)),
        ("FEE_CLASS", _s(20)),
        ("QTY", _s(10)),
        ("UNIT", _s(10)),
        ("PRICE_FEN", Integer()),
        ("AMOUNT_FEN", Integer()),
    ],
    "HIS_SETTLE": [
        ("SETTLE_ID", _s(30)),
        ("PATIENT_ID", _s(20)),
        ("RECIPE_NOS", _s(400)),
        ("FEE_TYPE", _s(4)),
        ("TOTAL_FEN", Integer()),
        ("FUND_FEN", Integer()),
        ("ACCOUNT_FEN", Integer()),
        ("CASH_FEN", Integer()),
        ("PAY_MODE", _s(4)),
        ("PAY_TRADE_NO", _s(64)),
        ("MERCHANT_ORDER_NO", _s(64)),
        ("SETTLE_STATUS", _s(1)),
        ("REFUNDED_FEN", Integer()),
        ("INVOICE_NO", _s(30)),
        ("GUIDE", _s(200)),
        ("SETTLE_TIME", DateTime()),
    ],
    "HIS_REFUND": [
        ("REFUND_ID", _s(30)),
        ("SETTLE_ID", _s(30)),
        ("PATIENT_ID", _s(20)),
        ("REFUND_STATUS", _s(1)),
        ("REFUND_FEN", Integer()),
        ("REFUND_TOTAL_FEN", Integer()),
        ("REASON", _s(200)),
        ("APPLY_TIME", DateTime()),
        ("FINISH_TIME", DateTime()),
    ],
    "HIS_DAY_LEDGER": [
        ("BIZ_DATE", Date()),
        ("BIZ_TYPE", _s(2)),
        ("RECEIPT_NO", _s(30)),
        ("PATIENT_ID", _s(20)),
        ("REG_ID", _s(30)),
        ("FEE_TYPE", _s(4)),
        ("TOTAL_FEN", Integer()),
        ("CASH_FEN", Integer()),
        ("PAY_MODE", _s(4)),
        ("PAY_TRADE_NO", _s(64)),
        ("BIZ_TIME", DateTime()),
    ],
    "HIS_PATIENT": [
        ("PATIENT_ID", _s(20)),
        ("PATIENT_NAME", _s(50)),
        ("SEX", _s(4)),
        ("BIRTHDAY", Date()),
        ("CERT_TYPE", _s(4)),
        ("CERT_NO", _s(30)),
        ("MOBILE", _s(20)),
        ("ADDRESS", _s(200)),
        ("NATION", _s(20)),
        ("CARD_NO", _s(30)),
        ("BIND_CARDS", _s(400)),
        ("FEE_TYPE", _s(4)),
        ("INSUR_NO", _s(30)),
        ("CREATE_TIME", DateTime()),
        ("MODIFY_TIME", DateTime()),
    ],
    "HIS_REPORT": [
        ("REPORT_ID", _s(20)),
        ("REPORT_TYPE", _s(4)),
        ("REPORT_NAME", _s(100)),
        ("PATIENT_ID", _s(20)),
        ("REPORT_STATUS", _s(1)),
        ("ARCHIVE_FLAG", _s(1)),
        ("DEPT_ID", _s(20)),
        ("REG_ID", _s(30)),
        ("REPORT_TIME", DateTime()),
        ("EXPECT_TIME", DateTime()),
        ("ABNORMAL_FLAG", _s(1)),
    ],
}
KEYS = {
    "HIS_DEPT": "DEPT_ID",
    "HIS_DOCTOR": "DOC_ID",
    "HIS_SCHEDULE": "SCHEDULE_ID",
    "HIS_SOURCE": "SOURCE_ID",
    "HIS_REG": "REG_ID",
    "HIS_RECIPE": "RECIPE_NO",
    "HIS_RECIPE_ITEM": "RECIPE_NO",
    "HIS_SETTLE": "SETTLE_ID",
    "HIS_REFUND": "REFUND_ID",
    "HIS_PATIENT": "PATIENT_ID",
    "HIS_REPORT": "REPORT_ID",
}
VIEWS = {
    "V_HIS_DEPT": ("HIS_DEPT", ""),
    "V_HIS_DOCTOR": ("HIS_DOCTOR", ""),
    "V_HIS_DOCTOR_SCHEDULE": ("HIS_SCHEDULE", ""),
    "V_HIS_SCHEDULE_SOURCE": ("HIS_SOURCE", ""),
    "V_HIS_DELETED_LOG": ("HIS_DELETED_LOG", ""),
    "V_HIS_REG_RECORD": ("HIS_REG", ""),
    "V_HIS_UNPAID_RECIPE": ("HIS_RECIPE", "\"PAY_FLAG\" = 'N'"),
    "V_HIS_RECIPE_ITEM": ("HIS_RECIPE_ITEM", ""),
    "V_HIS_SETTLE": ("HIS_SETTLE", ""),
    "V_HIS_REFUND": ("HIS_REFUND", ""),
    "V_HIS_DAY_LEDGER": ("HIS_DAY_LEDGER", ""),
    "V_HIS_PATIENT": ("HIS_PATIENT", ""),
    "V_HIS_REPORT": ("HIS_REPORT", ""),
}
"""View name -> (base table, WHERE clause); each view selects every column of its table."""

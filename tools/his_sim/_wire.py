"""Small conversions shared by the dialects (money, dates, parameter reading)."""

# Chinese vendor texts use full-width punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from tools.his_sim._model import CST, HisError

__all__ = [
    "fen_to_yuan",
    "fmt_date",
    "fmt_dt",
    "fmt_dt_us",
    "fmt_time",
    "opt",
    "parse_date",
    "parse_dt",
    "req",
    "yuan_to_fen",
]


def fen_to_yuan(fen: int) -> str:
    """Formats fen as a yuan string with two decimals ("12.50").

    Args:
        fen: Amount in fen.

    Returns:
        The yuan string.
    """
    return f"{fen // 100}.{fen % 100:02d}"


def yuan_to_fen(value: Any, name: str) -> int:
    """Parses a yuan amount (string or number, at most two decimals) to fen.

    Args:
        value: The amount.
        name: Parameter name, for the error.

    Returns:
        Fen.

    Raises:
        HisError: INVALID when not a non-negative amount with at most two decimals.
    """
    try:
        amount = Decimal(str(value)) * 100
    except InvalidOperation as err:
        raise HisError("INVALID", f"参数{name}金额格式错误", param=name) from err
    if amount != amount.to_integral_value() or amount < 0:
        raise HisError("INVALID", f"参数{name}金额格式错误", param=name)
    return int(amount)


def fmt_dt(value: dt.datetime | None) -> str:
    """Formats local time as "yyyy-MM-dd HH:mm:ss" ("" for None).

    Args:
        value: Aware datetime.

    Returns:
        Text.
    """
    return "" if value is None else value.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")


def fmt_dt_us(value: dt.datetime) -> str:
    """Formats local time with microseconds, "yyyy-MM-dd HH:mm:ss.ffffff".

    Args:
        value: Aware datetime.

    Returns:
        Text.
    """
    return value.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S.%f")


def fmt_date(value: dt.date | None) -> str:
    """Formats a date as "yyyy-MM-dd" ("" for None).

    Args:
        value: Date.

    Returns:
        Text.
    """
    return "" if value is None else value.isoformat()


def fmt_time(value: dt.time) -> str:
    """Formats a time of day as "HH:mm".

    Args:
        value: Time.

    Returns:
        Text.
    """
    return value.strftime("%H:%M")


def parse_date(value: str, name: str) -> dt.date:
    """Parses "yyyy-MM-dd" (or "yyyyMMdd").

    Args:
        value: Text.
        name: Parameter name, for the error.

    Returns:
        The date.

    Raises:
        HisError: INVALID.
    """
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise HisError("INVALID", f"参数{name}日期格式错误，应为yyyy-MM-dd", param=name)


def parse_dt(value: str, name: str) -> dt.datetime:
    """Parses local "yyyy-MM-dd HH:mm:ss[.ffffff]" (or ISO 8601 with an offset).

    Args:
        value: Text.
        name: Parameter name, for the error.

    Returns:
        Aware datetime.

    Raises:
        HisError: INVALID.
    """
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise HisError("INVALID", f"参数{name}时间格式错误", param=name) from err
    return parsed.replace(tzinfo=CST) if parsed.tzinfo is None else parsed.astimezone(CST)


def req(params: Mapping[str, Any], name: str) -> str:
    """Reads a required string parameter.

    Args:
        params: Request parameters.
        name: Parameter name.

    Returns:
        The value, stripped.

    Raises:
        HisError: INVALID when missing or empty.
    """
    value = params.get(name)
    if value is None or not str(value).strip():
        raise HisError("INVALID", f"缺少必填参数{name}", param=name)
    if isinstance(value, dict | list):
        raise HisError("INVALID", f"参数{name}类型错误", param=name)
    return str(value).strip()


def opt(params: Mapping[str, Any], name: str, default: str = "") -> str:
    """Reads an optional string parameter.

    Args:
        params: Request parameters.
        name: Parameter name.
        default: Value when missing.

    Returns:
        The value, stripped.

    Raises:
        HisError: INVALID when not a scalar.
    """
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, dict | list):
        raise HisError("INVALID", f"参数{name}类型错误", param=name)
    return str(value).strip()

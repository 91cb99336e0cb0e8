"""Reading and writing one HIS's vocabulary: field names, code tables, money and times.

A :class:`Codec` is built once per adapter from its settings. A :class:`Record` wraps one
decoded answer object (JSON object, XML element, database row) and reads typed values by
the dialect's *documented* field name, translated through ``field_names`` overrides; a
missing field raises :class:`HisProtocolError` naming the field as this HIS spells it.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from frontend_server.adapters._domain import Money
from frontend_server.adapters._errors import HisProtocolError
from frontend_server.adapters._settings import DialectSettings
from frontend_server.adapters._vendors import NEUTRAL_CODES

__all__ = ["Codec", "Record", "mask_identifier"]

_TRUE = frozenset({"1", "y", "yes", "true", "t"})
_FALSE = frozenset({"0", "n", "no", "false", "f", ""})


def mask_identifier(value: str) -> str:
    """Masks a patient identifier for logs: keeps the first 3 and last 2 characters.

    Args:
        value: An ID-card number, phone, card number or name.

    Returns:
        The masked text (short values are masked entirely).
    """
    if len(value) <= 5:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]


class Codec:
    """One HIS's vocabulary (settings-driven, dialect-independent).

    Args:
        settings: The adapter's settings.
        money_in_fen: Whether amounts are integer fen on the wire (else yuan strings).
    """

    def __init__(self, settings: DialectSettings, *, money_in_fen: bool) -> None:
        self.dialect = settings.dialect
        self.money_in_fen = money_in_fen
        self.currency = settings.currency
        self.zone = zoneinfo.ZoneInfo(settings.timezone)
        self._names = dict(settings.resolved_field_names())
        self._decode = {t: dict(settings.merged_code_table(t)) for t in NEUTRAL_CODES}
        self._encode: dict[str, dict[str, str]] = {}
        for table, entries in self._decode.items():
            reverse: dict[str, str] = {}
            for code, neutral in entries.items():
                reverse.setdefault(neutral, code)
            self._encode[table] = reverse

    # ------------------------------------------------------------------ names and codes

    def name(self, documented: str) -> str:
        """The name this HIS uses for a documented field, view or procedure.

        Args:
            documented: The dialect's documented name.

        Returns:
            The configured override, or the documented name.
        """
        return self._names.get(documented, documented)

    def encode(self, table: str, neutral: str, *, operation: str) -> str:
        """Neutral value -> HIS code, for a request.

        Args:
            table: Code table.
            neutral: Neutral value.
            operation: Operation name, for the error.

        Returns:
            The HIS code.

        Raises:
            HisProtocolError: No code of the table maps to this value (a missing mapping).
        """
        try:
            return self._encode[table][neutral]
        except KeyError:
            raise HisProtocolError(
                f"code table {table!r} has no HIS code for {neutral!r}",
                field=table,
                operation=operation,
                dialect=self.dialect,
            ) from None

    def decode(self, table: str, code: str, *, field: str, operation: str) -> str:
        """HIS code -> neutral value, for an answer.

        Args:
            table: Code table.
            code: Code the HIS sent.
            field: Field it came in, for the error.
            operation: Operation name, for the error.

        Returns:
            The neutral value.

        Raises:
            HisProtocolError: The code is not in the table.
        """
        try:
            return self._decode[table][code]
        except KeyError:
            raise HisProtocolError(
                f"field {field!r} of the {operation} answer: code {code!r} is not in code "
                f"table {table!r}",
                field=field,
                operation=operation,
                dialect=self.dialect,
            ) from None

    def error_reason(self, vendor_code: str) -> str:
        """Vendor error code -> neutral reason (``UNKNOWN`` when unmapped).

        Args:
            vendor_code: The vendor's code.

        Returns:
            A :class:`RejectReason` value or ``UNAVAILABLE``.
        """
        return self._decode["error"].get(vendor_code, "UNKNOWN")

    # ------------------------------------------------------------------ values out

    def money_out(self, money: Money) -> str | int:
        """Formats an amount for a request.

        Args:
            money: The amount.

        Returns:
            Fen as an int, or a yuan string with two decimals.
        """
        if self.money_in_fen:
            return money.fen
        sign = "-" if money.fen < 0 else ""
        fen = abs(money.fen)
        return f"{sign}{fen // 100}.{fen % 100:02d}"

    def datetime_out(self, value: dt.datetime) -> str:
        """Formats an instant as the HIS's local ``yyyy-MM-dd HH:mm:ss``.

        Args:
            value: Aware (or naive local) datetime.

        Returns:
            Text.
        """
        if value.tzinfo is not None:
            value = value.astimezone(self.zone)
        return value.strftime("%Y-%m-%d %H:%M:%S")

    def today(self) -> dt.date:
        """Today in the HIS's zone.

        Returns:
            The date.
        """
        return dt.datetime.now(self.zone).date()

    def record(self, data: Any, operation: str, *, where: str = "") -> Record:
        """Wraps an answer object.

        Args:
            data: A mapping (JSON object, row mapping, XML converted to a dict).
            operation: Operation name, for errors.
            where: Path of the object in the answer, for errors.

        Returns:
            The record.

        Raises:
            HisProtocolError: ``data`` is not an object.
        """
        if not isinstance(data, Mapping):
            raise HisProtocolError(
                f"the {operation} answer{' at ' + where if where else ''} is not an object",
                field=where,
                operation=operation,
                dialect=self.dialect,
            )
        return Record(self, data, operation, where)


class Record:
    """Typed reads of one answer object by documented field name.

    Every ``name`` may be dotted (``payment.payMode``) to reach into nested objects; each
    segment is translated through the field-name overrides. A ``None`` name means "this
    dialect has no such field" and yields the type's empty value.
    """

    def __init__(self, codec: Codec, data: Mapping[str, Any], operation: str, where: str) -> None:
        self._codec = codec
        self._data = data
        self._op = operation
        self._where = where

    def _fail(self, field: str, detail: str) -> HisProtocolError:
        return HisProtocolError(
            f"field {field!r} of the {self._op} answer: {detail}",
            field=field,
            operation=self._op,
            dialect=self._codec.dialect,
        )

    @property
    def zone(self) -> dt.tzinfo:
        """The HIS's time zone."""
        return self._codec.zone

    def error(self, name: str, detail: str) -> HisProtocolError:
        """Builds the error for a malformed field.

        Args:
            name: Documented field name.
            detail: What is wrong.

        Returns:
            The error (to raise).
        """
        return self._fail(self._codec.name(name), detail)

    def code_value(self, code: str, table: str, name: str) -> str:
        """Translates a code found inside a field (e.g. in a packed list).

        Args:
            code: HIS code.
            table: Code table.
            name: Documented name of the field it came from.

        Returns:
            The neutral value.
        """
        return self._codec.decode(table, code, field=self._codec.name(name), operation=self._op)

    def raw(self, name: str) -> Any:
        """The value of a field, as decoded from the wire.

        Args:
            name: Documented name (dotted for nested objects).

        Returns:
            The value (None when the field is present but null).

        Raises:
            HisProtocolError: The field (or an object on the way) is missing.
        """
        value: Any = self._data
        path = ""
        for part in name.split("."):
            actual = self._codec.name(part)
            path = f"{path}.{actual}" if path else actual
            if not isinstance(value, Mapping) or actual not in value:
                raise self._fail(
                    actual,
                    "missing (a renamed vendor field? map it in DialectSettings.field_names)",
                )
            value = value[actual]
        return value

    def has(self, name: str) -> bool:
        """Whether a (top-level) field is present.

        Args:
            name: Documented name.

        Returns:
            True when present.
        """
        return self._codec.name(name) in self._data

    def text(self, name: str | None) -> str:
        """Reads text ("" for null).

        Args:
            name: Documented name, or None for a field the dialect lacks.

        Returns:
            The stripped text.
        """
        if name is None:
            return ""
        value = self.raw(name)
        if value is None:
            return ""
        if isinstance(value, Mapping | list):
            raise self._fail(self._codec.name(name), "expected text")
        return str(value).strip()

    def integer(self, name: str | None) -> int:
        """Reads an integer (0 for null or empty).

        Args:
            name: Documented name, or None.

        Returns:
            The integer.
        """
        text = self.text(name)
        if not text:
            return 0
        try:
            return int(text)
        except ValueError:
            raise self._fail(self._codec.name(name or ""), f"{text!r} is not an integer") from None

    def flag(self, name: str | None) -> bool:
        """Reads a boolean (true/false, 1/0, Y/N).

        Args:
            name: Documented name, or None.

        Returns:
            The flag.
        """
        if name is None:
            return False
        value = self.raw(name)
        if isinstance(value, bool):
            return value
        text = "" if value is None else str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._fail(self._codec.name(name), f"{value!r} is not a flag")

    def money(self, name: str | None) -> Money:
        """Reads an amount (yuan string or fen integer, per the dialect).

        Args:
            name: Documented name, or None.

        Returns:
            The amount.
        """
        text = self.text(name)
        if not text:
            return Money(0, self._codec.currency)
        try:
            if self._codec.money_in_fen:
                return Money(int(text), self._codec.currency)
            fen = Decimal(text) * 100
        except (ValueError, InvalidOperation):
            raise self._fail(self._codec.name(name or ""), f"{text!r} is not an amount") from None
        if fen != fen.to_integral_value():
            raise self._fail(self._codec.name(name or ""), f"{text!r} has more than 2 decimals")
        return Money(int(fen), self._codec.currency)

    def date(self, name: str | None) -> dt.date | None:
        """Reads a date (None for empty).

        Args:
            name: Documented name, or None.

        Returns:
            The date.
        """
        if name is None:
            return None
        value = self.raw(name)
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        text = "" if value is None else str(value).strip()
        if not text:
            return None
        try:
            return dt.date.fromisoformat(text[:10])
        except ValueError:
            raise self._fail(self._codec.name(name), f"{text!r} is not a date") from None

    def datetime(self, name: str | None) -> dt.datetime | None:
        """Reads an instant in the HIS's zone (None for empty).

        Args:
            name: Documented name, or None.

        Returns:
            Aware datetime.
        """
        if name is None:
            return None
        value = self.raw(name)
        if not isinstance(value, dt.datetime):
            text = "" if value is None else str(value).strip()
            if not text:
                return None
            try:
                value = dt.datetime.fromisoformat(text)
            except ValueError:
                raise self._fail(self._codec.name(name), f"{text!r} is not a time") from None
        if value.tzinfo is None:
            return value.replace(tzinfo=self._codec.zone)
        return value.astimezone(self._codec.zone)

    def time(self, name: str) -> dt.time:
        """Reads a time of day (``HH:mm`` or ``HH:mm:ss``).

        Args:
            name: Documented name.

        Returns:
            The time.
        """
        value = self.raw(name)
        if isinstance(value, dt.time):
            return value
        text = "" if value is None else str(value).strip()
        try:
            return dt.time.fromisoformat(text)
        except ValueError:
            raise self._fail(self._codec.name(name), f"{text!r} is not a time of day") from None

    def code(self, name: str | None, table: str) -> str:
        """Reads a coded value and translates it to the neutral value.

        Args:
            name: Documented name, or None (gives "").
            table: Code table.

        Returns:
            The neutral value.
        """
        if name is None:
            return ""
        return self._codec.decode(
            table, self.text(name), field=self._codec.name(name), operation=self._op
        )

    def texts(self, name: str | None) -> tuple[str, ...]:
        """Reads a list of strings (a JSON/XML list or a comma-separated text).

        Args:
            name: Documented name, or None.

        Returns:
            The strings.
        """
        if name is None:
            return ()
        value = self.raw(name)
        items: Iterable[Any]
        if value is None:
            return ()
        if isinstance(value, list):
            items = value
        elif isinstance(value, str):
            items = value.split(",")
        else:
            raise self._fail(self._codec.name(name), "expected a list")
        return tuple(s for s in (str(i).strip() for i in items) if s)

    def items(self, name: str) -> list[Record]:
        """Reads a list of objects (empty for null or empty text).

        Args:
            name: Documented name.

        Returns:
            The records.
        """
        value = self.raw(name)
        if value is None or value == "":
            return []
        if not isinstance(value, list):
            raise self._fail(self._codec.name(name), "expected a list")
        where = self._codec.name(name)
        return [self._codec.record(v, self._op, where=f"{where}[{i}]") for i, v in enumerate(value)]

    def sub(self, name: str) -> Record:
        """Reads a nested object.

        Args:
            name: Documented name.

        Returns:
            The record.
        """
        return self._codec.record(self.raw(name), self._op, where=self._codec.name(name))

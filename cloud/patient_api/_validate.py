"""Checks on every read request of the patient API, all violations reported at once.

Each rule names the request field and says what is wrong (``BadRequest`` field
violations); nothing here quotes what the caller sent beyond the offending character.
Search text is held to the characters hospital names use: the store binds every value
as a parameter, so SQL in a search could do no harm, but a string of quotes, semicolons
and comment markers is not a hospital name and is answered as what it is.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence

from google.type import date_pb2

from cloud.readstore import FEATURE_ENUMS, MAX_SLOT_DAYS
from hplus.cloud.v1 import patient_pb2

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_DATE_DISTANCE_DAYS",
    "MAX_ID",
    "MAX_PAGE_SIZE",
    "MAX_QUERY",
    "Violations",
    "check_date",
    "check_id",
    "check_page",
    "check_query",
    "check_slot_range",
    "feature_names",
]

DEFAULT_PAGE_SIZE = 50
"""Page size when a request leaves ``page_size`` 0 (the contract's paging convention)."""
MAX_PAGE_SIZE = 500
"""Largest page; a larger ``page_size`` is served as this (the contract's convention)."""
MAX_QUERY = 100
"""Longest SearchHospitals ``query``, in characters."""
MAX_ID = 128
"""Longest id (hospital, department, doctor) accepted in a request."""
MAX_DATE_DISTANCE_DAYS = 366
"""ListSlots dates more than this many days from today are refused (no hospital publishes
a schedule a year ahead, and none is kept for past years)."""

_QUERY_PUNCTUATION = frozenset(" -·.()\uff08\uff09\u3001,\uff0c")  # also fullwidth ( ) 、 ,
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SQLISH = ("--", "/*", "*/", ";", "'", '"', "=", "\\")
_FEATURE_NAMES: dict[int, str] = {int(v): k for k, v in FEATURE_ENUMS.items()}

Violations = list[tuple[str, str]]
"""``(field, description)`` pairs, in request order."""


def check_query(field: str, text: str, out: Violations) -> None:
    """Search text: at most `MAX_QUERY` characters of letters, digits, spaces, ``-·.()``."""
    if len(text) > MAX_QUERY:
        out.append((field, f"longer than {MAX_QUERY} characters"))
        return
    if any(marker in text for marker in _SQLISH):
        out.append(
            (
                field,
                "looks like SQL, not a hospital name (quotes, ';', '=', '--', '/*' and "
                "backslashes are not accepted)",
            )
        )
        return
    for ch in text:
        if not (ch.isalnum() or ch in _QUERY_PUNCTUATION):
            name = unicodedata.name(ch, f"U+{ord(ch):04X}")
            out.append(
                (field, f"may hold only letters, digits, spaces and - · . ( ) , ; found {name}")
            )
            return


def check_id(field: str, value: str, out: Violations, *, required: bool) -> None:
    """An opaque id: required or not, at most `MAX_ID` characters, no control characters."""
    if not value:
        if required:
            out.append((field, "required"))
        return
    if len(value) > MAX_ID:
        out.append((field, f"longer than {MAX_ID} characters"))
    elif _CONTROL.search(value):
        out.append((field, "contains control characters"))


def check_page(page_size: int, out: Violations) -> int:
    """The page size to use (0 → default, above the maximum → the maximum)."""
    if page_size < 0:
        out.append(("page_size", "must not be negative"))
        return DEFAULT_PAGE_SIZE
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def check_date(field: str, value: date_pb2.Date, today: dt.date, out: Violations) -> dt.date | None:
    """A full calendar date within `MAX_DATE_DISTANCE_DAYS` of today, else a violation."""
    if value.year == 0 or value.month == 0 or value.day == 0:
        out.append((field, "must be a full date (year, month and day)"))
        return None
    try:
        day = dt.date(value.year, value.month, value.day)
    except ValueError:
        out.append((field, f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a date"))
        return None
    if abs((day - today).days) > MAX_DATE_DISTANCE_DAYS:
        out.append((field, f"more than {MAX_DATE_DISTANCE_DAYS} days from today"))
        return None
    return day


def check_slot_range(
    request: patient_pb2.ListSlotsRequest, today: dt.date, out: Violations
) -> tuple[dt.date | None, dt.date | None]:
    """ListSlots' dates: start required, end (optional) not before it and at most 31 days on."""
    start: dt.date | None = None
    if not request.HasField("start_date"):
        out.append(("start_date", "required"))
    else:
        start = check_date("start_date", request.start_date, today, out)
    end: dt.date | None = start
    if request.HasField("end_date"):
        end = check_date("end_date", request.end_date, today, out)
        if start is not None and end is not None:
            if end < start:
                out.append(("end_date", "is before start_date"))
            elif (end - start).days > MAX_SLOT_DAYS:
                out.append(("end_date", f"more than {MAX_SLOT_DAYS} days after start_date"))
    return start, end


def feature_names(features: Sequence[int], out: Violations) -> list[str]:
    """The store's names of requested features; unknown or unspecified values are violations."""
    names = []
    for i, value in enumerate(features):
        name = _FEATURE_NAMES.get(value)
        if name is None:
            out.append((f"features[{i}]", f"{value} is not a known HospitalFeature"))
        else:
            names.append(name)
    return names

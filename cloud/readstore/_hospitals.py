"""Hospital master data: what patients see of a hospital, owned by the platform, not the HIS.

Imported from a TOML file (``hplus cloud hospitals import FILE``), validated with errors that
name the file, line and key::

    [[hospital]]
    id = "city-first"
    name = "滨江市第一人民医院"
    aliases = ["市一院"]
    grade = "三级甲等"
    region_code = "330106"
    address = "滨江市西湖路1号"
    location = { lat = 30.26, lng = 120.16 }
    public_phone = "0571-87000000"
    time_zone = "Asia/Shanghai"
    features = ["appointment", "payment", "reports"]
    notice = ""
"""

from __future__ import annotations

import dataclasses
import re
import zoneinfo
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pypinyin import Style, lazy_pinyin

from mesh.config import ConfigError, dotted_path, find_line, load_toml

__all__ = ["FEATURES", "HospitalRecord", "load_hospitals", "pinyin_initials"]

FEATURES = ("appointment", "payment", "reports")
"""Feature names a file may list (``hplus.cloud.v1.HospitalFeature`` without the prefix)."""

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REGION = re.compile(r"^[0-9]{6}$")
_PHONE = re.compile(r"^[0-9+() -]{0,50}$")
_KEYS = {
    "id",
    "name",
    "aliases",
    "grade",
    "region_code",
    "address",
    "location",
    "public_phone",
    "time_zone",
    "features",
    "notice",
}


def pinyin_initials(text: str) -> str:
    """The lower-case pinyin initials of ``text``: "城市第一人民医院" → "csdyrmyy".

    Letters and digits other than Chinese characters are kept as they are (lower-cased);
    punctuation and spaces are dropped, as patients type neither.
    """
    out = []
    for part in lazy_pinyin(text, style=Style.FIRST_LETTER, errors="default"):
        out.append("".join(ch for ch in part.lower() if ch.isalnum()))
    return "".join(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HospitalRecord:
    """A hospital as patients see it (``hplus.cloud.v1.Hospital`` without live state)."""

    hospital_id: str
    """The hospital's id on hplus (the id its credential and tunnel carry)."""
    name: str
    """Full registered name (Chinese)."""
    aliases: tuple[str, ...] = ()
    """Other names patients know it by."""
    grade: str = ""
    """Grade awarded by the health authority, e.g. "三级甲等"."""
    region_code: str = ""
    """GB/T 2260 code of its location, six digits."""
    address: str = ""
    """Postal address."""
    lat: float | None = None
    """Latitude of the main entrance."""
    lng: float | None = None
    """Longitude of the main entrance."""
    public_phone: str = ""
    """Public switchboard number."""
    time_zone: str = "Asia/Shanghai"
    """IANA time zone; dates and times of its slots are local to it."""
    features: tuple[str, ...] = ()
    """Offered features, from `FEATURES`."""
    notice: str = ""
    """Notice shown above its listing."""

    @property
    def name_initials(self) -> str:
        """Pinyin initials of the name."""
        return pinyin_initials(self.name)


def load_hospitals(path: Path) -> list[HospitalRecord]:
    """Read and validate a hospital master-data file.

    Raises:
        ConfigError: the file is unreadable, not TOML, or a value is wrong; the message names
            the file, line and key (``hospitals.toml:7: hospital[1].region_code: …``).
    """
    doc, text = load_toml(path)

    def error(at: Sequence[str | int], message: str) -> ConfigError:
        return ConfigError(f"{dotted_path(at)}: {message}", path=path, line=find_line(text, at))

    unknown = [k for k in doc if k != "hospital"]
    if unknown:
        raise error([unknown[0]], "unknown table (expected [[hospital]])")
    items = doc.get("hospital", [])
    if not isinstance(items, list) or not items:
        raise error(["hospital"], "expected at least one [[hospital]] table")
    out: list[HospitalRecord] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(items):
        at: list[str | int] = ["hospital", index]
        if not isinstance(raw, dict):
            raise error(at, "expected a table")
        out.append(_record(raw, at, error))
        first = seen.setdefault(out[-1].hospital_id, index)
        if first != index:
            raise error(
                [*at, "id"], f"duplicate id {out[-1].hospital_id!r} (also hospital[{first}])"
            )
    return out


def _record(raw: dict[str, Any], at: list[str | int], error: Any) -> HospitalRecord:
    for key in raw:
        if key not in _KEYS:
            raise error([*at, key], f"unknown setting (known: {', '.join(sorted(_KEYS))})")

    def text(
        key: str,
        limit: int,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            raise error([*at, key], f"expected a string, got {type(value).__name__}")
        if required and not value.strip():
            raise error([*at, key], "required")
        if len(value) > limit:
            raise error([*at, key], f"longer than {limit} characters")
        if value and pattern is not None and not pattern.match(value):
            raise error([*at, key], f"{value!r} is invalid: {rule}")
        return value

    hospital_id = text(
        "id", 64, required=True, pattern=_ID,
        rule="1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    )  # fmt: skip
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise error([*at, "aliases"], "expected a list of non-empty strings")
    if len(aliases) > 20 or any(len(a) > 200 for a in aliases):
        raise error([*at, "aliases"], "at most 20 aliases of at most 200 characters")
    lat = lng = None
    if "location" in raw:
        loc = raw["location"]
        if not isinstance(loc, dict) or set(loc) != {"lat", "lng"}:
            raise error([*at, "location"], "expected { lat = <degrees>, lng = <degrees> }")
        lat, lng = loc["lat"], loc["lng"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lng)):
            raise error([*at, "location"], "lat and lng must be numbers")
        if not (-90 <= lat <= 90 and -180 <= lng <= 180):
            raise error([*at, "location"], "lat must be within [-90, 90], lng within [-180, 180]")
    zone = text("time_zone", 64) or "Asia/Shanghai"
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise error([*at, "time_zone"], f"{zone!r} is not an IANA time zone") from None
    features = raw.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise error([*at, "features"], "expected a list of strings")
    for f in features:
        if f not in FEATURES:
            raise error([*at, "features"], f"{f!r} is not one of {', '.join(FEATURES)}")
    return HospitalRecord(
        hospital_id=hospital_id,
        name=text("name", 200, required=True),
        aliases=tuple(aliases),
        grade=text("grade", 50),
        region_code=text("region_code", 12, pattern=_REGION, rule="six digits (GB/T 2260)"),
        address=text("address", 500),
        lat=float(lat) if lat is not None else None,
        lng=float(lng) if lng is not None else None,
        public_phone=text("public_phone", 50, pattern=_PHONE, rule="digits, spaces, +, -, ()"),
        time_zone=zone,
        features=tuple(dict.fromkeys(features)),
        notice=text("notice", 2000),
    )

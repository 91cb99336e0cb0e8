"""Regions: the province codes of GB/T 2260, and how a person's region is found.

A business record's region is the province of the patient's resident ID-card number (its
first two digits) when there is one, else the province of the account's mobile number.

There is no number-segment database (号段库) here, so a mobile number's province comes from
a stand-in: the four digits after the network prefix (``1 3X H0H1H2H3 ABCD``: the HLR code
that, in the real segment tables, names the home province) taken modulo 31 over the 31
mainland provinces in code order. It is not the carriers' answer (13800138000 is a Beijing
number; the stand-in says Jiangxi); it is deterministic and **stable**: an account lives in the
partition of its number's region, so changing this mapping would strand accounts. Replacing
it with a real segment table is a data migration (move every account whose region changes),
never a code edit alone; ``tests/unit/cloud/partitions/test_regions.py`` pins sample values.
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "MAINLAND",
    "NORTH",
    "PROVINCES",
    "SOUTH",
    "normalize_mobile",
    "region_of_id_card",
    "region_of_mobile",
    "valid_resident_id",
]

PROVINCES: dict[str, str] = {
    "11": "Beijing",
    "12": "Tianjin",
    "13": "Hebei",
    "14": "Shanxi",
    "15": "Inner Mongolia",
    "21": "Liaoning",
    "22": "Jilin",
    "23": "Heilongjiang",
    "31": "Shanghai",
    "32": "Jiangsu",
    "33": "Zhejiang",
    "34": "Anhui",
    "35": "Fujian",
    "36": "Jiangxi",
    "37": "Shandong",
    "41": "Henan",
    "42": "Hubei",
    "43": "Hunan",
    "44": "Guangdong",
    "45": "Guangxi",
    "46": "Hainan",
    "50": "Chongqing",
    "51": "Sichuan",
    "52": "Guizhou",
    "53": "Yunnan",
    "54": "Xizang",
    "61": "Shaanxi",
    "62": "Gansu",
    "63": "Qinghai",
    "64": "Ningxia",
    "65": "Xinjiang",
    "71": "Taiwan",
    "81": "Hong Kong",
    "82": "Macao",
    # Not a GB/T 2260 province: the prefix of residence permits issued to Taiwan residents
    # (居住证 numbers start 810000, 820000 and 830000), which are resident-ID-shaped numbers.
    "83": "Taiwan (residence permit)",
}
"""Every region: GB/T 2260 province-level codes (plus 83, see above), with an English name."""

MAINLAND = tuple(code for code in PROVINCES if code < "70")
"""The 31 mainland provinces, in code order: the regions a mobile number can map to."""

NORTH = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23", "37", "41", "61", "62", "63", "64", "65"}
)
"""The first ``north`` partition: north of the Qinling-Huaihe line (the north-east, north,
Shandong, Henan and the north-west)."""
SOUTH = frozenset(PROVINCES) - NORTH
"""The first ``south`` partition: everything else (east, central south, south-west, Xizang,
Taiwan, Hong Kong, Macao): the larger one, and the first to split."""

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_MOBILE = re.compile(r"^(?:\+86)?(1[3-9]\d{9})$")


def valid_resident_id(number: str) -> bool:
    """Whether ``number`` is a well-formed 18-character resident ID-card number.

    GB 11643-1999: a known region, a real birth date, and the ISO 7064 MOD 11-2 check
    character (``X`` upper-case).

    Args:
        number: the number as given.

    Returns:
        True when layout, region, birth date and check character are valid.
    """
    if len(number) != 18 or not number[:17].isdigit() or number[:2] not in PROVINCES:
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(ch) * weight for ch, weight in zip(number[:17], _WEIGHTS, strict=True))
    return _CHECK[total % 11] == number[17]


def region_of_id_card(number: str) -> str | None:
    """The region of a resident ID-card number (its first two digits), if it is valid.

    Args:
        number: an identity document number.

    Returns:
        The province code, or ``None`` when ``number`` is not a valid resident ID number.
    """
    return number[:2] if valid_resident_id(number) else None


def normalize_mobile(phone: str) -> str | None:
    """A mainland mobile number in E.164 form (``+8613800138000``), if ``phone`` is one.

    Args:
        phone: E.164 (``+86`` and 11 digits) or the 11 national digits.

    Returns:
        The E.164 form, or ``None`` when ``phone`` is not a mainland mobile number.
    """
    match = _MOBILE.match(phone)
    return None if match is None else f"+86{match.group(1)}"


def region_of_mobile(phone: str) -> str:
    """The region of a mainland mobile number (the documented stand-in, see the module).

    Args:
        phone: a number `normalize_mobile` accepts.

    Returns:
        One of `MAINLAND`.

    Raises:
        ValueError: ``phone`` is not a mainland mobile number.
    """
    e164 = normalize_mobile(phone)
    if e164 is None:
        raise ValueError("not a mainland mobile number")
    hlr = int(e164[6:10])  # +86 1 3X [H0H1H2H3] ABCD
    return MAINLAND[hlr % len(MAINLAND)]

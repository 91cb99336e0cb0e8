"""Mainland resident ID-card numbers (GB 11643-1999): generation and validation."""

from __future__ import annotations

import datetime as dt
import random

__all__ = ["id_card_check_digit", "is_valid_id_card", "make_id_card"]

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_REGIONS = ("110101", "110105", "310104", "310115", "440106", "440305", "330106", "510107")


def id_card_check_digit(first17: str) -> str:
    """Returns the ISO 7064 MOD 11-2 check character of the first 17 digits.

    Args:
        first17: The first 17 digits of the number.

    Returns:
        "0"-"9" or "X".
    """
    total = sum(int(ch) * weight for ch, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def is_valid_id_card(number: str) -> bool:
    """Tells whether ``number`` is a well-formed 18-character resident ID-card number.

    Args:
        number: The number, upper-case.

    Returns:
        True when the layout, the birth date and the check character are valid.
    """
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return id_card_check_digit(number[:17]) == number[17]


def make_id_card(rng: random.Random, birth: dt.date, male: bool) -> str:
    """Makes a fake but well-formed number for a birth date and sex.

    Args:
        rng: Source of randomness (seeded by the caller for determinism).
        birth: Date of birth encoded in digits 7-14.
        male: Sex encoded in the parity of digit 17 (odd for male).

    Returns:
        The 18-character number.
    """
    region = rng.choice(_REGIONS)
    seq = rng.randrange(0, 50) * 2 + (1 if male else 0)
    first17 = f"{region}{birth:%Y%m%d}{rng.randrange(0, 10)}{seq:02d}"
    return first17 + id_card_check_digit(first17)

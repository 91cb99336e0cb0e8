from __future__ import annotations

import pytest

from cloud.partitions import (
    MAINLAND,
    NORTH,
    PROVINCES,
    SOUTH,
    normalize_mobile,
    region_of_id_card,
    region_of_mobile,
    valid_resident_id,
)
from tools.his_sim import id_card_check_digit


def resident(first17: str) -> str:
    return first17 + id_card_check_digit(first17)


def test_the_two_first_partitions_cover_every_region_once() -> None:
    assert set(PROVINCES) == NORTH | SOUTH
    assert not NORTH & SOUTH
    assert len(MAINLAND) == 31
    assert {"11", "44", "65"} <= set(MAINLAND)
    assert not {"71", "81", "82", "83"} & set(MAINLAND)


@pytest.mark.parametrize(
    ("phone", "region"),
    [
        # Pinned: an account lives in its number's region, so these must never change
        # (see the module docstring of cloud.partitions._regions).
        ("+8613800138000", "36"),
        ("13912345678", "54"),
        ("+8618612345678", "54"),
        ("15000000000", "11"),
        ("19999999999", "43"),
    ],
)
def test_mobile_regions_are_pinned(phone: str, region: str) -> None:
    assert region_of_mobile(phone) == region


def test_every_mobile_segment_lands_in_a_mainland_province() -> None:
    seen = {region_of_mobile(f"138{hlr:04d}0000") for hlr in range(10_000)}
    assert seen == set(MAINLAND)


@pytest.mark.parametrize(
    "phone",
    [
        "",
        "12800138000",
        "+85213800138000",
        "1380013800",
        "+86 13800138000",
        "\uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff10",  # full-width digits,
    ],
)
def test_not_a_mainland_mobile(phone: str) -> None:
    assert normalize_mobile(phone) is None
    with pytest.raises(ValueError, match="mainland mobile"):
        region_of_mobile(phone)


def test_resident_id_region_and_check_character() -> None:
    number = resident("44030519900101123")
    assert valid_resident_id(number)
    assert region_of_id_card(number) == "44"
    wrong = number[:-1] + ("0" if number[-1] != "0" else "1")
    assert region_of_id_card(wrong) is None
    assert region_of_id_card(resident("99030519900101123")) is None  # no such province
    assert region_of_id_card(resident("44030519900230123")) is None  # 30 February
    assert region_of_id_card("E12345678") is None  # a passport
    x = next(
        resident(f"1101011980010100{i}")
        for i in range(10)
        if resident(f"1101011980010100{i}").endswith("X")
    )
    assert region_of_id_card(x) == "11"
    assert region_of_id_card(x.lower()) is None  # upper-case X only: callers normalise

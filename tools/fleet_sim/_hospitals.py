"""Who the simulated hospitals are: ids, names and regions, seeded, and the TOML the cloud imports.

Hospital ``i`` (1-based) of a fleet with prefix ``sim-`` is ``sim-00001`` …; its name and
region follow from the fleet's seed and ``i``, so the same command gives the same fleet
(and the cloud's read store can import its master data before the edges dial in).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SimHospital", "fleet_hospitals", "hospitals_toml", "write_hospitals_toml"]

# (GB/T 2260 county-level code, its name): real codes, so region filters look realistic.
REGIONS = (
    ("110105", "北京市朝阳区"),
    ("110108", "北京市海淀区"),
    ("310104", "上海市徐汇区"),
    ("310115", "上海市浦东新区"),
    ("440106", "广州市天河区"),
    ("440305", "深圳市南山区"),
    ("330106", "杭州市西湖区"),
    ("320102", "南京市玄武区"),
    ("510107", "成都市武侯区"),
    ("420106", "武汉市武昌区"),
    ("610113", "西安市雁塔区"),
    ("500103", "重庆市渝中区"),
    ("120101", "天津市和平区"),
    ("370102", "济南市历下区"),
    ("410105", "郑州市金水区"),
    ("430102", "长沙市芙蓉区"),
    ("350102", "福州市鼓楼区"),
    ("530102", "昆明市五华区"),
    ("210102", "沈阳市和平区"),
    ("230103", "哈尔滨市南岗区"),
)
KINDS = (
    "人民医院",
    "第一人民医院",
    "第二人民医院",
    "中医医院",
    "中心医院",
    "妇幼保健院",
    "儿童医院",
    "骨科医院",
    "口腔医院",
    "眼科医院",
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$")


@dataclasses.dataclass(frozen=True)
class SimHospital:
    """One simulated hospital's master data."""

    index: int
    """1-based position in the fleet."""
    hospital_id: str
    """Its id (what its credential and tunnel name)."""
    name: str
    """Its Chinese name (what patients search, also by pinyin initials)."""
    region_code: str
    """GB/T 2260 county-level administrative code."""
    seed: int
    """The seed of its directory."""


def fleet_hospitals(count: int, *, seed: int = 1, prefix: str = "sim-") -> list[SimHospital]:
    """The fleet's hospitals.

    Args:
        count: how many.
        seed: the fleet's seed.
        prefix: the id prefix (ids are ``{prefix}{index:05d}``).

    Returns:
        ``count`` hospitals.

    Raises:
        ValueError: a count below 1, or a prefix that makes invalid hospital ids.
    """
    if count < 1:
        raise ValueError("the fleet needs at least one hospital")
    if not _ID.match(f"{prefix}00001"):
        raise ValueError(f"prefix {prefix!r}: hospital ids must match {_ID.pattern}")
    out = []
    for i in range(1, count + 1):
        # Every (region, kind) pair once per series, so names never repeat.
        combo = i - 1
        region_code, region = REGIONS[(combo + seed) % len(REGIONS)]
        kind = KINDS[(combo // len(REGIONS) + seed) % len(KINDS)]
        series = combo // (len(REGIONS) * len(KINDS))
        name = f"{region}{kind}" + (f"第{series + 1}分院" if series else "")
        out.append(SimHospital(i, f"{prefix}{i:05d}", name, region_code, seed * 100_003 + i))
    return out


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hospitals_toml(hospitals: Sequence[SimHospital], *, seed: int) -> str:
    """The hospitals as TOML, for ``hplus cloud hospitals import``.

    One ``[[hospital]]`` table each, with ``id``, ``name`` and ``region_code``.

    Args:
        hospitals: the fleet's hospitals.
        seed: the fleet's seed (in the header comment).

    Returns:
        The document.
    """
    lines = [
        f"# Simulated hospitals of tools.fleet_sim (seed {seed}, {len(hospitals)} hospitals).",
        "# Import with: hplus cloud hospitals import FILE",
        "",
    ]
    for h in hospitals:
        lines += [
            "[[hospital]]",
            f"id = {_quote(h.hospital_id)}",
            f"name = {_quote(h.name)}",
            f"region_code = {_quote(h.region_code)}",
            "",
        ]
    return "\n".join(lines)


def write_hospitals_toml(path: Path, hospitals: Sequence[SimHospital], *, seed: int) -> None:
    """Writes :func:`hospitals_toml` to ``path`` (replacing it atomically).

    Args:
        path: where.
        hospitals: the fleet's hospitals.
        seed: the fleet's seed.
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(hospitals_toml(hospitals, seed=seed), encoding="utf-8")
    os.replace(tmp, path)

"""Every rendering of ``compat.diff`` equals its golden output, byte for byte.

The golden files were written by the code before the change list was rebuilt on the
engine's pairing layer; see ``golden.py`` for the cases and how to regenerate them.
"""

from __future__ import annotations

import functools
import itertools
import json

import pytest

import compat
from tests.unit.compat import golden


@functools.cache
def _releases() -> dict[str, dict[str, str]]:
    return dict(golden.release_cases())


PAIRS = sorted(
    f"{old}-to-{new}"
    for old, new in itertools.permutations(compat.list_release_versions(golden.RELEASES), 2)
)


def test_every_release_pair_is_covered() -> None:
    # A newly frozen release needs its golden renderings: `python -c "from
    # tests.unit.compat import golden; golden.main()"` writes them (review the new files).
    assert sorted(_releases()) == PAIRS
    assert len(PAIRS) >= 6
    missing = [p for p in PAIRS if not golden.release_file(p, "text").exists()]
    assert not missing, f"no golden rendering for {missing}"


@pytest.mark.parametrize("name", PAIRS)
def test_release_pairs_render_exactly_as_golden(name: str) -> None:
    for fmt, text in _releases()[name].items():
        assert text + "\n" == golden.release_file(name, fmt).read_text(), (name, fmt)


def test_fixture_and_generated_pairs_render_exactly_as_golden() -> None:
    want = json.loads((golden.HERE / "digests.json").read_text())
    got = {
        name: {fmt: golden.digest(text) for fmt, text in out.items()}
        for name, out in golden.other_cases()
    }
    assert sorted(got) == sorted(want)
    differ = [f"{n} {fmt}" for n in want for fmt in want[n] if got[n][fmt] != want[n][fmt]]
    assert not differ, differ

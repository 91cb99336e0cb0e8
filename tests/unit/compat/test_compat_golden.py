"""Every rendering of ``compat.diff`` equals its golden output, byte for byte.

The golden files were written by the code before the change list was rebuilt on the
engine's pairing layer; see ``golden.py`` for the cases and how to regenerate them.
"""

from __future__ import annotations

import functools
import json

import pytest

from tests.unit.compat import golden


@functools.cache
def _releases() -> dict[str, dict[str, str]]:
    return dict(golden.release_cases())


def test_every_release_pair_is_covered() -> None:
    assert sorted(_releases()) == ["1.0.0-to-1.1.0", "1.1.0-to-1.0.0"]


@pytest.mark.parametrize("name", ["1.0.0-to-1.1.0", "1.1.0-to-1.0.0"])
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

"""Golden outputs of ``compat.diff``: every rendering over the real releases and the fixtures.

A refactoring of the engine or of the change list must leave every byte of these outputs
alone; a deliberate change of wording or judgement shows up as a reviewable diff of the
golden files. Cases:

* the frozen releases ``proto/releases/*.binpb``, every ordered pair (both directions);
* each rule fixture ``compat/testdata/{previous,current}/<RULE>/``, both directions;
* a few generated corpus pairs (seeded, proto2/proto3/editions, many kinds of edits).

Each case is rendered as JSON, text and Markdown with every rule category. The release
pairs are stored in full (``golden/releases/``, they are what release notes are made of);
the other cases as SHA-256 digests (``golden/digests.json``). Regenerate after a deliberate
change, and review the diff::

    PYTHONPATH=gen:. .venv/bin/python -m tests.unit.compat.golden
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import compat
from bench.compat.corpus import generate, mutate, write_tree

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent / "golden"
RELEASES = REPO / "proto" / "releases"
TESTDATA = REPO / "compat" / "testdata"
FORMATS = {"json": "json", "text": "txt", "markdown": "md"}
SEEDS = (3, 8, 21)


def _render(old: compat.LoadedInput, new: compat.LoadedInput) -> dict[str, str]:
    result = compat.diff(
        old.schema, new.schema, old=old.label, new=new.label, categories=list(compat.Category)
    )
    return {fmt: result.render(fmt) for fmt in FORMATS}


def release_cases() -> Iterator[tuple[str, dict[str, str]]]:
    """``(name, renderings)`` for every ordered pair of frozen releases."""
    loaded = [
        compat.load_input(f"release:{v}", releases_dir=RELEASES)
        for v in compat.list_release_versions(RELEASES)
    ]
    for old, new in itertools.permutations(loaded, 2):
        name = f"{old.label.removeprefix('release:')}-to-{new.label.removeprefix('release:')}"
        yield name, _render(old, new)


def other_cases() -> Iterator[tuple[str, dict[str, str]]]:
    """``(name, renderings)`` for the rule fixtures and the generated pairs."""
    for rule in sorted(p.name for p in (TESTDATA / "current").iterdir() if p.is_dir()):
        prev = compat.load_input(str(TESTDATA / "previous" / rule))
        cur = compat.load_input(str(TESTDATA / "current" / rule))
        # Labels relative to the repository, so the checkout's path does not leak in.
        prev = compat.LoadedInput(f"previous/{rule}", prev.schema, prev.image)
        cur = compat.LoadedInput(f"current/{rule}", cur.schema, cur.image)
        yield f"{rule}/forward", _render(prev, cur)
        yield f"{rule}/backward", _render(cur, prev)
    with tempfile.TemporaryDirectory(prefix="hplus-golden-") as tmp:
        for seed in SEEDS:
            base = generate(seed)
            tree, _ = mutate(base, seed * 7 + 1, edits=12)
            write_tree(base, Path(tmp) / f"p{seed}")
            write_tree(tree, Path(tmp) / f"c{seed}")
            # Labels are fixed so the temporary paths do not leak into the output.
            prev = compat.load_input(str(Path(tmp) / f"p{seed}"))
            cur = compat.load_input(str(Path(tmp) / f"c{seed}"))
            prev = compat.LoadedInput("previous", prev.schema, prev.image)
            cur = compat.LoadedInput("current", cur.schema, cur.image)
            yield f"generated-{seed}/forward", _render(prev, cur)
            yield f"generated-{seed}/backward", _render(cur, prev)


def digest(text: str) -> str:
    """The SHA-256 of one rendering."""
    return hashlib.sha256(text.encode()).hexdigest()


def release_file(name: str, fmt: str) -> Path:
    """Where the full rendering of a release pair is kept."""
    return HERE / "releases" / f"{name}.{FORMATS[fmt]}"


def main() -> None:
    """Rewrite every golden file from the current code."""
    (HERE / "releases").mkdir(parents=True, exist_ok=True)
    for old in (HERE / "releases").iterdir():
        old.unlink()
    for name, out in release_cases():
        for fmt, text in out.items():
            release_file(name, fmt).write_text(text + "\n")
    digests = {
        name: {fmt: digest(text) for fmt, text in out.items()} for name, out in other_cases()
    }
    (HERE / "digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

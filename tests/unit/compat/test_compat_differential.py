"""Differential test: our findings must equal ``buf breaking``'s, finding for finding.

Seeded random trees (proto3, proto2 and edition 2023 files; nested types, maps, oneofs,
enums, services) are mutated the way release managers edit contracts, and each pair is
checked by both tools under WIRE, WIRE_JSON and FILE. The compared key is
``(rule, file, line)``; per-rule fixtures pin columns separately.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import compat
from bench.compat.corpus import generate, mutate, write_tree

BUF = Path(sys.executable).parent / "buf"
CATEGORIES = ("WIRE", "WIRE_JSON", "FILE")
SEEDS = range(28)
VARIANTS = 3
ALL = "FILE, PACKAGE, WIRE_JSON, WIRE"

Key = tuple[str, str, int]


def _start_buf(current: Path, previous: Path, category: str) -> subprocess.Popen[str]:
    config = current.parent / f"buf-{current.name}-{category.replace(', ', '-')}.yaml"
    config.write_text(f"version: v2\nbreaking:\n  use: [{category}]\n")
    return subprocess.Popen(
        [
            str(BUF),
            "breaking",
            str(current),
            "--against",
            str(previous),
            "--config",
            str(config),
            "--against-config",
            "version: v2",
            "--error-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_buf(proc: subprocess.Popen[str], current: Path) -> set[Key]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 100), err
    found: set[Key] = set()
    for line in out.splitlines():
        d = json.loads(line)
        path = d.get("path", "")
        if path:
            path = Path(path).resolve().relative_to(current.resolve()).as_posix()
        assert d["type"] != "COMPILE", line
        found.add((d["type"], path, d["start_line"]))
    return found


def test_buf_is_installed():
    proc = subprocess.run([str(BUF), "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, "buf-bin (a dev dependency) is needed for the differential test"


@pytest.mark.parametrize("seed", SEEDS)
def test_findings_equal_bufs(seed, tmp_path):
    """Per pair, two buf runs side by side (two CI cores).

    One run uses every rule at once; filtered by our registry's category table it must
    equal ours for each of WIRE, WIRE_JSON and FILE. The other run uses one category
    natively (rotating over the three), which checks the category table itself.
    """
    base = generate(seed)
    write_tree(base, tmp_path / "previous")
    previous = compat.load_input(str(tmp_path / "previous")).schema
    mismatches = []
    for variant in range(VARIANTS):
        tree, edits = mutate(base, seed * 101 + variant, edits=2 + variant * 2)
        current_dir = tmp_path / f"current{variant}"
        write_tree(tree, current_dir)
        native = CATEGORIES[(seed + variant) % len(CATEGORIES)]
        procs = {
            ALL: _start_buf(current_dir, tmp_path / "previous", ALL),
            native: _start_buf(current_dir, tmp_path / "previous", native),
        }
        current = compat.load_input(str(current_dir)).schema
        everything = _finish_buf(procs[ALL], current_dir)
        theirs_native = _finish_buf(procs[native], current_dir)
        for category in CATEGORIES:
            cat = compat.Category[category]
            ours = {
                (f.rule, f.path, f.line)
                for f in compat.breaking(previous, current, categories=[cat])
            }
            theirs = {k for k in everything if cat in compat.RULES[k[0]].categories}
            if category == native and theirs_native != theirs:
                mismatches.append(f"variant {variant} {category}: category table differs from buf")
                theirs = theirs_native
            if ours != theirs:
                mismatches.append(
                    f"variant {variant} {category} {edits}: only buf {sorted(theirs - ours)}, "
                    f"only ours {sorted(ours - theirs)}"
                )
    assert not mismatches, "\n".join(mismatches)


def test_the_mutations_exercise_most_rules(tmp_path):
    """Guard against a generator that silently stops producing interesting pairs."""
    seen: set[str] = set()
    for seed in range(6):
        base = generate(seed)
        write_tree(base, tmp_path / f"p{seed}")
        tree, _ = mutate(base, seed, edits=12)
        write_tree(tree, tmp_path / f"c{seed}")
        prev = compat.load_input(str(tmp_path / f"p{seed}")).schema
        cur = compat.load_input(str(tmp_path / f"c{seed}")).schema
        seen |= {f.rule for f in compat.breaking(prev, cur, categories=list(compat.Category))}
    assert len(seen) >= 20, sorted(seen)

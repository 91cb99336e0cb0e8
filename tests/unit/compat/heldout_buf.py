"""Held-out check against buf's own breaking-change testdata (not collected by pytest).

buf's testdata is not vendored (license and size); point this script at a checkout::

    git -C <buf> archive HEAD private/bufpkg/bufcheck/testdata/breaking | tar -x -C /tmp/buf
    PYTHONPATH=gen:. .venv/bin/python -m tests.unit.compat.heldout_buf \\
        /tmp/buf/private/bufpkg/bufcheck/testdata/breaking

Every case (except plugin and policy ones) runs through ``buf breaking`` and through
``compat.breaking`` with all rules at once; the sets of ``(rule, path, line, column)`` must
be equal. Each case's own ``buf.yaml`` is dropped, so every rule runs on every case.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import compat

BUF = Path(sys.executable).parent / "buf"
ALL = "FILE, PACKAGE, WIRE_JSON, WIRE"
SKIP = ("custom_plugins", "policy")


def check_case(
    base: Path, case: str
) -> tuple[set[tuple[str, str, int, int]], set[tuple[str, str, int, int]]]:
    """Return (buf's findings, ours) for one case."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cur, prev = root / "cur", root / "prev"
        shutil.copytree(base / "current" / case, cur)
        shutil.copytree(base / "previous" / case, prev)
        for d in (cur, prev):
            for y in d.rglob("*.yaml"):
                y.unlink()
        cfg = root / "buf.yaml"
        cfg.write_text(f"version: v2\nbreaking:\n  use: [{ALL}]\n")
        proc = subprocess.run(
            [
                str(BUF),
                "breaking",
                str(cur),
                "--against",
                str(prev),
                "--config",
                str(cfg),
                "--against-config",
                "version: v2",
                "--error-format",
                "json",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        theirs = set()
        for line in proc.stdout.splitlines():
            d = json.loads(line)
            path = d.get("path", "")
            if path:
                path = Path(path).resolve().relative_to(cur.resolve()).as_posix()
            theirs.add((d["type"], path, d["start_line"], d["start_column"]))
        old, new = compat.load_input(str(prev)), compat.load_input(str(cur))
        found = compat.breaking(old.schema, new.schema, categories=list(compat.Category))
        ours = {(f.rule, f.path, f.line, f.column) for f in found}
        return theirs, ours


def main() -> None:
    base = Path(sys.argv[1])
    cases = sorted(
        p.name for p in (base / "current").iterdir() if not any(s in p.name for s in SKIP)
    )
    same = 0
    for case in cases:
        theirs, ours = check_case(base, case)
        if theirs == ours:
            same += 1
        else:
            print(f"{case}: only buf {sorted(theirs - ours)}; only ours {sorted(ours - theirs)}")
    print(f"{same}/{len(cases)} cases identical (rule, path, line, column)")


if __name__ == "__main__":
    main()

"""The compat benchmark: our diff against ``buf breaking`` on the same generated pair.

Both tools run as separate processes on the same two directories, so wall time and peak
memory (``ru_maxrss`` from ``wait4``, which includes each tool's reaped children such as
protoc) are measured the same way. The window gate is timed in-process over five frozen
releases of a smaller tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import compat
from bench.compat.corpus import Tree, generate, mutate, write_tree

BUF = Path(sys.executable).parent / "buf"


@dataclass(frozen=True)
class Measure:
    """One timed process run."""

    name: str
    wall_s: float
    peak_mib: float
    exit_code: int


def _timed(name: str, argv: Sequence[str], cwd: Path) -> Measure:
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "gen"), str(root)])
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode not in (0, 1, 100):
        raise RuntimeError(f"{name} failed ({proc.returncode}): {err.strip()[:500]}")
    return Measure(name, wall, usage.ru_maxrss / 1024, proc.returncode)


def _count(tree: Tree) -> tuple[int, int]:
    files = len(tree.files)
    messages = sum(len(f.messages) for f in tree.files)
    return files, messages


def run(*, quick: bool) -> dict[str, object]:
    """Generate the corpus, run both tools, print the table; returns the JSON summary."""
    packages, per_pkg, msgs = (10, 10, 5) if quick else (100, 20, 10)
    edits = 20 if quick else 60
    t0 = time.perf_counter()
    base = generate(2026, packages=packages, files_per_package=per_pkg, messages_per_file=msgs)
    changed, _ = mutate(base, 7, edits=edits)
    gen_s = time.perf_counter() - t0
    files, messages = _count(base)
    with tempfile.TemporaryDirectory(prefix="hplus-bench-compat-") as tmp:
        root = Path(tmp)
        old, new = root / "old", root / "new"
        write_tree(base, old)
        write_tree(changed, new)
        config = root / "buf.yaml"
        config.write_text("version: v2\nbreaking:\n  use: [FILE]\n")
        buf_argv = [
            str(BUF),
            "breaking",
            str(new),
            "--against",
            str(old),
            "--config",
            str(config),
            "--against-config",
            "version: v2",
            "--error-format",
            "json",
        ]
        ours_rules = [
            sys.executable,
            "-m",
            "tools.cli",
            "compat",
            "diff",
            str(old),
            str(new),
            "--category",
            "FILE",
            "--format",
            "json",
            "--fail-on",
            "never",
        ]
        # Warm the page cache and buf's own cache once, so neither tool pays for it alone.
        _timed("warm-up", buf_argv, root)
        buf = _timed("buf breaking (FILE)", buf_argv, root)
        ours = _timed("hplus compat diff (FILE, + change list)", ours_rules, root)

        # Window gate: five successive releases of a small tree, frozen as images.
        small = generate(11, packages=3, files_per_package=5, messages_per_file=5)
        releases = root / "releases"
        releases.mkdir()
        tree = small
        for i in range(5):
            tree, _ = mutate(tree, 100 + i, edits=3)
            src = root / f"rel{i}"
            write_tree(tree, src)
            image = releases / f"1.{i}.0.binpb"
            image.write_bytes(compat.compile_protos(src).SerializeToString())
        cand_dir = root / "candidate"
        cand_tree, _ = mutate(tree, 999, edits=3)
        write_tree(cand_tree, cand_dir)
        t1 = time.perf_counter()
        cand = compat.load_input(str(cand_dir))
        rels = [
            compat.load_input(f"release:{v}", releases_dir=releases)
            for v in compat.list_release_versions(releases)
        ]
        report = compat.window(cand, rels)
        window_s = time.perf_counter() - t1
    ratio_wall = ours.wall_s / buf.wall_s
    ratio_mem = ours.peak_mib / buf.peak_mib
    rows = [
        ("tool", "wall s", "peak MiB", "exit"),
        (buf.name, f"{buf.wall_s:.2f}", f"{buf.peak_mib:.0f}", str(buf.exit_code)),
        (ours.name, f"{ours.wall_s:.2f}", f"{ours.peak_mib:.0f}", str(ours.exit_code)),
        ("ratio ours / buf", f"{ratio_wall:.2f}x", f"{ratio_mem:.2f}x", ""),
        (f"window gate, 5 releases ({len(report.results)} pairs)", f"{window_s:.2f}", "", ""),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"corpus: {files} files, {messages} top-level messages, {edits} edits "
        f"(generated in {gen_s:.1f}s)"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    summary: dict[str, object] = {
        "benchmark": "compat",
        "quick": quick,
        "files": files,
        "messages": messages,
        "edits": edits,
        "buf_wall_s": round(buf.wall_s, 3),
        "buf_peak_mib": round(buf.peak_mib, 1),
        "ours_wall_s": round(ours.wall_s, 3),
        "ours_peak_mib": round(ours.peak_mib, 1),
        "wall_ratio": round(ratio_wall, 3),
        "memory_ratio": round(ratio_mem, 3),
        "window_5_releases_s": round(window_s, 3),
    }
    print(json.dumps(summary))
    return summary

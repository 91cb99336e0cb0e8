"""``python -m bench.packages [--distance N] [--repeat N]``: delta vs full upgrade bytes.

An edge at any version moves to the latest in one step: the cloud sends a bsdiff4 delta
when it has the edge's installed package, else the full package. This measures, on real
content, what a delta saves and what it costs. Each "release" is a package of one wheel-like
zip of this repository's Python sources (``git archive --format=zip`` of ``mesh cloud
frontend_server tools gen``) at a commit of this repository's history: consecutive releases
are adjacent commits, distant ones ``--distance`` commits apart. The baseline (the full
package) is measured in the same run. Prints a table; the last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import time

from mesh.packages import (
    apply_delta,
    build_package,
    certify_signing_key,
    generate_key,
    make_delta,
    sign_package,
)

_TREES = ["mesh", "cloud", "frontend_server", "tools", "gen"]


def _commits(count: int) -> list[str]:
    out = subprocess.run(
        ["git", "rev-list", "--first-parent", f"--max-count={count}", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return list(reversed(out))


def _wheel(commit: str) -> bytes:
    return subprocess.run(
        ["git", "archive", "--format=zip", commit, "--", *_TREES],
        check=True,
        capture_output=True,
    ).stdout


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.packages", description=__doc__)
    parser.add_argument("--distance", type=int, default=20, help="commits between distant releases")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of each kind")
    args = parser.parse_args()
    root, signing = generate_key(), generate_key()
    cert = certify_signing_key(root, signing.public_key(), valid_for=dt.timedelta(days=1))
    commits = _commits(args.distance + args.pairs + 1)
    if len(commits) < args.distance + args.pairs + 1:
        sys.exit(f"need {args.distance + args.pairs + 1} commits of history, have {len(commits)}")
    packages: dict[str, bytes] = {}

    def package(i: int) -> bytes:
        commit = commits[i]
        if commit not in packages:
            unsigned = build_package(
                {"hplus_edge.whl": _wheel(commit)},
                version=f"1.{i}.0",
                contract_release="1.2.0",
                profile_schema_version=1,
            )
            packages[commit] = sign_package(unsigned, signing, cert)
        return packages[commit]

    last = len(commits) - 1
    rows: list[dict[str, float | int | str]] = []
    for kind, gap in (("consecutive", 1), ("distant", args.distance)):
        for k in range(args.pairs):
            new_i = last - k
            old, new = package(new_i - gap), package(new_i)
            t0 = time.perf_counter()
            delta = make_delta(old, new)
            t1 = time.perf_counter()
            rebuilt = apply_delta(old, delta)
            t2 = time.perf_counter()
            assert rebuilt == new
            rows.append(
                {
                    "kind": kind,
                    "commits_apart": gap,
                    "full_bytes": len(new),
                    "delta_bytes": len(delta),
                    "ratio": len(delta) / len(new),
                    "diff_s": t1 - t0,
                    "patch_s": t2 - t1,
                }
            )
    print(
        f"{'kind':<12} {'apart':>5} {'full B':>10} {'delta B':>10} {'delta/full':>10} "
        f"{'diff s':>7} {'patch s':>7}"
    )
    for r in rows:
        print(
            f"{r['kind']:<12} {r['commits_apart']:>5} {r['full_bytes']:>10,} "
            f"{r['delta_bytes']:>10,} {r['ratio']:>10.3f} {r['diff_s']:>7.2f} "
            f"{r['patch_s']:>7.3f}"
        )

    def median(kind: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in rows if r["kind"] == kind)

    summary = {
        kind: {
            "median_full_bytes": median(kind, "full_bytes"),
            "median_delta_bytes": median(kind, "delta_bytes"),
            "median_ratio": median(kind, "ratio"),
        }
        for kind in ("consecutive", "distant")
    }
    print(json.dumps({"bench": "packages", "rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()

"""Runs the labelled fault set and reports the attribution's accuracy.

Two sets are drawn: the *tuning* set from ``seed`` and the *held-out* set from
``seed + 1000`` (other dialects, order, fields, delays); the table's rules are written
against the first only, and both are reported. Every case runs against the same platform,
one after another, so each failure the node records belongs to one case.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.attribution._cases import KINDS, Outcome, build_cases, run_case
from mesh.attribution import Owner

OWNERS = tuple(owner.value for owner in Owner)
"""Every owner, in the table's order (`mesh.attribution.Owner`)."""
HOLD_OUT = 1000
"""The held-out set is drawn from ``seed + HOLD_OUT``."""


@dataclasses.dataclass
class Report:
    """Accuracy of one run: overall, per owner, per set; the confusion; the misses."""

    outcomes: dict[str, list[Outcome]]
    seconds: float

    def accuracy(self, outcomes: list[Outcome]) -> float:
        return sum(o.correct for o in outcomes) / len(outcomes) if outcomes else 0.0

    @property
    def all(self) -> list[Outcome]:
        return [o for group in self.outcomes.values() for o in group]

    def per_owner(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for owner in OWNERS:
            mine = [o for o in self.all if o.case.owner == owner]
            out[owner] = (sum(o.correct for o in mine), len(mine))
        return out

    def confusion(self) -> dict[str, collections.Counter[str]]:
        out: dict[str, collections.Counter[str]] = {o: collections.Counter() for o in OWNERS}
        for o in self.all:
            out[o.case.owner][o.predicted or "(none)"] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "cases": len(self.all),
            "accuracy": round(self.accuracy(self.all), 4),
            "sets": {
                name: {"cases": len(group), "accuracy": round(self.accuracy(group), 4)}
                for name, group in self.outcomes.items()
            },
            "per_owner": {
                owner: {"correct": c, "cases": n} for owner, (c, n) in self.per_owner().items()
            },
            "owners_present": sorted({o.case.owner for o in self.all}),
            "reason_named": sum(o.reason_named for o in self.all),
            "misattributed": [
                {
                    "kind": o.case.kind,
                    "dialect": o.case.dialect,
                    "seed": o.case.seed,
                    "expected": o.case.owner,
                    "got": o.predicted,
                    "reason": o.reason,
                    "recorded": o.detail,
                }
                for o in self.all
                if not o.correct
            ],
            "seconds": round(self.seconds, 1),
        }

    def lines(self) -> list[str]:
        out = [f"{len(self.all)} injected faults in {self.seconds:.0f}s"]
        for name, group in self.outcomes.items():
            out.append(f"  {name:<9} {len(group):>4} cases  accuracy {self.accuracy(group):.1%}")
        out.append(f"  overall   {len(self.all):>4} cases  accuracy {self.accuracy(self.all):.1%}")
        named = sum(o.reason_named for o in self.all)
        out.append(f"  reason code naming the injected fault: {named}/{len(self.all)}")
        out.append("")
        out.append(f"{'OWNER':<17} {'CORRECT':>8} {'CASES':>6} {'ACCURACY':>9}")
        for owner, (c, n) in self.per_owner().items():
            out.append(f"{owner:<17} {c:>8} {n:>6} {c / n if n else 0:>9.1%}")
        out.append("")
        heads = [*OWNERS, "(none)"]
        short = {o: o.split("_")[0][:8] for o in OWNERS} | {"(none)": "(none)"}
        out.append("confusion (rows: known owner, columns: attributed)")
        out.append(f"{'':<17}" + "".join(f"{short[h]:>9}" for h in heads))
        for owner, row in self.confusion().items():
            out.append(f"{owner:<17}" + "".join(f"{row.get(h, 0):>9}" for h in heads))
        out.append("")
        out.append("reason codes recorded, per kind of fault")
        for kind in KINDS:
            reasons = collections.Counter(
                o.reason or "(none)" for o in self.all if o.case.kind == kind
            )
            if reasons:
                listed = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
                out.append(f"  {kind:<20} {listed}")
        misses = [o for o in self.all if not o.correct]
        out.append("")
        out.append(f"misattributed: {len(misses)}")
        for o in misses:
            out.append(
                f"  {o.case.kind} ({o.case.dialect}, seed {o.case.seed}): expected "
                f"{o.case.owner}, got {o.predicted or '(nothing recorded)'} {o.reason} "
                f"[{o.detail}]"
            )
        return out


async def _main(
    seed: int,
    per_kind: int,
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    postgres_url: str | None = None,
    keep: Path | None = None,
) -> Report:
    from bench.attribution._platform import platform
    from tools.scratchdb import DEFAULT_POSTGRES

    sets = {
        "tuning": build_cases(seed, per_kind),
        "held-out": build_cases(seed + HOLD_OUT, per_kind),
    }
    outcomes: dict[str, list[Outcome]] = {name: [] for name in sets}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-attr-")))
        else:
            root = keep
            root.mkdir(parents=True, exist_ok=True)
        async with platform(
            root, redis_url=redis_url, postgres_url=postgres_url or DEFAULT_POSTGRES
        ) as plat:
            for name, cases in sets.items():
                for case in cases:
                    outcomes[name].append(await run_case(plat, case))
    return Report(outcomes, time.perf_counter() - started)


def run(*, seed: int, per_kind: int, as_json: bool = False, keep: Path | None = None) -> Report:
    """Runs both sets and prints the report (and the figures as JSON on the last line).

    With ``keep``, the node's data directory stays in ``keep/cloud`` afterwards, so
    ``hplus cloud errors --data-dir keep/cloud`` shows what the node recorded.
    """
    report = asyncio.run(_main(seed, per_kind, keep=keep))
    if not as_json:
        for line in report.lines():
            print(line)
    print(json.dumps(report.as_dict()))
    return report


__all__ = ["HOLD_OUT", "KINDS", "OWNERS", "Report", "run"]

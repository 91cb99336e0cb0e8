"""The window gate: a candidate against each of the last N frozen releases, both directions.

Hospitals upgrade slowly, so a newer cloud must keep working with edges up to N releases
behind. For each release ``R`` the gate runs the rules of ``R → candidate`` and judges the
change list both ways: requests the newer cloud sends to an edge on ``R``, and responses an
edge on ``R`` sends back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

from compat._changes import ParameterChange
from compat._inputs import LoadedInput
from compat._model import Category, Severity
from compat._report import DiffResult, diff
from compat._suppress import Suppressions

__all__ = ["WindowReport", "window"]


@dataclasses.dataclass(frozen=True)
class WindowReport:
    """One candidate checked against several releases."""

    candidate: str
    """Label of the candidate."""
    results: list[DiffResult]
    """One comparison per release, oldest first."""

    def row(self, r: DiffResult) -> dict[str, Any]:
        """The matrix row of one release."""
        req = [p for p in r.report.parameters if p.direction == "request"]
        resp = [p for p in r.report.parameters if p.direction == "response"]
        rpc = [p for p in r.report.parameters if p.direction is None]
        return {
            "release": r.old,
            "verdict": "compatible" if self.ok(r) else "breaking",
            "breaking": len(r.breaking),
            "approved": sum(f.approved for f in r.findings),
            "request_errors": sum(_error(p) for p in req + rpc),
            "response_errors": sum(_error(p) for p in resp),
            "warnings": sum(p.severity is Severity.WARN for p in r.report.parameters),
            "changes": len(r.report.changes),
        }

    @staticmethod
    def ok(r: DiffResult) -> bool:
        """A pair passes when no unapproved finding and no direction error remain."""
        return r.compatible and not any(
            p.severity is Severity.ERROR and not p.approved for p in r.report.parameters
        )

    @property
    def passed(self) -> bool:
        """Whether every release in the window is compatible with the candidate."""
        return all(self.ok(r) for r in self.results)

    def to_json(self) -> dict[str, Any]:
        """Matrix plus per-pair results as a JSON object."""
        return {
            "schema": "hplus.compat.window/v1",
            "candidate": self.candidate,
            "passed": self.passed,
            "matrix": [self.row(r) for r in self.results],
            "pairs": [r.to_json() for r in self.results],
        }

    def render(self, fmt: str) -> str:
        """Render as ``text``, ``json`` or ``markdown``."""
        if fmt == "json":
            return json.dumps(self.to_json(), indent=2)
        rows = [self.row(r) for r in self.results]
        cols = [
            "release",
            "verdict",
            "breaking",
            "approved",
            "request_errors",
            "response_errors",
            "warnings",
            "changes",
        ]
        if fmt == "markdown":
            out = [
                f"# Window gate for `{self.candidate}`",
                "",
                "| " + " | ".join(cols) + " |",
                "|" + "---|" * len(cols),
            ]
            out += ["| " + " | ".join(str(row[c]) for c in cols) + " |" for row in rows]
            for r in self.results:
                out += ["", r.render("markdown")]
            return "\n".join(out) + "\n"
        widths = [max(len(c), *(len(str(row[c])) for row in rows)) for c in cols] if rows else []
        out = [f"window gate for {self.candidate}: {'PASS' if self.passed else 'FAIL'}", ""]
        out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for row in rows:
            out.append("  ".join(str(row[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
        for r in self.results:
            problems = [*r.findings, *(p for p in r.report.parameters if _error(p))]
            if not problems:
                continue
            out += ["", f"--- {r.old} -> {self.candidate}"]
            for f in r.findings:
                tag = " (approved)" if f.approved else ""
                where = f"{f.path}:{f.line}:{f.column}" if f.path else f.against_path
                out.append(f"  {where}: {f.rule} {f.message} ({f.fingerprint}){tag}")
            for p in r.report.parameters:
                if _error(p):
                    where = f"{p.direction} {p.parameter}" if p.direction else "rpc"
                    out.append(f"  {p.service}/{p.rpc} {where}: {p.change.message} — {p.note}")
        return "\n".join(out)


def _error(p: ParameterChange) -> bool:
    return p.severity is Severity.ERROR and not p.approved


def window(
    candidate: LoadedInput,
    releases: Sequence[LoadedInput],
    *,
    categories: Iterable[Category] = (Category.WIRE,),
    suppressions: Suppressions | None = None,
) -> WindowReport:
    """Check ``candidate`` against every release in ``releases``.

    Args:
        candidate: the newer contracts (the working tree, usually).
        releases: the frozen releases in the window, oldest first.
        categories: rule categories to run per pair; cloud and edges speak binary gRPC,
            so ``WIRE`` by default.
        suppressions: what to ignore or accept.

    Returns:
        The matrix and the per-pair results.
    """
    cats = tuple(categories)
    results = [
        diff(
            rel.schema,
            candidate.schema,
            old=rel.label,
            new=candidate.label,
            categories=cats,
            suppressions=suppressions,
        )
        for rel in releases
    ]
    return WindowReport(candidate.label, results)

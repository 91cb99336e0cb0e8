"""The window gate: a candidate against each of the last N frozen releases, both directions.

Hospitals upgrade slowly, so a newer cloud must keep working with edges up to N releases
behind. For each release ``R`` the gate runs the rules of ``R → candidate`` and judges the
change list both ways: what the newer cloud sends to an edge (or app) on ``R`` — requests
to hospital services, responses of the cloud's own — and what comes back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

from compat._changes import ParameterChange
from compat._inputs import LoadedInput
from compat._judge import CLOUD_SERVICES
from compat._model import DEFAULT_CATEGORIES, Category, Severity
from compat._report import APPROVE_HINT, DiffResult, diff
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
            "blocking": len(r.blocking),
            "breaking": len(r.breaking),
            "approved": sum(j.approved and j.severity is Severity.ERROR for j in r.judgements),
            "request_errors": sum(_error(p) for p in req + rpc),
            "response_errors": sum(_error(p) for p in resp),
            "warnings": sum(p.severity is Severity.WARN for p in r.report.parameters),
            "changes": len(r.report.changes),
        }

    @staticmethod
    def ok(r: DiffResult) -> bool:
        """A pair passes when nothing blocks: the same verdict as ``compat diff`` and a push."""
        return r.compatible

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
            "blocking",
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
            errors = [j for j in r.judgements if j.severity is Severity.ERROR]
            if not errors:
                continue
            out += ["", f"--- {r.old} -> {self.candidate}"]
            for j in errors:
                tag = " (approved)" if j.approved else ""
                out.append(f"  {j.where}: {j.rule} {j.message} ({j.fingerprint}){tag}")
                for p in j.parameters:
                    if p.severity is Severity.ERROR:
                        where = f"{p.direction} {p.parameter}" if p.direction else "rpc"
                        out.append(f"      {p.service}/{p.rpc} {where}: {p.note}")
        if not self.passed:
            out += ["", APPROVE_HINT]
        return "\n".join(out)


def _error(p: ParameterChange) -> bool:
    return p.severity is Severity.ERROR and not p.approved


def window(
    candidate: LoadedInput,
    releases: Sequence[LoadedInput],
    *,
    categories: Iterable[Category] = DEFAULT_CATEGORIES,
    suppressions: Suppressions | None = None,
    cloud_services: Iterable[str] = CLOUD_SERVICES,
) -> WindowReport:
    """Check ``candidate`` against every release in ``releases``.

    Args:
        candidate: the newer contracts (the working tree, usually).
        releases: the frozen releases in the window, oldest first.
        categories: rule categories to run per pair; by default those of every gate
            (:data:`compat.DEFAULT_CATEGORIES`), so the window refuses what a push refuses.
        suppressions: what to ignore or accept.
        cloud_services: services the cloud serves (see :func:`compat.diff`).

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
            cloud_services=cloud_services,
        )
        for rel in releases
    ]
    return WindowReport(candidate.label, results)

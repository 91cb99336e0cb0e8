"""One comparison end to end (rules, changes, suppressions) and its text/JSON/Markdown forms.

The JSON form is the documented machine interface (``schema: hplus.compat.diff/v1``)::

    {
      "schema": "hplus.compat.diff/v1",
      "old": "release:1.0.0", "new": "proto",
      "categories": ["WIRE_JSON"],
      "compatible": false,            # nothing blocks (see "blocking")
      "summary": {"breaking": 2, "approved": 1, "ignored": 0, "blocking": 3,
                  "changes": 14, "parameters": {"error": 1, "warn": 3, "info": 9}},
      "blocking": [{"rule", "category", "severity", "path", "line", "column", "message",
                    "subject", "fingerprint", "approved"}],   # what to approve
      "findings": [{"rule", "category", "severity", "path", "line", "column", "end_line",
                    "end_column", "message", "subject", "against_path", "fingerprint",
                    "approved"}],
      "changes": [{"kind", "element", "owner", "name", "number", "old", "new", "message",
                   "path", "line", "column", "severity", "fingerprint"}],
      "parameters": [{"service", "rpc", "direction", "parameter", "severity", "note",
                      "change": {...}}]
    }

New keys may be added; existing keys keep their meaning.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable
from typing import Any

from compat._changes import Change, ChangeReport, ParameterChange
from compat._engine import run_rules
from compat._gate import Judgement, judgements
from compat._index import Schema
from compat._judge import CLOUD_SERVICES, change_report
from compat._model import DEFAULT_CATEGORIES, Category, Finding, Severity
from compat._pairing import Pairing
from compat._registry import select
from compat._suppress import Suppressions

__all__ = ["DiffResult", "diff"]

SCHEMA_ID = "hplus.compat.diff/v1"


@dataclasses.dataclass(frozen=True)
class DiffResult:
    """Everything one comparison found."""

    old: str
    """Label of the older input."""
    new: str
    """Label of the newer input."""
    categories: tuple[Category, ...]
    """Rule categories that ran."""
    findings: list[Finding]
    """Rule findings after suppressions (approved ones included, marked)."""
    ignored: list[Finding]
    """Findings dropped by suppressions."""
    report: ChangeReport
    """The full change list (suppressions applied)."""
    approvals: frozenset[str] = frozenset()
    """The approved fingerprints the comparison ran with."""

    @property
    def breaking(self) -> list[Finding]:
        """Rule findings that are neither ignored nor approved."""
        return [f for f in self.findings if not f.approved]

    @functools.cached_property
    def judgements(self) -> list[Judgement]:
        """Every finding and change as the gate judges it (see :mod:`compat._gate`)."""
        return judgements(self.findings, self.report, self.approvals)

    @property
    def blocking(self) -> list[Judgement]:
        """What stops the release: unapproved findings and unapproved changes judged ERROR."""
        return [j for j in self.judgements if j.blocking]

    @property
    def compatible(self) -> bool:
        """Whether nothing blocks: the verdict of ``compat diff``, the window and a push."""
        return not self.blocking

    def failed(self, fail_on: Severity | None) -> bool:
        """Whether the result should fail a gate.

        Args:
            fail_on: ``ERROR`` fails on what blocks (unapproved findings and changes judged
                ERROR); ``WARN`` / ``INFO`` also on parameter changes judged at that
                severity or above; ``None`` never fails.
        """
        if fail_on is None:
            return False
        if self.blocking:
            return True
        if fail_on is Severity.ERROR:
            return False
        return any(p.severity >= fail_on and not p.approved for p in self.report.parameters) or (
            fail_on is Severity.INFO and bool(self.report.changes)
        )

    def to_json(self) -> dict[str, Any]:
        """The documented JSON object."""
        counts = {s.name.lower(): 0 for s in reversed(Severity)}
        for p in self.report.parameters:
            counts[p.severity.name.lower()] += 1
        return {
            "schema": SCHEMA_ID,
            "old": self.old,
            "new": self.new,
            "categories": [c.value for c in self.categories],
            "compatible": self.compatible,
            "summary": {
                "breaking": len(self.breaking),
                "approved": sum(f.approved for f in self.findings),
                "ignored": len(self.ignored),
                "blocking": len(self.blocking),
                "changes": len(self.report.changes),
                "parameters": counts,
            },
            "blocking": [j.to_json() for j in self.blocking],
            "findings": [f.to_json() for f in self.findings],
            "changes": [c.to_json() for c in self.report.changes],
            "parameters": [p.to_json() for p in self.report.parameters],
        }

    def render(self, fmt: str) -> str:
        """Render as ``text``, ``json`` or ``markdown``."""
        if fmt == "json":
            return json.dumps(self.to_json(), indent=2)
        if fmt == "markdown":
            return _markdown(self)
        return _text(self)


def diff(
    previous: Schema,
    current: Schema,
    *,
    old: str = "previous",
    new: str = "current",
    categories: Iterable[Category] = DEFAULT_CATEGORIES,
    suppressions: Suppressions | None = None,
    cloud_services: Iterable[str] = CLOUD_SERVICES,
) -> DiffResult:
    """Compare two releases: rule findings plus the parameter-change list.

    Args:
        previous: the older release.
        current: the newer release.
        old: label of the older release, for output.
        new: label of the newer release, for output.
        categories: rule categories to run.
        suppressions: what to ignore or accept.
        cloud_services: services the cloud serves (full names, or package prefixes ending
            in ``.``), whose requests come from older clients; the rest are served by edges.

    Returns:
        The result.
    """
    cats = tuple(dict.fromkeys(categories))
    sup = suppressions or Suppressions()
    pairing = Pairing(previous, current)  # one pairing for the rules and the change list
    kept, dropped = sup.apply(run_rules(pairing, select(cats)), previous, current)
    rep = change_report(pairing, cloud_services=cloud_services)
    rep = ChangeReport(
        sup.apply_changes(rep.changes, previous, current),
        sup.apply_parameters(rep.parameters, previous, current),
    )
    return DiffResult(old, new, cats, kept, dropped, rep, sup.approvals)


def _errors(r: DiffResult) -> list[Judgement]:
    """Findings and changes judged ERROR, approved or not: what the gate looks at."""
    return [j for j in r.judgements if j.severity is Severity.ERROR]


def _judgement_line(j: Judgement) -> str:
    cat = f" [{j.category.value}]" if j.category is not None else ""
    tag = " (approved)" if j.approved else ""
    return f"{j.where}: {j.rule}{cat} {j.message} ({j.fingerprint}){tag}"


APPROVE_HINT = (
    "approve intended breaks by listing their fingerprints in an approvals file "
    "(hplus compat --approvals FILE; hplus registry push --approve FILE)"
)


def _grouped(params: list[ParameterChange]) -> dict[str, dict[str, list[ParameterChange]]]:
    out: dict[str, dict[str, list[ParameterChange]]] = {}
    for p in params:
        out.setdefault(p.service, {}).setdefault(p.rpc, []).append(p)
    return out


_DIR_ORDER = {None: 0, "request": 1, "response": 2}

_SERVED = {
    "edge": "served by edges: the newer cloud calls older edges",
    "cloud": "served by the cloud: older edges and apps call the newer cloud",
}


def _text(r: DiffResult) -> str:
    cats = ", ".join(c.value for c in r.categories)
    verdict = "compatible" if r.compatible else "BREAKING"
    errors = _errors(r)
    approved = sum(j.approved for j in errors)
    lines = [
        f"compat diff {r.old} -> {r.new} [{cats}]: {verdict} — {len(r.blocking)} breaking, "
        f"{approved} approved, {len(r.ignored)} ignored, {len(r.report.changes)} changes"
    ]
    if errors:
        lines.append("")
        lines.append("Findings:")
        lines += [f"  {_judgement_line(j)}" for j in errors]
    if r.report.parameters:
        lines.append("")
        lines.append("Parameter changes (request: caller -> server; response: server -> caller):")
        for svc, rpcs in sorted(_grouped(r.report.parameters).items()):
            served = next(iter(rpcs.values()))[0].served_by
            lines.append(f"  service {svc} ({_SERVED[served]})")
            for rpc, items in sorted(rpcs.items()):
                lines.append(f"    rpc {rpc}")
                items = sorted(items, key=lambda p: (_DIR_ORDER[p.direction], p.parameter))
                for p in items:
                    where = f"{p.direction} {p.parameter}" if p.direction else "(rpc)"
                    note = f" — {p.note}" if p.note else ""
                    note += " (approved)" if p.approved else ""
                    lines.append(
                        f"      {p.severity.name:<5} {where}: {p.change.kind.value}: "
                        f"{p.change.message}{note}"
                    )
    other = _unreached(r)
    if other:
        lines.append("")
        lines.append("Other changes (types, and fields no RPC reaches):")
        lines += [f"  {c.severity.name:<5} {c.path}:{c.line}: {c.message}" for c in other]
    if r.blocking:
        lines += ["", APPROVE_HINT]
    return "\n".join(lines)


def _unreached(r: DiffResult) -> list[Change]:
    reached = {p.change for p in r.report.parameters}
    return [c for c in r.report.changes if c not in reached]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown(r: DiffResult) -> str:
    cats = ", ".join(c.value for c in r.categories)
    verdict = "compatible" if r.compatible else "**breaking**"
    errors = _errors(r)
    out = [
        f"# Contract changes: `{r.old}` → `{r.new}`",
        "",
        f"Checked under {cats}: {verdict}; {len(r.blocking)} breaking finding(s), "
        f"{sum(j.approved for j in errors)} approved, {len(r.report.changes)} change(s).",
        "",
    ]
    if errors:
        out += [
            "## Breaking findings",
            "",
            "| Rule | Where | What | Fingerprint |",
            "|---|---|---|---|",
        ]
        for j in errors:
            where = f"`{j.where}`" if j.path else f"`{j.against_path}` (deleted)"
            fp = f"`{j.fingerprint}`" + (" (approved)" if j.approved else "")
            out.append(f"| `{j.rule}` | {where} | {_md_escape(j.message)} | {fp} |")
        out.append("")
    if r.report.parameters:
        out += ["## Changes per RPC", ""]
        out.append(
            "*Request*: sent by the caller; *response*: sent back by the server. Services "
            "served by edges (hospital services) are called by the newer cloud, so their "
            "requests reach older edges; services served by the cloud are called by older "
            "edges and apps, so their responses reach them."
        )
        out.append("")
        for svc, rpcs in sorted(_grouped(r.report.parameters).items()):
            served = next(iter(rpcs.values()))[0].served_by
            out += [f"### `{svc}` ({_SERVED[served]})", ""]
            for rpc, items in sorted(rpcs.items()):
                out += [
                    f"#### `{rpc}`",
                    "",
                    "| Direction | Parameter | Change | Severity | Why |",
                    "|---|---|---|---|---|",
                ]
                items = sorted(items, key=lambda p: (_DIR_ORDER[p.direction], p.parameter))
                for p in items:
                    out.append(
                        f"| {p.direction or 'rpc'} | `{p.parameter or rpc}` | "
                        f"{_md_escape(p.change.message)} | {p.severity.name.lower()} | "
                        f"{_md_escape(p.note)} |"
                    )
                out.append("")
    other = _unreached(r)
    if other:
        out += ["## Other changes", ""]
        out += [f"- {c.severity.name.lower()}: {_md_escape(c.message)} (`{c.path}`)" for c in other]
        out.append("")
    return "\n".join(out).rstrip() + "\n"

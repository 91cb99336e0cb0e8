"""The one gate: which rule findings and changes block a release, by fingerprint.

Two kinds of results can break a release: rule findings (buf's rules, ERROR in their
category) and changes from the change list, judged per RPC direction. A change's severity
for the gate is the worst of its judgements over every RPC parameter it reaches, or its
own when no RPC reaches it. Anything at ERROR whose fingerprint is not approved blocks.

``hplus compat diff``, ``hplus compat window`` and the registry's push policy all decide
through :func:`judgements`, so an approvals file that satisfies one satisfies the others,
and each prints the fingerprints the others would ask for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from compat._changes import Change, ChangeReport, ParameterChange
from compat._model import Category, Finding, Severity

__all__ = ["Judgement", "change_rule", "judgements"]


@dataclasses.dataclass(frozen=True)
class Judgement:
    """A rule finding or a change, as every gate judges it."""

    rule: str
    """The rule ID of a finding; ``<ELEMENT>_<KIND>`` for a change (``FIELD_REMOVED``)."""
    category: Category | None
    """What it breaks: the finding's category; ``WIRE`` for a change judged ERROR (it
    breaks decoding in some direction); ``None`` for other changes."""
    severity: Severity
    """ERROR for a finding; for a change, the worst over the RPC parameters it reaches."""
    message: str
    """What changed."""
    fingerprint: str
    """What an approvals file lists to accept it."""
    path: str
    """File in the newer release ('' for a deleted file)."""
    against_path: str
    """File in the older release, for a finding ('' for a change)."""
    line: int
    """1-based line."""
    column: int
    """1-based column."""
    end_line: int
    """1-based end line (0 for a change: changes carry a position only)."""
    end_column: int
    """Column just past the end (0 for a change)."""
    subject: str
    """The element, as a stable key (``pkg.Msg#3``, ``pkg.Svc/Rpc``)."""
    approved: bool
    """Whether its fingerprint is approved."""
    parameters: tuple[ParameterChange, ...]
    """The RPC parameters it reaches (for a finding: those of the same element)."""

    @property
    def blocking(self) -> bool:
        """Whether it stops the release: ERROR and not approved."""
        return self.severity is Severity.ERROR and not self.approved

    @property
    def where(self) -> str:
        """``path:line:column``, or the deleted file."""
        if self.path:
            return f"{self.path}:{self.line}:{self.column}"
        return f"<{self.against_path} deleted>"

    def to_json(self) -> dict[str, Any]:
        """The judgement as a JSON object."""
        return {
            "rule": self.rule,
            "category": self.category.value if self.category is not None else None,
            "severity": self.severity.name.lower(),
            "path": self.path or self.against_path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "subject": self.subject,
            "fingerprint": self.fingerprint,
            "approved": self.approved,
        }


def change_rule(change: Change) -> str:
    """The rule-like ID of a change: ``<ELEMENT>_<KIND>`` (``FIELD_REMOVED``)."""
    return f"{change.element.upper()}_{change.kind.name}"


def judgements(
    findings: Sequence[Finding], report: ChangeReport, approvals: Iterable[str]
) -> list[Judgement]:
    """Every finding, then every change, judged for the gate.

    Args:
        findings: rule findings, suppressions applied (approved ones marked).
        report: the change list, suppressions applied.
        approvals: approved fingerprints.

    Returns:
        Findings in their order, then changes in report order.
    """
    approved = frozenset(approvals)
    by_subject: dict[str, list[ParameterChange]] = {}
    by_change: dict[Change, list[ParameterChange]] = {}
    for p in report.parameters:
        by_subject.setdefault(p.change.subject, []).append(p)
        by_change.setdefault(p.change, []).append(p)
    out = [
        Judgement(
            rule=f.rule,
            category=f.category,
            severity=f.severity,
            message=f.message,
            fingerprint=f.fingerprint,
            path=f.path,
            against_path=f.against_path,
            line=f.line,
            column=f.column,
            end_line=f.end_line,
            end_column=f.end_column,
            subject=f.subject,
            approved=f.approved or f.fingerprint in approved,
            parameters=tuple(by_subject.get(f.subject, ())),
        )
        for f in findings
    ]
    for c in report.changes:
        params = by_change.get(c, [])
        severity = max((p.severity for p in params), default=c.severity)
        out.append(
            Judgement(
                rule=change_rule(c),
                category=Category.WIRE if severity is Severity.ERROR else None,
                severity=severity,
                message=c.message,
                fingerprint=c.fingerprint,
                path=c.path,
                against_path="",
                line=c.line,
                column=c.column,
                end_line=0,
                end_column=0,
                subject=c.subject,
                approved=c.fingerprint in approved,
                parameters=tuple(params),
            )
        )
    return out

"""The compat engine's results in the registry's wire model, and the push policy.

A comparison is one ``compat.diff`` of two releases. Everything it judges is reported as a
``registry_pb2.Finding``, one per ``compat.Judgement``:

* rule findings (buf's rule IDs, e.g. ``FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED``), always
  ERROR in their category;
* changes from the change list (``<ELEMENT>_<KIND>``, e.g. ``FIELD_REMOVED``), judged per
  RPC direction, with every RPC parameter they reach in ``paths``.

Which of them block is compat's decision (``compat.DiffResult.blocking``): an ERROR whose
fingerprint is not approved. ``hplus compat diff`` and ``hplus compat window`` decide the
same way and print the same fingerprints, so one approvals file serves all three.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import compat
from hplus.cloud.v1 import common_pb2, registry_pb2

__all__ = [
    "DEFAULT_WINDOW",
    "PushPolicy",
    "Side",
    "blocking",
    "compare",
    "counts_of",
    "direction_result",
    "grouped",
    "report_of",
    "verdict_of",
]

DEFAULT_WINDOW = 5
"""How many previous releases a push is checked against unless the policy says otherwise."""

_CATEGORY = {
    compat.Category.WIRE: registry_pb2.FINDING_CATEGORY_WIRE,
    compat.Category.WIRE_JSON: registry_pb2.FINDING_CATEGORY_WIRE_JSON,
    compat.Category.PACKAGE: registry_pb2.FINDING_CATEGORY_SOURCE,
    compat.Category.FILE: registry_pb2.FINDING_CATEGORY_SOURCE,
}
_FROM_CATEGORY = {
    registry_pb2.FINDING_CATEGORY_WIRE: compat.Category.WIRE,
    registry_pb2.FINDING_CATEGORY_WIRE_JSON: compat.Category.WIRE_JSON,
    registry_pb2.FINDING_CATEGORY_SOURCE: compat.Category.FILE,
}
_SEVERITY = {
    compat.Severity.INFO: registry_pb2.FINDING_SEVERITY_INFO,
    compat.Severity.WARN: registry_pb2.FINDING_SEVERITY_WARNING,
    compat.Severity.ERROR: registry_pb2.FINDING_SEVERITY_ERROR,
}
_DIRECTION = {
    "request": registry_pb2.PARAMETER_DIRECTION_REQUEST,
    "response": registry_pb2.PARAMETER_DIRECTION_RESPONSE,
    None: registry_pb2.PARAMETER_DIRECTION_UNSPECIFIED,
}


@dataclasses.dataclass(frozen=True)
class PushPolicy:
    """What a push must pass before it is stored."""

    window_size: int = DEFAULT_WINDOW
    """How many of the highest ACTIVE or DEPRECATED releases below the candidate to check."""
    categories: tuple[compat.Category, ...] = compat.DEFAULT_CATEGORIES
    """Rule categories that run; by default those of every gate (``WIRE_JSON``)."""
    directions: tuple[registry_pb2.CheckDirection.ValueType, ...] = (
        registry_pb2.CHECK_DIRECTION_BACKWARD,
    )
    """Directions a push is checked in. BACKWARD already judges both data flows per RPC
    (requests to older edges, responses from them); FORWARD re-runs the rules with the
    releases swapped, which flags every addition as a deletion, so it is opt-in."""

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be at least 1, got {self.window_size}")
        if not self.categories:
            raise ValueError("categories must not be empty")
        for d in self.directions:
            if d == registry_pb2.CHECK_DIRECTION_UNSPECIFIED:
                raise ValueError("directions must be BACKWARD and/or FORWARD")

    @staticmethod
    def categories_from(
        values: Iterable[registry_pb2.FindingCategory.ValueType],
    ) -> tuple[compat.Category, ...]:
        """Translate wire categories into compat's (empty in, empty out)."""
        return tuple(_FROM_CATEGORY[v] for v in values if v in _FROM_CATEGORY)


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of a comparison."""

    label: str
    """How the side is named in output (a version, or ``candidate``)."""
    loaded: compat.LoadedInput
    """The release, indexed."""


def compare(
    previous: Side,
    current: Side,
    *,
    categories: Sequence[compat.Category],
    approvals: Iterable[str],
) -> tuple[compat.DiffResult, list[registry_pb2.Finding]]:
    """Diff two releases and translate every finding.

    Returns:
        The compat result (for its JSON form) and the findings, ordered by file, line,
        column and rule id.
    """
    approved = frozenset(approvals)
    result = compat.diff(
        previous.loaded.schema,
        current.loaded.schema,
        old=previous.label,
        new=current.label,
        categories=categories,
        suppressions=compat.Suppressions(approvals=approved),
    )
    out = [
        registry_pb2.Finding(
            rule_id=j.rule,
            category=(
                _CATEGORY[j.category]
                if j.category is not None
                else registry_pb2.FINDING_CATEGORY_UNSPECIFIED
            ),
            severity=_SEVERITY[j.severity],
            message=j.message,
            fingerprint=j.fingerprint,
            file=j.path or j.against_path,
            line=j.line,
            column=j.column,
            end_line=j.end_line,
            end_column=j.end_column,
            element=j.subject,
            paths=[_path(p) for p in j.parameters],
            approved=j.approved,
        )
        for j in result.judgements
    ]
    out.sort(key=lambda f: (f.file, f.line, f.column, f.rule_id, f.fingerprint))
    return result, out


def _path(p: compat.ParameterChange) -> registry_pb2.ParameterPath:
    return registry_pb2.ParameterPath(
        service=p.service, rpc=p.rpc, direction=_DIRECTION[p.direction], field_path=p.parameter
    )


def blocking(findings: Iterable[registry_pb2.Finding]) -> list[str]:
    """Fingerprints of the unapproved ERROR findings, without repeats, in order.

    The translation of ``compat.DiffResult.blocking`` (the same ERROR and approval marks),
    gathered over the cells of a check matrix.
    """
    seen: dict[str, None] = {}
    for f in findings:
        if f.severity == registry_pb2.FINDING_SEVERITY_ERROR and not f.approved:
            seen.setdefault(f.fingerprint, None)
    return list(seen)


def counts_of(findings: Iterable[registry_pb2.Finding]) -> registry_pb2.FindingCounts:
    """Totals by severity; approved errors are counted apart."""
    c = registry_pb2.FindingCounts()
    for f in findings:
        if f.severity == registry_pb2.FINDING_SEVERITY_ERROR:
            if f.approved:
                c.approved += 1
            else:
                c.errors += 1
        elif f.severity == registry_pb2.FINDING_SEVERITY_WARNING:
            c.warnings += 1
        elif f.severity == registry_pb2.FINDING_SEVERITY_INFO:
            c.infos += 1
    return c


def verdict_of(counts: registry_pb2.FindingCounts) -> registry_pb2.CheckVerdict.ValueType:
    """The verdict a set of counts earns."""
    if counts.errors:
        return registry_pb2.CHECK_VERDICT_INCOMPATIBLE
    if counts.approved:
        return registry_pb2.CHECK_VERDICT_COMPATIBLE_WITH_APPROVALS
    return registry_pb2.CHECK_VERDICT_COMPATIBLE


def direction_result(
    direction: registry_pb2.CheckDirection.ValueType,
    findings: list[registry_pb2.Finding],
    *,
    counts_only: bool = False,
) -> registry_pb2.DirectionResult:
    """One cell of the check matrix."""
    counts = counts_of(findings)
    return registry_pb2.DirectionResult(
        direction=direction,
        verdict=verdict_of(counts),
        counts=counts,
        findings=[] if counts_only else findings,
    )


def report_of(
    candidate_digest: common_pb2.Digest, rows: list[registry_pb2.CheckRow]
) -> registry_pb2.CompatibilityReport:
    """The whole matrix, with totals over the distinct findings of every row."""
    distinct: dict[str, registry_pb2.Finding] = {}
    worst: registry_pb2.CheckVerdict.ValueType = registry_pb2.CHECK_VERDICT_COMPATIBLE
    for row in rows:
        for cell in row.results:
            worst = max(worst, cell.verdict)
            for f in cell.findings:
                distinct.setdefault(f.fingerprint, f)
    return registry_pb2.CompatibilityReport(
        candidate_digest=candidate_digest,
        verdict=worst,
        rows=rows,
        counts=counts_of(distinct.values()),
    )


def grouped(findings: Iterable[registry_pb2.Finding]) -> list[registry_pb2.ServiceChanges]:
    """The findings grouped service → RPC → request/response → parameter path."""
    tree: dict[str, dict[str, dict[tuple[int, str], list[registry_pb2.Finding]]]] = {}
    for f in findings:
        for p in f.paths:
            rpcs = tree.setdefault(p.service, {})
            params = rpcs.setdefault(p.rpc, {})
            params.setdefault((p.direction, p.field_path), []).append(f)
    out: list[registry_pb2.ServiceChanges] = []
    for service, rpcs in tree.items():
        sc = registry_pb2.ServiceChanges(service=service)
        for rpc, params in rpcs.items():
            rc = registry_pb2.RpcChanges(rpc=rpc)
            for (direction, field_path), items in sorted(params.items()):
                rc.parameters.append(
                    registry_pb2.ParameterChange(
                        direction=direction,  # type: ignore[arg-type]
                        field_path=field_path,
                        fingerprints=list(dict.fromkeys(f.fingerprint for f in items)),
                        max_severity=max(f.severity for f in items),
                    )
                )
            sc.rpcs.append(rc)
        out.append(sc)
    return out

"""The parameter change list between two profiles: what an operator reviews before an apply.

The same idea as the compat tool's change list, for the 1,000-2,000 parameters of a
hospital's profile: every parameter added, removed or changed, by its dotted path
(``his.timeouts.read_seconds``, ``code_tables.gender."1"``), with its old and new value and a
judgement of its risk where one is known. Both profiles are compared as merged content
(vendor template + hospital overrides), so a change in a template shows in every hospital
that extends it.

Secrets never appear: a profile holds them as ``secret://name`` references, shown as such;
a value under a credential-like key that is not a reference, and the password of a URL, are
shown as ``<hidden>``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mesh.config import PathItem, dotted_path

__all__ = ["ChangeKind", "ParameterChange", "Risk", "diff_profiles", "format_changes"]


class ChangeKind(enum.StrEnum):
    """What happened to a parameter."""

    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


class Risk(enum.StrEnum):
    """How much a change can break, as far as the edge knows what the parameter does."""

    HIGH = "high"
    """Where and how the HIS is reached, what its fields and codes mean, what the edge may do
    (endpoints, credentials, field maps, code tables, capabilities, modes, fees): a wrong value
    fails calls or, worse, misreads data or money."""
    MEDIUM = "medium"
    """Behaviour within the same HIS: rule cutoffs and windows, business hours, timeouts,
    limits, queue settings."""
    LOW = "low"
    """Cosmetic or bookkeeping: names, the registry's id and version."""
    UNKNOWN = "unknown"
    """Not classified."""


_RISK_ORDER = {Risk.HIGH: 0, Risk.MEDIUM: 1, Risk.UNKNOWN: 2, Risk.LOW: 3}

# First match wins: (pattern over the dotted path with list indexes removed, risk, why).
_RULES: tuple[tuple[re.Pattern[str], Risk, str], ...] = tuple(
    (re.compile(pattern), risk, why)
    for pattern, risk, why in (
        (r"^profile\.hospital_id$", Risk.HIGH, "hospital identity"),
        (r"^profile\.(name|id|version|template_id)$", Risk.LOW, "cosmetic"),
        (r"^his\.dialect$", Risk.HIGH, "HIS dialect"),
        (r"^his\.endpoints\b", Risk.HIGH, "HIS endpoint"),
        (r"^his\.\w+\.(token|password|username|auth_header)$", Risk.HIGH, "HIS credential"),
        (r"^his\.rest\.(base_path|paths)\b", Risk.HIGH, "HIS API path"),
        (r"^his\.soap\.(namespace|soap_version|actions)\b", Risk.HIGH, "HIS API action"),
        (r"^his\.db\.(schema|views|procedures)\b", Risk.HIGH, "HIS database object"),
        (r"^his\.timeouts\b", Risk.MEDIUM, "HIS timeout"),
        (r"^his\.limits\b", Risk.MEDIUM, "HIS rate limit"),
        (r"^fields\b", Risk.HIGH, "field map"),
        (r"^code_tables\b", Risk.HIGH, "code table"),
        (r"^capabilities\b", Risk.HIGH, "HIS capability"),
        (r"^operations\b", Risk.HIGH, "operation mode"),
        (r"^fees\b", Risk.HIGH, "fee"),
        (r"^appointment\.variant$", Risk.HIGH, "appointment rule variant"),
        (r"^appointment\b", Risk.MEDIUM, "appointment rule"),
        (r"^business_hours\.timezone$", Risk.HIGH, "hospital time zone"),
        (r"^business_hours\b", Risk.MEDIUM, "business hours"),
        (r"^tasks\b", Risk.MEDIUM, "task queue setting"),
    )
)

_SECRET_REF = re.compile(r"^secret://[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SECRET_KEYS = re.compile(r"(token|password|passwd|secret|credential|api_key|apikey)", re.I)
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.I)
_HIDDEN = "<hidden>"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParameterChange:
    """One parameter that differs between two profiles."""

    path: str
    """Dotted path, as an operator writes it: ``his.endpoints[0].url``."""
    kind: ChangeKind
    """Added, removed or changed."""
    old: str | None
    """The old value as shown (JSON; secrets as references or ``<hidden>``); ``None`` when
    added."""
    new: str | None
    """The new value as shown; ``None`` when removed."""
    risk: Risk
    """The judgement of its risk."""
    why: str
    """What kind of parameter it is, e.g. ``"HIS endpoint"`` (``""`` when unknown)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON object for ``--format json``."""
        return {
            "path": self.path,
            "kind": self.kind.value,
            "old": self.old,
            "new": self.new,
            "risk": self.risk.value,
            "why": self.why,
        }


def _leaves(value: Any, path: tuple[PathItem, ...]) -> Iterator[tuple[tuple[PathItem, ...], Any]]:
    """Every parameter: tables recurse; lists of tables by index; other lists are values."""
    if isinstance(value, Mapping):
        if not value and path:
            yield path, {}
        for key in sorted(value, key=str):
            yield from _leaves(value[key], (*path, str(key)))
    elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _shown(path: tuple[PathItem, ...], value: Any) -> str:
    """A value as the change list shows it, never a secret."""
    if isinstance(value, str) and not _SECRET_REF.fullmatch(value):
        last = next((p for p in reversed(path) if isinstance(p, str)), "")
        if _SECRET_KEYS.search(last):
            return _HIDDEN
        value = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{_HIDDEN}@", value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _judge(path: tuple[PathItem, ...]) -> tuple[Risk, str]:
    plain = ".".join(p for p in path if isinstance(p, str))
    for pattern, risk, why in _RULES:
        if pattern.search(plain):
            return risk, why
    return Risk.UNKNOWN, ""


def _same(a: Any, b: Any) -> bool:
    # JSON has one number type: 5 and 5.0 are the same parameter value.
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        return float(a) == float(b)
    return bool(a == b) and type(a) is type(b)


def diff_profiles(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[ParameterChange]:
    """The parameter change list from ``old`` to ``new`` (merged profile content).

    Args:
        old: the profile content now (e.g. GetConfig's ``content``, or ``Profile.content``).
        new: the profile content proposed.

    Returns:
        One change per parameter that differs, riskiest first, then by path.
    """
    before = dict(_leaves(old, ()))
    after = dict(_leaves(new, ()))
    changes: list[ParameterChange] = []
    for path in before.keys() | after.keys():
        if path in before and path in after:
            if _same(before[path], after[path]):
                continue
            kind = ChangeKind.CHANGED
        else:
            kind = ChangeKind.ADDED if path in after else ChangeKind.REMOVED
        risk, why = _judge(path)
        changes.append(
            ParameterChange(
                path=dotted_path(path),
                kind=kind,
                old=_shown(path, before[path]) if path in before else None,
                new=_shown(path, after[path]) if path in after else None,
                risk=risk,
                why=why,
            )
        )
    changes.sort(key=lambda c: (_RISK_ORDER[c.risk], c.path))
    return changes


def format_changes(changes: Sequence[ParameterChange]) -> str:
    """The change list as text: a summary line, then one line per parameter.

    ``HIGH    changed  his.endpoints[0].url: "http://a" -> "http://b"  (HIS endpoint)``
    """
    if not changes:
        return "no parameter changes"
    counts = {risk: sum(c.risk is risk for c in changes) for risk in Risk}
    summary = ", ".join(f"{n} {risk.value}" for risk, n in counts.items() if n)
    lines = [f"{len(changes)} parameter change(s): {summary}"]
    for c in changes:
        if c.kind is ChangeKind.CHANGED:
            values = f"{c.old} -> {c.new}"
        elif c.kind is ChangeKind.ADDED:
            values = f"{c.new}"
        else:
            values = f"(was {c.old})"
        why = f"  ({c.why})" if c.why else ""
        lines.append(f"{c.risk.value.upper():<7} {c.kind.value:<7} {c.path}: {values}{why}")
    return "\n".join(lines)

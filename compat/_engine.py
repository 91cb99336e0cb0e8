"""The rule runner: every selected rule's handler on each pair of its kind.

Elements are paired by :mod:`compat._pairing` (files by path, messages, enums and services
by full name, fields and enum values by number, RPCs by name); handlers never look up their
counterpart themselves, and each receives only pairs of the kind it is typed for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from google.protobuf import descriptor_pb2

from compat._index import NO_SPAN, FileNode, Schema, Span
from compat._model import DEFAULT_CATEGORIES, Category, Finding, Severity
from compat._pairing import Pairing
from compat._registry import RuleSet, RuleSpec, select
from compat._rulebase import Handler

__all__ = ["breaking", "run_rules", "schema_of"]

N = TypeVar("N")


class _Sink:
    """Collects one rule's findings, resolving buf's backup locations."""

    __slots__ = ("_category", "_out", "_rule", "_seen")

    def __init__(
        self, rule: str, category: Category, out: list[Finding], seen: set[tuple[object, ...]]
    ) -> None:
        self._rule = rule
        self._category = category
        self._out = out
        self._seen = seen

    def add(
        self,
        file: FileNode | None,
        spans: Sequence[Span | None],
        message: str,
        subject: str,
        *,
        against: str = "",
    ) -> None:
        span = NO_SPAN
        for s in spans:
            if s is not None:
                span = s
                break
        path = file.path if file is not None else ""
        key = (self._rule, path, span, message)
        if key in self._seen:  # buf de-duplicates identical annotations
            return
        self._seen.add(key)
        self._out.append(
            Finding(
                rule=self._rule,
                category=self._category,
                severity=Severity.ERROR,
                path=path,
                line=span.line,
                column=span.column,
                end_line=span.end_line,
                end_column=span.end_column,
                message=message,
                subject=subject,
                against_path=against,
            )
        )


def schema_of(fds: descriptor_pb2.FileDescriptorSet, own: Iterable[str] | None = None) -> Schema:
    """Index a descriptor set.

    Args:
        fds: the compiled release, imports included or not.
        own: paths of the release's own files; the rest are treated as imports. ``None``
            means every file is the release's own.

    Returns:
        The indexed release.
    """
    if own is None:
        return Schema(fds.file)
    mine = set(own)
    return Schema(
        [f for f in fds.file if f.name in mine], [f for f in fds.file if f.name not in mine]
    )


def run_rules(pairing: Pairing, rules: RuleSet) -> list[Finding]:
    """Call every rule of ``rules`` on each pair of its kind.

    Args:
        pairing: the two releases.
        rules: the selected rules.

    Returns:
        Findings sorted as buf sorts them (path, line, column, rule, message).
    """
    out: list[Finding] = []
    seen: set[tuple[object, ...]] = set()

    def bind(specs: list[RuleSpec[N]]) -> list[tuple[Handler[N], _Sink]]:
        return [(s.handler, _Sink(s.id, s.category, out, seen)) for s in specs]

    def run(checks: list[tuple[Handler[N], _Sink]], cur: N, prev: N) -> None:
        for handler, sink in checks:
            handler(sink, cur, prev, pairing)

    run(bind(rules.releases), pairing.current, pairing.previous)
    files = bind(rules.files)
    if files:
        for pf, cf in pairing.files():
            run(files, cf, pf)
    messages, fields = bind(rules.messages), bind(rules.fields)
    if messages or fields:
        for pm, cm in pairing.messages():
            run(messages, cm, pm)
            if fields:
                for pfld, cfld in pairing.fields(pm, cm):
                    run(fields, cfld, pfld)
    if fields:
        for px, cx in pairing.extensions():
            run(fields, cx, px)
    enums, values = bind(rules.enums), bind(rules.enum_values)
    if enums or values:
        for pe, ce in pairing.enums():
            run(enums, ce, pe)
            if values:
                for pv, cv in pairing.enum_values(pe, ce):
                    run(values, cv, pv)
    services, methods = bind(rules.services), bind(rules.methods)
    if services or methods:
        for ps, cs in pairing.services():
            run(services, cs, ps)
            if methods:
                for pmeth, cmeth in pairing.methods(ps, cs):
                    run(methods, cmeth, pmeth)
    out.sort(key=Finding.sort_key)
    return out


def breaking(
    previous: Schema,
    current: Schema,
    *,
    categories: Iterable[Category] = DEFAULT_CATEGORIES,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[Finding]:
    """Run the breaking-change rules of ``categories`` on two releases.

    Args:
        previous: the older release (buf's ``--against``).
        current: the newer release.
        categories: which rule sets to run (as buf's ``breaking.use``).
        include: extra rule IDs to run.
        exclude: rule IDs not to run (as buf's ``breaking.except``).

    Returns:
        Findings sorted as buf sorts them (path, line, column, rule, message).
    """
    rules = select(categories, include=include, exclude=exclude)
    return run_rules(Pairing(previous, current), rules)

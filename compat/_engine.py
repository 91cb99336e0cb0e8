"""The generic pairing layer and the rule runner.

Elements of the two releases are paired by stable keys — files by path, messages, enums and
services by full name, fields by number (extensions by extendee and number), enum values by
number, RPCs by name — once, and every selected rule's handler is called on each pair of its
kind. Handlers never look up their counterpart themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf import descriptor_pb2

from compat._index import NO_SPAN, FileNode, Schema, Span, identical
from compat._model import Category, Finding, Severity
from compat._registry import RuleSpec, rules_for
from compat._rulebase import Pair

__all__ = ["breaking", "schema_of"]


class _Sink:
    """Collects one rule's findings, resolving buf's backup locations."""

    __slots__ = ("_out", "_seen", "_spec")

    def __init__(self, spec: RuleSpec, out: list[Finding], seen: set[tuple[object, ...]]) -> None:
        self._spec = spec
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
        key = (self._spec.id, path, span, message)
        if key in self._seen:  # buf de-duplicates identical annotations
            return
        self._seen.add(key)
        self._out.append(
            Finding(
                rule=self._spec.id,
                category=self._spec.category,
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


def breaking(
    previous: Schema,
    current: Schema,
    *,
    categories: Iterable[Category] = (Category.WIRE_JSON,),
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
    specs = rules_for(categories, include=include, exclude=exclude)
    by_kind: dict[str, list[_Sink]] = {}
    out: list[Finding] = []
    seen: set[tuple[object, ...]] = set()
    for spec in specs:
        by_kind.setdefault(spec.kind, []).append(_Sink(spec, out, seen))
    handlers = {spec.id: spec.handler for spec in specs}
    pair = Pair(previous, current)

    def run(kind: str, cur: object, prev: object) -> None:
        for sink in by_kind.get(kind, ()):
            handlers[sink._spec.id](sink, cur, prev, pair)

    for sink in by_kind.get("global", ()):
        handlers[sink._spec.id](sink, pair)
    if "file" in by_kind:
        for path, pf in previous.files.items():
            cf = current.files.get(path)
            if cf is not None:
                run("file", cf, pf)
    want_fields = "field" in by_kind
    if "message" in by_kind or want_fields:
        same: dict[str, bool] = {}
        for name, pm in previous.messages.items():
            cm = current.messages.get(name)
            if cm is None or identical(pm, cm, same):
                continue
            run("message", cm, pm)
            if want_fields:
                cfields = cm.fields
                for number, pfld in pm.fields.items():
                    cfld = cfields.get(number)
                    if cfld is not None:
                        run("field", cfld, pfld)
    if want_fields:
        for extendee, pexts in previous.extensions.items():
            cexts = current.extensions.get(extendee, {})
            for number, px in pexts.items():
                cx = cexts.get(number)
                if cx is not None:
                    run("field", cx, px)
    if "enum" in by_kind or "enum_value" in by_kind:
        for name, pe in previous.enums.items():
            ce = current.enums.get(name)
            if ce is None:
                continue
            run("enum", ce, pe)
            if "enum_value" in by_kind:
                for number, pvals in pe.values.items():
                    cvals = ce.values.get(number)
                    if cvals is not None:
                        run("enum_value", cvals, pvals)
    if "service" in by_kind or "method" in by_kind:
        for name, ps in previous.services.items():
            cs = current.services.get(name)
            if cs is None:
                continue
            run("service", cs, ps)
            if "method" in by_kind:
                for mname, pmeth in ps.methods.items():
                    cmeth = cs.methods.get(mname)
                    if cmeth is not None:
                        run("method", cmeth, pmeth)
    out.sort(key=Finding.sort_key)
    return out

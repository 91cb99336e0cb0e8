"""The element-level diff: every change between two releases, breaking or not.

Changes are found on the pairs of :mod:`compat._pairing` — the same pairs the rules run on
(types by full name, fields by number, enum values by number, RPCs by name) — plus the
elements only one release has. Each change is indexed by the message or enum that holds
it, for :mod:`compat._judge` to reach it from the RPCs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from google.protobuf import descriptor_pb2

from compat._changes import Change, ChangeKind
from compat._index import Cardinality, EnumNode, FieldNode, MessageNode, MethodNode, Schema, Span
from compat._model import Severity
from compat._pairing import Pairing
from compat._rulebase import KIND_NAMES, WIRE_GROUPS

__all__ = ["Differ"]

_F = descriptor_pb2.FieldDescriptorProto


def _loc(span: Span | None) -> tuple[int, int]:
    return (span.line, span.column) if span is not None else (1, 1)


class _Pos:
    """A line and column looked up only when a change is reported (lookups are the slow part)."""

    __slots__ = ("_get", "_value")

    def __init__(self, get: Callable[[], Span | None]) -> None:
        self._get = get
        self._value: tuple[int, int] | None = None

    def __call__(self) -> tuple[int, int]:
        if self._value is None:
            self._value = _loc(self._get())
        return self._value


def _type_text(f: FieldNode, schema: Schema) -> str:
    p = f.proto
    base = (
        p.type_name.lstrip(".")
        if p.type in (_F.TYPE_MESSAGE, _F.TYPE_ENUM, _F.TYPE_GROUP)
        else KIND_NAMES[p.type]
    )
    card = f.cardinality(schema)
    if card is Cardinality.MAP:
        entry = schema.message(p.type_name.lstrip("."))
        if entry is not None and len(entry.fields) == 2:
            k, v = entry.fields[1], entry.fields[2]
            return f"map<{_type_text(k, schema)}, {_type_text(v, schema)}>"
    return base


def _label(f: FieldNode, schema: Schema) -> str:
    return f.cardinality(schema).value


class Differ:
    """Finds element-level changes and indexes them by enclosing message / enum."""

    def __init__(self, pairing: Pairing) -> None:
        self.pairing = pairing
        self.prev = pairing.previous
        self.cur = pairing.current
        self.out: list[Change] = []
        # (message full name, number) -> field changes, for the per-RPC walk
        self.by_message: dict[str, list[Change]] = {}
        self.by_enum: dict[str, list[Change]] = {}
        self.reach: dict[str, bool] = {}

    def add(self, change: Change, index: dict[str, list[Change]] | None = None) -> None:
        self.out.append(change)
        if index is not None:
            index.setdefault(change.owner, []).append(change)

    def run(self) -> list[Change]:
        """Find every change; returns them in report order."""
        self.types()
        for pm, cm in self.pairing.messages():  # identical pairs are skipped by the pairing
            if not cm.is_map_entry:
                self.message(pm, cm)
        for pe, ce in self.pairing.enums():
            self.enum(pe, ce)
        self.services()
        return self.out

    def types(self) -> None:
        """Files, messages and enums only one release has."""
        pairing = self.pairing
        for path in pairing.added_files():
            self.add(
                Change(
                    ChangeKind.ADDED,
                    "file",
                    "",
                    path,
                    f'File "{path}" was added.',
                    path,
                    1,
                    1,
                    Severity.INFO,
                )
            )
        for path in pairing.removed_files():
            self.add(
                Change(
                    ChangeKind.REMOVED,
                    "file",
                    "",
                    path,
                    f'File "{path}" was removed.',
                    path,
                    1,
                    1,
                    Severity.WARN,
                )
            )
        for name, m in pairing.added_messages():
            if not m.is_map_entry:
                line, col = _loc(m.span())
                owner = m.parent.full_name if m.parent else ""
                self.add(
                    Change(
                        ChangeKind.ADDED,
                        "message",
                        owner,
                        m.name,
                        f'Message "{name}" was added.',
                        m.file.path,
                        line,
                        col,
                        Severity.INFO,
                    )
                )
        for name, m in pairing.removed_messages():
            if not m.is_map_entry:
                path, line, col = self._parent_loc(
                    m.file.path, m.parent.full_name if m.parent else None
                )
                owner = m.parent.full_name if m.parent else ""
                self.add(
                    Change(
                        ChangeKind.REMOVED,
                        "message",
                        owner,
                        m.name,
                        f'Message "{name}" was removed.',
                        path,
                        line,
                        col,
                        Severity.WARN,
                    )
                )
        for name, e in pairing.added_enums():
            line, col = _loc(e.span())
            owner = e.parent.full_name if e.parent else ""
            self.add(
                Change(
                    ChangeKind.ADDED,
                    "enum",
                    owner,
                    e.name,
                    f'Enum "{name}" was added.',
                    e.file.path,
                    line,
                    col,
                    Severity.INFO,
                )
            )
        for name, e in pairing.removed_enums():
            path, line, col = self._parent_loc(
                e.file.path, e.parent.full_name if e.parent else None
            )
            owner = e.parent.full_name if e.parent else ""
            self.add(
                Change(
                    ChangeKind.REMOVED,
                    "enum",
                    owner,
                    e.name,
                    f'Enum "{name}" was removed.',
                    path,
                    line,
                    col,
                    Severity.WARN,
                )
            )

    def _parent_loc(self, path: str, parent: str | None) -> tuple[str, int, int]:
        if parent is not None:
            pm = self.cur.messages.get(parent)
            if pm is not None:
                line, col = _loc(pm.span())
                return pm.file.path, line, col
        return path, 1, 1

    def message(self, pm: MessageNode, cm: MessageNode) -> None:
        owner = cm.full_name
        path = cm.file.path
        mpos = _Pos(cm.span)
        added = self.pairing.added_fields(pm, cm)
        removed = self.pairing.removed_fields(pm, cm)
        added_by_name = {f.name: f for f in added.values()}
        for n, pf in sorted(removed.items()):
            nf = added_by_name.get(pf.name)
            if nf is not None:
                del added[nf.number]
                line, col = _loc(nf.span())
                self.add(
                    Change(
                        ChangeKind.RENUMBERED,
                        "field",
                        owner,
                        nf.name,
                        f'Field "{pf.name}" on message "{cm.name}" '
                        f"was renumbered from {n} to {nf.number}.",
                        path,
                        line,
                        col,
                        Severity.ERROR,
                        str(n),
                        str(nf.number),
                        nf.number,
                    ),
                    self.by_message,
                )
                continue
            reserved = any(r.start <= n < r.end for r in cm.proto.reserved_range)
            sev = Severity.WARN if reserved else Severity.ERROR
            how = "and its number reserved" if reserved else "without reserving its number"
            self.add(
                Change(
                    ChangeKind.REMOVED,
                    "field",
                    owner,
                    pf.name,
                    f'Field "{n}" ("{pf.name}") on message "{cm.name}" was removed {how}.',
                    path,
                    *mpos(),
                    sev,
                    _type_text(pf, self.prev),
                    "",
                    n,
                ),
                self.by_message,
            )
        for n, cf in sorted(added.items()):
            line, col = _loc(cf.span())
            sev = Severity.ERROR if cf.is_required else Severity.INFO
            self.add(
                Change(
                    ChangeKind.ADDED,
                    "field",
                    owner,
                    cf.name,
                    f'Field "{n}" ("{cf.name}", {_type_text(cf, self.cur)}) '
                    f'was added to message "{cm.name}".',
                    path,
                    line,
                    col,
                    sev,
                    "",
                    _type_text(cf, self.cur),
                    n,
                ),
                self.by_message,
            )
        for pf, cf in sorted(self.pairing.fields(pm, cm), key=lambda pair: pair[0].number):
            self.field(pf, cf)
        self.reserved(
            pm.full_name,
            cm.name,
            path,
            mpos,
            [(r.start, r.end - 1) for r in pm.proto.reserved_range],
            list(pm.proto.reserved_name),
            [(r.start, r.end - 1) for r in cm.proto.reserved_range],
            list(cm.proto.reserved_name),
            "message",
            self.by_message,
        )
        pon = {o.name for o in pm.proto.oneof_decl}
        con = {o.name for o in cm.proto.oneof_decl}
        for name in sorted(con - pon):
            self.add(
                Change(
                    ChangeKind.ADDED,
                    "oneof",
                    owner,
                    name,
                    f'Oneof "{name}" was added to message "{cm.name}".',
                    path,
                    *mpos(),
                    Severity.INFO,
                )
            )
        for name in sorted(pon - con):
            self.add(
                Change(
                    ChangeKind.REMOVED,
                    "oneof",
                    owner,
                    name,
                    f'Oneof "{name}" was removed from message "{cm.name}".',
                    path,
                    *mpos(),
                    Severity.WARN,
                )
            )

    def reserved(
        self,
        owner: str,
        name: str,
        path: str,
        pos: _Pos,
        pr: list[tuple[int, int]],
        pn: list[str],
        cr: list[tuple[int, int]],
        cn: list[str],
        element: str,
        index: dict[str, list[Change]],
    ) -> None:
        def text(r: tuple[int, int]) -> str:
            return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"

        for r in sorted(set(cr) - set(pr)):
            self.add(
                Change(
                    ChangeKind.RESERVED,
                    "reserved",
                    owner,
                    text(r),
                    f'Number(s) {text(r)} reserved in {element} "{name}".',
                    path,
                    *pos(),
                    Severity.INFO,
                    "",
                    text(r),
                ),
                index,
            )
        for r in sorted(set(pr) - set(cr)):
            self.add(
                Change(
                    ChangeKind.UNRESERVED,
                    "reserved",
                    owner,
                    text(r),
                    f'Reserved number(s) {text(r)} released from {element} "{name}".',
                    path,
                    *pos(),
                    Severity.ERROR,
                    text(r),
                    "",
                ),
                index,
            )
        for n in sorted(set(cn) - set(pn)):
            self.add(
                Change(
                    ChangeKind.RESERVED,
                    "reserved",
                    owner,
                    n,
                    f'Name "{n}" reserved in {element} "{name}".',
                    path,
                    *pos(),
                    Severity.INFO,
                    "",
                    n,
                ),
                index,
            )
        for n in sorted(set(pn) - set(cn)):
            self.add(
                Change(
                    ChangeKind.UNRESERVED,
                    "reserved",
                    owner,
                    n,
                    f'Reserved name "{n}" released from {element} "{name}".',
                    path,
                    *pos(),
                    Severity.WARN,
                    n,
                    "",
                ),
                index,
            )

    def field(self, pf: FieldNode, cf: FieldNode) -> None:
        owner = cf.scope
        msg = cf.message.name if cf.message else owner
        path = cf.file.path
        pos = _Pos(cf.span)
        n = cf.number
        fdesc = f'Field "{n}" ("{cf.name}") on message "{msg}"'

        def add(kind: ChangeKind, text: str, sev: Severity, old: str, new: str) -> None:
            self.add(
                Change(kind, "field", owner, cf.name, text, path, *pos(), sev, old, new, n),
                self.by_message,
            )

        if pf.name != cf.name:
            add(
                ChangeKind.RENAMED,
                f'Field "{n}" on message "{msg}" was renamed from "{pf.name}" to "{cf.name}".',
                Severity.WARN,
                pf.name,
                cf.name,
            )
        pp, cp = pf.proto, cf.proto
        # Cheap comparisons first: the texts below cost a lookup per field.
        same_decl = (
            pp.type == cp.type
            and pp.type_name == cp.type_name
            and pp.label == cp.label
            and pp.proto3_optional == cp.proto3_optional
            and pp.HasField("oneof_index") == cp.HasField("oneof_index")
            and pf.file.syntax == cf.file.syntax
            and pf.file.syntax != "editions"
        )
        maybe_map = pp.type == _F.TYPE_MESSAGE and pp.label == _F.LABEL_REPEATED
        if same_decl and not maybe_map:
            pt = ct = pl = cl = ""
        else:
            pt, ct = _type_text(pf, self.prev), _type_text(cf, self.cur)
            pl, cl = _label(pf, self.prev), _label(cf, self.cur)
        if pt != ct or pf.kind != cf.kind:
            same_group = WIRE_GROUPS[pf.kind] == WIRE_GROUPS[cf.kind] and pf.kind not in (
                _F.TYPE_MESSAGE,
                _F.TYPE_ENUM,
                _F.TYPE_GROUP,
            )
            add(
                ChangeKind.RETYPED,
                f"{fdesc} changed type from {pt} to {ct}.",
                Severity.WARN if same_group else Severity.ERROR,
                pt,
                ct,
            )
        if pl != cl:
            pc, cc = pf.cardinality(self.prev), cf.cardinality(self.cur)
            wire = {Cardinality.REPEATED: 3, Cardinality.MAP: 3, Cardinality.REQUIRED: 2}
            sev = Severity.WARN if wire.get(pc, 1) == wire.get(cc, 1) else Severity.ERROR
            add(
                ChangeKind.RELABELED,
                f"{fdesc} changed from {pl} to {cl}.",
                sev,
                pl,
                cl,
            )
        po, co = pf.oneof_name(), cf.oneof_name()
        if po != co:
            add(
                ChangeKind.ONEOF,
                f"{fdesc} moved from {_oneof(po)} to {_oneof(co)}.",
                Severity.ERROR,
                po or "",
                co or "",
            )
        if pf.proto.json_name != cf.proto.json_name and pf.name == cf.name:
            add(
                ChangeKind.JSON_NAME,
                f'{fdesc} changed JSON name from "{pf.proto.json_name}" to "{cf.proto.json_name}".',
                Severity.WARN,
                pf.proto.json_name,
                cf.proto.json_name,
            )
        if pf.proto.default_value != cf.proto.default_value:
            add(
                ChangeKind.DEFAULT,
                f'{fdesc} changed default from "{pf.proto.default_value}" '
                f'to "{cf.proto.default_value}".',
                Severity.WARN,
                pf.proto.default_value,
                cf.proto.default_value,
            )
        pd, cd = pf.proto.options.deprecated, cf.proto.options.deprecated
        if pd != cd:
            add(
                ChangeKind.DEPRECATED,
                f"{fdesc} was {'deprecated' if cd else 'un-deprecated'}.",
                Severity.INFO,
                str(pd).lower(),
                str(cd).lower(),
            )

    def enum(self, pe: EnumNode, ce: EnumNode) -> None:
        """The changes inside one enum pair: values by number, reserved ranges and names."""
        owner = ce.full_name
        path = ce.file.path
        epos = _Pos(ce.span)
        for number, pvals, cvals in self.pairing.every_enum_value(pe, ce):
            if cvals is None:
                assert pvals is not None
                pv = next(iter(pvals.values()))
                reserved = any(r.start <= number <= r.end for r in ce.proto.reserved_range)
                sev = Severity.WARN if reserved else Severity.ERROR
                self.add(
                    Change(
                        ChangeKind.REMOVED,
                        "enum_value",
                        owner,
                        pv.name,
                        f'Value {pv.name} = {number} was removed from enum "{ce.name}".',
                        path,
                        *epos(),
                        sev,
                        pv.name,
                        "",
                        number,
                    ),
                    self.by_enum,
                )
                continue
            cv = next(iter(cvals.values()))
            vpos = _Pos(functools.partial(ce.file.span, cv.path))
            if pvals is None:
                self.add(
                    Change(
                        ChangeKind.ADDED,
                        "enum_value",
                        owner,
                        cv.name,
                        f'Value {cv.name} = {number} was added to enum "{ce.name}".',
                        path,
                        *vpos(),
                        Severity.INFO,
                        "",
                        cv.name,
                        number,
                    ),
                    self.by_enum,
                )
            elif not set(pvals) <= set(cvals):
                old, new = ", ".join(sorted(pvals)), ", ".join(sorted(cvals))
                self.add(
                    Change(
                        ChangeKind.RENAMED,
                        "enum_value",
                        owner,
                        cv.name,
                        f'Value {number} of enum "{ce.name}" was renamed from {old} to {new}.',
                        path,
                        *vpos(),
                        Severity.WARN,
                        old,
                        new,
                        number,
                    ),
                    self.by_enum,
                )
        self.reserved(
            owner,
            ce.name,
            path,
            epos,
            [(r.start, r.end) for r in pe.proto.reserved_range],
            list(pe.proto.reserved_name),
            [(r.start, r.end) for r in ce.proto.reserved_range],
            list(ce.proto.reserved_name),
            "enum",
            self.by_enum,
        )

    def services(self) -> None:
        """Services and RPCs added, removed or changed."""
        for name, ps, s in self.pairing.every_service():
            if s is None:
                assert ps is not None
                self.add(
                    Change(
                        ChangeKind.REMOVED,
                        "service",
                        "",
                        ps.full_name,
                        f'Service "{name}" was removed.',
                        ps.file.path,
                        1,
                        1,
                        Severity.ERROR,
                    )
                )
                continue
            if ps is None:
                line, col = _loc(s.file.span(s.path))
                self.add(
                    Change(
                        ChangeKind.ADDED,
                        "service",
                        "",
                        s.full_name,
                        f'Service "{name}" was added.',
                        s.file.path,
                        line,
                        col,
                        Severity.INFO,
                    )
                )
                continue
            for mname, pmeth, m in self.pairing.every_method(ps, s):
                if m is None:
                    line, col = _loc(s.file.span(s.path))
                    self.add(
                        Change(
                            ChangeKind.REMOVED,
                            "rpc",
                            name,
                            mname,
                            f'RPC "{mname}" was removed from service "{s.name}".',
                            s.file.path,
                            line,
                            col,
                            Severity.ERROR,
                        )
                    )
                elif pmeth is None:
                    line, col = _loc(s.file.span(m.path))
                    self.add(
                        Change(
                            ChangeKind.ADDED,
                            "rpc",
                            name,
                            mname,
                            f'RPC "{mname}" was added to service "{s.name}".',
                            s.file.path,
                            line,
                            col,
                            Severity.INFO,
                        )
                    )
                else:
                    self.method(pmeth, m, _Pos(functools.partial(s.file.span, m.path)))

    def method(self, pm: MethodNode, cm: MethodNode, pos: _Pos) -> None:
        owner, path, s = cm.service.full_name, cm.service.file.path, cm.service.name
        for kind, attr, label in (
            (ChangeKind.REQUEST_TYPE, "input_type", "request"),
            (ChangeKind.RESPONSE_TYPE, "output_type", "response"),
        ):
            old, new = getattr(pm, attr), getattr(cm, attr)
            if old != new:
                self.add(
                    Change(
                        kind,
                        "rpc",
                        owner,
                        cm.name,
                        f'RPC "{cm.name}" on service "{s}" changed {label} type '
                        f'from "{old}" to "{new}".',
                        path,
                        *pos(),
                        Severity.ERROR,
                        old,
                        new,
                    )
                )
        for attr, side in (("client_streaming", "request"), ("server_streaming", "response")):
            old_s, new_s = getattr(pm.proto, attr), getattr(cm.proto, attr)
            if old_s != new_s:
                a, b = ("stream" if old_s else "unary"), ("stream" if new_s else "unary")
                self.add(
                    Change(
                        ChangeKind.STREAMING,
                        "rpc",
                        owner,
                        cm.name,
                        f'RPC "{cm.name}" on service "{s}" changed its {side} from {a} to {b}.',
                        path,
                        *pos(),
                        Severity.ERROR,
                        a,
                        b,
                    )
                )


def _oneof(name: str | None) -> str:
    return f'oneof "{name}"' if name else "no oneof"

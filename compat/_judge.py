"""Direction-aware judgement of changes, and their per-RPC parameter paths.

Each change reachable from an RPC is attached to it with a nested parameter path
(``booking.patient.id_card``) and judged in the direction its data travels between a
newer cloud and an older edge:

* a **request** is written by the newer cloud and read by an older edge;
* a **response** is written by an older edge and read by the newer cloud.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf import descriptor_pb2

from compat._changes import Change, ChangeKind, ChangeReport, Direction, ParameterChange
from compat._differ import Differ
from compat._index import Schema
from compat._model import Severity
from compat._pairing import Pairing
from compat._rulebase import KIND_NAMES

__all__ = ["change_report", "changes", "judge"]

_F = descriptor_pb2.FieldDescriptorProto

# --- direction-aware judgement ------------------------------------------------------------

# A writer's type that a reader of another type decodes without loss (same wire group).
_WIDENING = {
    (_F.TYPE_INT32, _F.TYPE_INT64),
    (_F.TYPE_UINT32, _F.TYPE_UINT64),
    (_F.TYPE_UINT32, _F.TYPE_INT64),
    (_F.TYPE_BOOL, _F.TYPE_INT32),
    (_F.TYPE_BOOL, _F.TYPE_INT64),
    (_F.TYPE_BOOL, _F.TYPE_UINT32),
    (_F.TYPE_BOOL, _F.TYPE_UINT64),
    (_F.TYPE_SINT32, _F.TYPE_SINT64),
    (_F.TYPE_STRING, _F.TYPE_BYTES),
}
_SCALAR_BY_NAME = {v: k for k, v in KIND_NAMES.items()}


def judge(change: Change, direction: Direction) -> tuple[Severity, str]:
    """Severity and reason of ``change`` for data travelling in ``direction``."""
    k = change.kind
    req = direction == "request"
    # Requests: the (one) newer cloud writes, older edges read; responses the other way.
    writer, reader = (
        ("the newer cloud", "older edges") if req else ("older edges", "the newer cloud")
    )
    s_w, s_r = ("s", "") if req else ("", "s")  # verb endings for writer and reader
    if change.element == "field":
        if k is ChangeKind.ADDED:
            if change.severity is Severity.ERROR:  # a required field
                if req:
                    return Severity.WARN, "required: older edges ignore it; the cloud must set it"
                return Severity.ERROR, "required: the newer cloud rejects responses without it"
            return Severity.INFO, (
                "older edges ignore it; the cloud cannot rely on it being honoured"
                if req
                else "older edges never send it; the cloud must handle its absence"
            )
        if k is ChangeKind.REMOVED:
            if req:
                return max(
                    change.severity, Severity.WARN
                ), "older edges still read it and now see its default value"
            if change.severity is Severity.ERROR:
                return (
                    Severity.ERROR,
                    "older edges still send it; its number is not reserved, so a reuse misreads it",
                )
            return Severity.INFO, "older edges still send it; the cloud ignores it"
        if k is ChangeKind.RETYPED:
            w = _SCALAR_BY_NAME.get(change.new if req else change.old)
            r = _SCALAR_BY_NAME.get(change.old if req else change.new)
            if w is not None and r is not None and (w, r) in _WIDENING:
                return (
                    Severity.INFO,
                    f"{reader} decode{s_r} {KIND_NAMES[w]} as {KIND_NAMES[r]} without loss",
                )
            if change.severity is Severity.WARN:
                return (
                    Severity.WARN,
                    f"{reader} decode{s_r} it, but values may be truncated or change sign",
                )
            return Severity.ERROR, f"{reader} cannot decode what {writer} write{s_w}"
        if k is ChangeKind.RENAMED:
            return Severity.WARN, "binary encoding unchanged; JSON and generated code change"
        if k is ChangeKind.JSON_NAME:
            return Severity.WARN, "binary encoding unchanged; JSON clients break"
        if k is ChangeKind.RENUMBERED:
            return Severity.ERROR, f"{reader} look{s_r} for the old number and lose{s_r} the value"
        if k is ChangeKind.RELABELED and change.severity is Severity.WARN:
            return (
                Severity.WARN,
                f"{reader} decode{s_r} it, but repeated values may collapse or presence differ",
            )
    if change.element == "enum_value":
        if k is ChangeKind.ADDED:
            return (
                (Severity.WARN, "older edges receive a value they do not know")
                if req
                else (Severity.INFO, "older edges never send it")
            )
        if k is ChangeKind.REMOVED:
            return (
                (Severity.INFO, "the newer cloud no longer sends it")
                if req
                else (max(change.severity, Severity.WARN), "older edges may still send it")
            )
    return change.severity, ""


def _walk(
    root: str,
    prev: Schema,
    cur: Schema,
    d: Differ,
) -> Iterator[tuple[str, Change]]:
    """Every field/enum change reachable from message ``root``, with its parameter path."""
    stack: list[tuple[str, str, tuple[str, ...]]] = [(root, "", (root,))]
    while stack:
        name, prefix, seen = stack.pop()
        for ch in d.by_message.get(name, ()):
            yield (f"{prefix}{ch.name}", ch)
        children: dict[str, str] = {}
        enums: dict[str, str] = {}
        for schema in (prev, cur):  # the newer release wins where both have the field
            m = schema.messages.get(name)
            if m is None:
                continue
            for f in m.fields.values():
                kind, t = f.proto.type, f.proto.type_name.lstrip(".")
                entry = schema.messages.get(t) if kind == _F.TYPE_MESSAGE else None
                if entry is not None and entry.is_map_entry and 2 in entry.fields:
                    # look through map<K, V> to the value type
                    v = entry.fields[2].proto
                    kind, t = v.type, v.type_name.lstrip(".")
                if kind == _F.TYPE_ENUM:
                    enums[f.name] = t
                elif kind in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
                    children[f.name] = t
        for fname, t in sorted(enums.items()):
            for ch in d.by_enum.get(t, ()):
                yield (f"{prefix}{fname}", ch)
        for fname, t in sorted(children.items(), reverse=True):
            if t in seen or not _reaches(t, prev, cur, d):
                continue
            stack.append((t, f"{prefix}{fname}.", (*seen, t)))


def _reaches(name: str, prev: Schema, cur: Schema, d: Differ) -> bool:
    """Whether any change is reachable from message ``name`` (memoised, cycle-safe)."""
    memo = d.reach
    if name in memo:
        return memo[name]
    memo[name] = False  # cycle guard
    result = bool(d.by_message.get(name))
    if not result:
        for schema in (prev, cur):
            m = schema.messages.get(name)
            if m is None:
                continue
            for f in m.fields.values():
                t = f.proto.type_name.lstrip(".")
                if not t:
                    continue
                if (f.proto.type == _F.TYPE_ENUM and d.by_enum.get(t)) or (
                    f.proto.type != _F.TYPE_ENUM and _reaches(t, prev, cur, d)
                ):
                    result = True
                    break
            if result:
                break
    memo[name] = result
    return result


def changes(previous: Schema, current: Schema) -> ChangeReport:
    """The full parameter-change list between two releases.

    Args:
        previous: the older release.
        current: the newer release.

    Returns:
        Every change, plus each change seen from every RPC that reaches it.
    """
    return change_report(Pairing(previous, current))


def change_report(pairing: Pairing) -> ChangeReport:
    """:func:`changes` on a pairing the rules may already have walked (it is reused)."""
    previous, current = pairing.previous, pairing.current
    d = Differ(pairing)
    all_changes = d.run()
    params: list[ParameterChange] = []
    rpc_changes: dict[tuple[str, str], list[Change]] = {}
    for ch in all_changes:
        if ch.element == "rpc":
            rpc_changes.setdefault((ch.owner, ch.name), []).append(ch)
    # Only services both releases have can hold RPC or parameter changes; a service added or
    # removed as a whole is one change of its own.
    for ps, cs in sorted(pairing.services(), key=lambda pair: pair[1].full_name):
        sname = cs.full_name
        for mname, pm, cm in sorted(pairing.every_method(ps, cs), key=lambda t: t[0]):
            for ch in rpc_changes.get((sname, mname), ()):
                sev, note = ch.severity, ""
                if ch.kind is ChangeKind.ADDED:
                    sev, note = Severity.WARN, "older edges answer UNIMPLEMENTED until they upgrade"
                elif ch.kind is ChangeKind.REMOVED:
                    note = "the newer cloud stops calling it; generated code loses the method"
                params.append(ParameterChange(sname, mname, None, "", ch, sev, note))
            if cm is None or pm is None:
                continue
            for direction, attr in (("request", "input_type"), ("response", "output_type")):
                d_: Direction = "request" if direction == "request" else "response"
                if getattr(cm, attr) != getattr(pm, attr):
                    continue  # a different message altogether; reported on the RPC
                for param, ch in _walk(getattr(cm, attr), previous, current, d):
                    sev, note = judge(ch, d_)
                    params.append(ParameterChange(sname, mname, d_, param, ch, sev, note))
    return ChangeReport(all_changes, params)

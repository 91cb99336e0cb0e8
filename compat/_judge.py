"""Direction-aware judgement of changes, and their per-RPC parameter paths.

Each change reachable from an RPC is attached to it with a nested parameter path
(``booking.patient.id_card``) and judged in the direction its data travels. The cloud
upgrades first, so one newer cloud talks to older peers:

* services edges serve (hospital services): a **request** is written by the newer cloud
  and read by an older edge, a **response** written by an older edge and read by the cloud;
* services the cloud serves (:data:`CLOUD_SERVICES`): a **request** is written by an older
  client (an edge or an app) and read by the newer cloud, a **response** the other way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from google.protobuf import descriptor_pb2

from compat._changes import (
    Change,
    ChangeKind,
    ChangeReport,
    Direction,
    ParameterChange,
    ServedBy,
)
from compat._differ import Differ
from compat._index import Schema
from compat._model import Severity
from compat._pairing import Pairing
from compat._rulebase import KIND_NAMES

__all__ = ["CLOUD_SERVICES", "change_report", "changes", "judge", "served_by"]

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


CLOUD_SERVICES: tuple[str, ...] = ("hplus.cloud.", "hplus.tunnel.")
"""Services the cloud serves, by full name or by package prefix (ending in ``.``): the
patient API, the edge-facing and registry services, operations, and the tunnel itself.
Edges and apps call them; every other service is served by edges and called by the cloud."""


def served_by(service: str, cloud_services: Iterable[str] = CLOUD_SERVICES) -> ServedBy:
    """Which side serves ``service`` (a full name): ``cloud`` or ``edge``."""
    for entry in cloud_services:
        if service == entry or (entry.endswith(".") and service.startswith(entry)):
            return "cloud"
    return "edge"


def judge(
    change: Change, direction: Direction, *, served: ServedBy = "edge"
) -> tuple[Severity, str]:
    """Severity and reason of ``change`` for data travelling in ``direction``.

    Args:
        change: the change, found on a message the RPC reaches.
        direction: ``request`` or ``response``.
        served: who serves the RPC. For a service edges serve, the newer cloud writes
            requests and older edges read them, and responses go the other way; for a
            service the cloud serves, older clients (edges, apps) write requests and the
            newer cloud writes responses.
    """
    k = change.kind
    # Who writes this message: the (one) newer cloud, or the older peers that read what it
    # writes and write what it reads.
    new_writes = (direction == "request") == (served == "edge")
    old = "older edges" if served == "edge" else "older clients"
    writer, reader = ("the newer cloud", old) if new_writes else (old, "the newer cloud")
    s_w, s_r = ("s", "") if new_writes else ("", "s")  # verb endings for writer and reader
    if change.element == "field":
        if k is ChangeKind.ADDED:
            if change.severity is Severity.ERROR:  # a required field
                if new_writes:
                    return Severity.WARN, f"required: {old} ignore it; the cloud must set it"
                return Severity.ERROR, f"required: the newer cloud rejects {direction}s without it"
            return Severity.INFO, (
                f"{old} ignore it; the cloud cannot rely on it being honoured"
                if new_writes
                else f"{old} never send it; the cloud must handle its absence"
            )
        if k is ChangeKind.REMOVED:
            if new_writes:
                return max(
                    change.severity, Severity.WARN
                ), f"{old} still read it and now see its default value"
            if change.severity is Severity.ERROR:
                return (
                    Severity.ERROR,
                    f"{old} still send it; its number is not reserved, so a reuse misreads it",
                )
            return Severity.INFO, f"{old} still send it; the cloud ignores it"
        if k is ChangeKind.RETYPED:
            w = _SCALAR_BY_NAME.get(change.new if new_writes else change.old)
            r = _SCALAR_BY_NAME.get(change.old if new_writes else change.new)
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
                (Severity.WARN, f"{old} receive a value they do not know")
                if new_writes
                else (Severity.INFO, f"{old} never send it")
            )
        if k is ChangeKind.REMOVED:
            return (
                (Severity.INFO, "the newer cloud no longer sends it")
                if new_writes
                else (max(change.severity, Severity.WARN), f"{old} may still send it")
            )
    return change.severity, ""


def _rpc_judgement(change: Change, served: ServedBy) -> tuple[Severity, str]:
    """Severity and reason of an RPC added, removed or changed as a whole."""
    if change.kind is ChangeKind.ADDED:
        if served == "edge":
            return Severity.WARN, "older edges answer UNIMPLEMENTED until they upgrade"
        return Severity.INFO, "older clients do not call it until they upgrade"
    if change.kind is ChangeKind.REMOVED:
        if served == "edge":
            return (
                change.severity,
                "the newer cloud stops calling it; generated code loses the method",
            )
        return Severity.ERROR, "older clients still call it and get UNIMPLEMENTED"
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


def changes(
    previous: Schema, current: Schema, *, cloud_services: Iterable[str] = CLOUD_SERVICES
) -> ChangeReport:
    """The full parameter-change list between two releases.

    Args:
        previous: the older release.
        current: the newer release.
        cloud_services: services the cloud serves (full names, or package prefixes ending
            in ``.``); their requests travel from older clients to the newer cloud.

    Returns:
        Every change, plus each change seen from every RPC that reaches it.
    """
    return change_report(Pairing(previous, current), cloud_services=cloud_services)


def change_report(
    pairing: Pairing, *, cloud_services: Iterable[str] = CLOUD_SERVICES
) -> ChangeReport:
    """:func:`changes` on a pairing the rules may already have walked (it is reused)."""
    cloud_services = tuple(cloud_services)
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
        served = served_by(sname, cloud_services)
        for mname, pm, cm in sorted(pairing.every_method(ps, cs), key=lambda t: t[0]):
            for ch in rpc_changes.get((sname, mname), ()):
                sev, note = _rpc_judgement(ch, served)
                params.append(
                    ParameterChange(sname, mname, None, "", ch, sev, note, served_by=served)
                )
            if cm is None or pm is None:
                continue
            for direction, attr in (("request", "input_type"), ("response", "output_type")):
                d_: Direction = "request" if direction == "request" else "response"
                if getattr(cm, attr) != getattr(pm, attr):
                    continue  # a different message altogether; reported on the RPC
                for param, ch in _walk(getattr(cm, attr), previous, current, d):
                    sev, note = judge(ch, d_, served=served)
                    params.append(
                        ParameterChange(sname, mname, d_, param, ch, sev, note, served_by=served)
                    )
    return ChangeReport(all_changes, params)

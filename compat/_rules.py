"""Rules on paired files, enums, services and RPCs, and on the two whole releases."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from google.protobuf import descriptor_pb2

from compat._index import (
    ENUM_OPTIONS,
    ENUM_OPTIONS_FEATURES,
    ENUM_VALUE_NUMBER,
    FILE_EDITION,
    FILE_OPTIONS,
    FILE_PACKAGE,
    FILE_SYNTAX,
    METHOD_INPUT,
    METHOD_OPTIONS,
    METHOD_OUTPUT,
    EnumNode,
    EnumValueNode,
    FileNode,
    MessageNode,
    MethodNode,
    Schema,
    ServiceNode,
)
from compat._pairing import Pairing
from compat._rulebase import (
    ENUM_RANGE_MAX,
    Handler,
    Sink,
    check_ranges,
    deleted_location,
    enum_name,
)

_F = descriptor_pb2.FieldDescriptorProto
_FS = descriptor_pb2.FeatureSet

__all__ = ["FILE_OPTION_RULES", "UNSTABLE_PACKAGE"]

# --- file pairs ---------------------------------------------------------------------------


def _nested_no_delete(
    out: Sink,
    cur: FileNode,
    prev_names: dict[str, str],
    cur_names: set[str],
    cur_messages: dict[str, MessageNode],
    what: str,
    prev_file: FileNode,
) -> None:
    for nested, subject in prev_names.items():
        if nested not in cur_names:
            out.add(
                cur,
                [deleted_location(cur, nested, cur_messages)],
                f'Previously present {what} "{nested}" was deleted from file.',
                subject,
                against=prev_file.path,
            )


def enum_no_delete(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
    """A (nested) enum is gone from the file that declared it."""
    pe = pair.previous.file_enums[prev.path]
    ce = pair.current.file_enums[cur.path]
    names = {n: e.full_name for n, e in pe.items()}
    cm = pair.current.file_messages[cur.path]
    _nested_no_delete(out, cur, names, set(ce), cm, "enum", prev)


def extension_no_delete(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
    """An extension is gone from the file that declared it."""
    px = pair.previous.file_extensions[prev.path]
    cx = pair.current.file_extensions[cur.path]
    names = {n: x.full_name for n, x in px.items()}
    cm = pair.current.file_messages[cur.path]
    _nested_no_delete(out, cur, names, set(cx), cm, "extension", prev)


def message_no_delete(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
    """A (nested) message is gone from the file that declared it."""
    pm = pair.previous.file_messages[prev.path]
    cm = pair.current.file_messages[cur.path]
    names = {n: m.full_name for n, m in pm.items()}
    _nested_no_delete(out, cur, names, set(cm), cm, "message", prev)


def service_no_delete(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
    """A service is gone from the file that declared it."""
    cs = pair.current.file_services[cur.path]
    for name, svc in pair.previous.file_services[prev.path].items():
        if name not in cs:
            out.add(
                cur,
                [None],
                f'Previously present service "{name}" was deleted from file.',
                svc.full_name,
                against=prev.path,
            )


def _file_value(
    out: Sink,
    cur: FileNode,
    prev: FileNode,
    what: str,
    old: str,
    new: str,
    paths: Sequence[tuple[int, ...]],
) -> None:
    if old != new:  # locations are looked up only for a finding: that is the slow part
        spans = [cur.span(p) for p in paths]
        out.add(
            cur, spans, f'File {what} changed from "{old}" to "{new}".', cur.path, against=prev.path
        )


def _file_option(name: str, number: int, kind: str = "str") -> Handler[FileNode]:
    def handler(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
        def value(f: FileNode) -> str:
            v = getattr(f.proto.options, name)
            if kind == "bool":
                return "true" if v else "false"
            if kind == "enum":
                return enum_name(descriptor_pb2.FileOptions.OptimizeMode, v)
            return str(v)

        _file_value(
            out,
            cur,
            prev,
            f'option "{name}"',
            value(prev),
            value(cur),
            [(FILE_OPTIONS, number)],
        )

    handler.__doc__ = f"File option ``{name}`` changed."
    return handler


def _syntax(f: FileNode) -> str:
    if f.syntax == "editions":
        return enum_name(descriptor_pb2.Edition, f.proto.edition).removeprefix("EDITION_")
    return f.syntax


def file_same_syntax(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
    """The file's ``syntax`` or ``edition`` changed."""
    paths = [(FILE_SYNTAX,), (FILE_EDITION,)]
    _file_value(out, cur, prev, "syntax", _syntax(prev), _syntax(cur), paths)


def file_same_package(out: Sink, cur: FileNode, prev: FileNode, pair: Pairing) -> None:
    """The file's ``package`` changed."""
    _file_value(out, cur, prev, "package", prev.package, cur.package, [(FILE_PACKAGE,)])


# --- enum pairs ---------------------------------------------------------------------------


def enum_same_type(out: Sink, cur: EnumNode, prev: EnumNode, pair: Pairing) -> None:
    """The enum switched between open and closed."""
    if prev.is_closed != cur.is_closed:
        before, after = ("closed", "open") if prev.is_closed else ("open", "closed")
        out.add(
            cur.file,
            [cur.span(ENUM_OPTIONS, ENUM_OPTIONS_FEATURES, 2), cur.span()],
            f'Enum "{cur.name}" changed from {before} to {after}.',
            cur.full_name,
            against=prev.file.path,
        )


def enum_same_json_format(out: Sink, cur: EnumNode, prev: EnumNode, pair: Pairing) -> None:
    """JSON support of an enum was withdrawn."""
    p, c = prev.json_format, cur.json_format
    if p == _FS.ALLOW and c != _FS.ALLOW:
        out.add(
            cur.file,
            [cur.span(ENUM_OPTIONS, ENUM_OPTIONS_FEATURES, 6), cur.span()],
            f'Enum "{cur.name}" JSON format support changed from '
            f"{enum_name(_FS.JsonFormat, p)} to {enum_name(_FS.JsonFormat, c)}.",
            cur.full_name,
            against=prev.file.path,
        )


def _enum_value_no_delete(
    out: Sink, cur: EnumNode, prev: EnumNode, *, number_ok: bool, name_ok: bool
) -> None:
    reserved = cur.proto.reserved_range
    names = set(cur.proto.reserved_name)
    for number, values in prev.values.items():
        if number in cur.values:
            continue
        if number_ok and any(r.start <= number <= r.end for r in reserved):
            continue
        if name_ok and all(n in names for n in values):
            continue
        suffix = ""
        if number_ok:
            suffix = f' without reserving the number "{number}"'
        elif name_ok:
            quoted = ", ".join(f'"{n}"' for n in sorted(values))
            suffix = f" without reserving the name{'s' if len(values) > 1 else ''} {quoted}"
        out.add(
            cur.file,
            [cur.span()],
            f'Previously present enum value "{number}" on enum "{cur.name}" was deleted{suffix}.',
            f"{cur.full_name}={number}",
            against=prev.file.path,
        )


def enum_value_no_delete(out: Sink, cur: EnumNode, prev: EnumNode, pair: Pairing) -> None:
    """An enum value number is gone, reserved or not."""
    _enum_value_no_delete(out, cur, prev, number_ok=False, name_ok=False)


def enum_value_no_delete_unless_number_reserved(
    out: Sink, cur: EnumNode, prev: EnumNode, pair: Pairing
) -> None:
    """An enum value number is gone and not reserved."""
    _enum_value_no_delete(out, cur, prev, number_ok=True, name_ok=False)


def enum_value_no_delete_unless_name_reserved(
    out: Sink, cur: EnumNode, prev: EnumNode, pair: Pairing
) -> None:
    """An enum value is gone and its name is not reserved."""
    _enum_value_no_delete(out, cur, prev, number_ok=False, name_ok=True)


def reserved_enum_no_delete(out: Sink, cur: EnumNode, prev: EnumNode, pair: Pairing) -> None:
    """A reserved range or name was removed from an enum."""
    check_ranges(
        out,
        "reserved",
        "enum",
        cur.name,
        cur.file,
        cur,
        cur.full_name,
        prev.file.path,
        [(r.start, r.end) for r in prev.proto.reserved_range],
        [(r.start, r.end) for r in cur.proto.reserved_range],
        ENUM_RANGE_MAX,
    )
    names = set(cur.proto.reserved_name)
    for name in dict.fromkeys(prev.proto.reserved_name):
        if name not in names:
            out.add(
                cur.file,
                [cur.span()],
                f'Previously present reserved name "{name}" on enum "{cur.name}" was deleted.',
                cur.full_name,
                against=prev.file.path,
            )


def enum_value_same_name(
    out: Sink, cur: dict[str, EnumValueNode], prev: dict[str, EnumValueNode], pair: Pairing
) -> None:
    """An enum number now has other names (adding an alias is fine)."""
    pnames, cnames = sorted(prev), sorted(cur)
    if set(pnames) <= set(cnames):
        return
    s = "s" if len(pnames) > 1 and len(cnames) > 1 else ""
    pq = ", ".join(f'"{n}"' for n in pnames)
    cq = ", ".join(f'"{n}"' for n in cnames)
    prev_path = next(iter(prev.values())).enum.file.path
    for v in cur.values():
        e = v.enum
        out.add(
            e.file,
            [e.file.span((*v.path, ENUM_VALUE_NUMBER))],
            f'Enum value "{v.number}" on enum "{e.name}" changed name{s} from {pq} to {cq}.',
            f"{e.full_name}={v.number}",
            against=prev_path,
        )


# --- service and RPC pairs ----------------------------------------------------------------


def rpc_no_delete(out: Sink, cur: ServiceNode, prev: ServiceNode, pair: Pairing) -> None:
    """An RPC is gone from a service."""
    for name in prev.methods:
        if name not in cur.methods:
            out.add(
                cur.file,
                [cur.file.span(cur.path)],
                f'Previously present RPC "{name}" on service "{cur.name}" was deleted.',
                f"{cur.full_name}/{name}",
                against=prev.file.path,
            )


def _streaming(attr: str, side: str) -> Handler[MethodNode]:
    def handler(out: Sink, cur: MethodNode, prev: MethodNode, pair: Pairing) -> None:
        p, c = getattr(prev.proto, attr), getattr(cur.proto, attr)
        if p != c:
            before, after = ("unary", "streaming") if c else ("streaming", "unary")
            f = cur.service.file
            out.add(
                f,
                [f.span(cur.path)],
                f'RPC "{cur.name}" on service "{cur.service.name}" changed from {side} {before} '
                f"to {side} {after}.",
                f"{cur.service.full_name}/{cur.name}",
                against=prev.service.file.path,
            )

    handler.__doc__ = f"The RPC switched between unary and {side}-streaming."
    return handler


rpc_same_client_streaming = _streaming("client_streaming", "client")
rpc_same_server_streaming = _streaming("server_streaming", "server")


def _rpc_type(which: str, number: int) -> Handler[MethodNode]:
    def handler(out: Sink, cur: MethodNode, prev: MethodNode, pair: Pairing) -> None:
        p, c = getattr(prev.proto, which), getattr(cur.proto, which)
        if p != c:
            f = cur.service.file
            label = "request" if which == "input_type" else "response"
            out.add(
                f,
                [f.span((*cur.path, number))],
                f'RPC "{cur.name}" on service "{cur.service.name}" changed {label} type from '
                f'"{p.lstrip(".")}" to "{c.lstrip(".")}".',
                f"{cur.service.full_name}/{cur.name}",
                against=prev.service.file.path,
            )

    label = "request" if which == "input_type" else "response"
    handler.__doc__ = f"The RPC's {label} type changed."
    return handler


rpc_same_request_type = _rpc_type("input_type", METHOD_INPUT)
rpc_same_response_type = _rpc_type("output_type", METHOD_OUTPUT)


def rpc_same_idempotency_level(out: Sink, cur: MethodNode, prev: MethodNode, pair: Pairing) -> None:
    """The RPC's ``idempotency_level`` option changed."""
    p = prev.proto.options.idempotency_level
    c = cur.proto.options.idempotency_level
    if p != c:
        name = functools.partial(enum_name, descriptor_pb2.MethodOptions.IdempotencyLevel)
        f = cur.service.file
        out.add(
            f,
            [f.span((*cur.path, METHOD_OPTIONS, 34))],
            f'RPC "{cur.name}" on service "{cur.service.name}" changed option "idempotency_level" '
            f'from "{name(p)}" to "{name(c)}".',
            f"{cur.service.full_name}/{cur.name}",
            against=prev.service.file.path,
        )


# --- whole-release rules ------------------------------------------------------------------


def file_no_delete(out: Sink, current: Schema, previous: Schema, pair: Pairing) -> None:
    """A file is gone."""
    for path in pair.previous.files:
        if path not in pair.current.files:
            out.add(None, [], f'Previously present file "{path}" was deleted.', path, against=path)


def package_no_delete(out: Sink, current: Schema, previous: Schema, pair: Pairing) -> None:
    """A whole package is gone."""
    cur = pair.current.packages()
    for pkg, files in pair.previous.packages().items():
        if pkg not in cur:
            first = min(f.path for f in files)
            out.add(
                None, [], f'Previously present package "{pkg}" was deleted.', pkg, against=first
            )


def _by_package(nodes: dict[str, EnumNode] | dict[str, MessageNode]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for n in nodes.values():
        out.setdefault(n.file.package, {})[n.nested_name] = n.file.path
    return out


def _package_nested_no_delete(
    out: Sink,
    pair: Pairing,
    what: str,
    prev_map: dict[str, dict[str, str]],
    cur_map: dict[str, dict[str, str]],
    *,
    package_scope: bool,
) -> None:
    cur_pkg_msgs: dict[str, dict[str, MessageNode]] = {}
    if package_scope:
        for m in pair.current.messages.values():
            cur_pkg_msgs.setdefault(m.file.package, {})[m.nested_name] = m
    for pkg, names in prev_map.items():
        have = cur_map.get(pkg)
        if have is None and pkg not in pair.current.packages():
            continue
        have = have or {}
        for nested, prev_path in names.items():
            if nested in have:
                continue
            pkg_name = f"{pkg}.{nested}" if pkg else nested
            msg = f'Previously present {what} "{nested}" was deleted from package "{pkg}".'
            file = pair.current.files.get(prev_path)
            if file is None:
                out.add(None, [], msg, pkg_name, against=prev_path)
                continue
            scope = (
                cur_pkg_msgs.get(pkg, {})
                if package_scope
                else pair.current.file_messages[file.path]
            )
            span = None
            parts = nested.split(".")
            target = file
            for i in range(len(parts) - 1, 0, -1):
                found = scope.get(".".join(parts[:i]))
                if found is not None:
                    span, target = found.span(), found.file
                    break
            out.add(target, [span], msg, pkg_name, against=prev_path)


def package_enum_no_delete(out: Sink, current: Schema, previous: Schema, pair: Pairing) -> None:
    """An enum is gone from its package (moving it between files of the package is fine)."""
    _package_nested_no_delete(
        out,
        pair,
        "enum",
        _by_package(pair.previous.enums),
        _by_package(pair.current.enums),
        package_scope=False,
    )


def package_message_no_delete(out: Sink, current: Schema, previous: Schema, pair: Pairing) -> None:
    """A message is gone from its package."""
    _package_nested_no_delete(
        out,
        pair,
        "message",
        _by_package(pair.previous.messages),
        _by_package(pair.current.messages),
        package_scope=True,
    )


def package_extension_no_delete(
    out: Sink, current: Schema, previous: Schema, pair: Pairing
) -> None:
    """An extension is gone from its package."""

    def index(schema: Schema) -> dict[str, dict[str, str]]:
        res: dict[str, dict[str, str]] = {}
        for path, exts in schema.file_extensions.items():
            pkg = schema.files[path].package
            for nested in exts:
                res.setdefault(pkg, {})[nested] = path
        return res

    _package_nested_no_delete(
        out, pair, "extension", index(pair.previous), index(pair.current), package_scope=False
    )


def package_service_no_delete(out: Sink, current: Schema, previous: Schema, pair: Pairing) -> None:
    """A service is gone from its package."""
    cur: dict[str, set[str]] = {}
    for s in pair.current.services.values():
        cur.setdefault(s.file.package, set()).add(s.name)
    cur_pkgs = pair.current.packages()
    for s in pair.previous.services.values():
        pkg = s.file.package
        if pkg not in cur_pkgs or s.name in cur.get(pkg, set()):
            continue
        file = pair.current.files.get(s.file.path)
        out.add(
            file,
            [None],
            f'Previously present service "{s.name}" was deleted from package "{pkg}".',
            s.full_name,
            against=s.file.path,
        )


UNSTABLE_PACKAGE = re.compile(r"(^|\.)v\d+(p\d+)?(alpha|beta)\d*($|\.)|(^|\.)v\d+test\w*($|\.)")
"""Package versions buf calls unstable: ``v1alpha1``, ``v1beta2``, ``v1p1beta1``, ``v1test``."""

FILE_OPTION_RULES = {
    "FILE_SAME_CC_ENABLE_ARENAS": _file_option("cc_enable_arenas", 31, "bool"),
    "FILE_SAME_CC_GENERIC_SERVICES": _file_option("cc_generic_services", 16, "bool"),
    "FILE_SAME_CSHARP_NAMESPACE": _file_option("csharp_namespace", 37),
    "FILE_SAME_GO_PACKAGE": _file_option("go_package", 11),
    "FILE_SAME_JAVA_GENERIC_SERVICES": _file_option("java_generic_services", 17, "bool"),
    "FILE_SAME_JAVA_MULTIPLE_FILES": _file_option("java_multiple_files", 10, "bool"),
    "FILE_SAME_JAVA_OUTER_CLASSNAME": _file_option("java_outer_classname", 8),
    "FILE_SAME_JAVA_PACKAGE": _file_option("java_package", 1),
    "FILE_SAME_OBJC_CLASS_PREFIX": _file_option("objc_class_prefix", 36),
    "FILE_SAME_OPTIMIZE_FOR": _file_option("optimize_for", 9, "enum"),
    "FILE_SAME_PHP_CLASS_PREFIX": _file_option("php_class_prefix", 40),
    "FILE_SAME_PHP_METADATA_NAMESPACE": _file_option("php_metadata_namespace", 44),
    "FILE_SAME_PHP_NAMESPACE": _file_option("php_namespace", 41),
    "FILE_SAME_PY_GENERIC_SERVICES": _file_option("py_generic_services", 18, "bool"),
    "FILE_SAME_RUBY_PACKAGE": _file_option("ruby_package", 45),
    "FILE_SAME_SWIFT_PREFIX": _file_option("swift_prefix", 39),
}

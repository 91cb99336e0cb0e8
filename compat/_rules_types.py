"""Rules on paired messages and paired fields (fields paired by number)."""

from __future__ import annotations

import functools
import math
import struct

from google.protobuf import descriptor_pb2

from compat._index import (
    CPP_FEATURES,
    FIELD_DEFAULT,
    FIELD_JSON_NAME,
    FIELD_NAME,
    FIELD_OPTIONS,
    FIELD_OPTIONS_FEATURES,
    FIELD_TYPE,
    FIELD_TYPE_NAME,
    FILE_OPTIONS,
    JAVA_FEATURES,
    MSG_OPTIONS,
    MSG_OPTIONS_FEATURES,
    Cardinality,
    FieldNode,
    MessageNode,
    Schema,
    Span,
    resolve_language_feature,
)
from compat._pairing import Pairing
from compat._rulebase import (
    CARD_WIRE,
    CARD_WIRE_JSON,
    INT64_TYPES,
    KIND_NAMES,
    NAMED_KINDS,
    WIRE_GROUPS,
    WIRE_JSON_GROUPS,
    Handler,
    Sink,
    check_ranges,
    describe_field,
    enum_name,
    field_subject,
    msg_max,
)

_F = descriptor_pb2.FieldDescriptorProto
_FS = descriptor_pb2.FeatureSet

__all__: list[str] = []


def kind_name(f: FieldNode) -> str:
    """The printable kind of a field (``int32``, ``message``, ``enum``...)."""
    k = f.kind
    if k == _F.TYPE_GROUP and f.file.syntax != "proto2":
        return "message (delimited encoding)"
    return KIND_NAMES[k]


def _type_span(f: FieldNode) -> Span | None:
    if f.kind in NAMED_KINDS:
        return f.span(FIELD_TYPE_NAME)
    return f.span(FIELD_TYPE)


def _field_type_changed(out: Sink, cur: FieldNode, prev: FieldNode, extra: str = "") -> None:
    out.add(
        cur.file,
        [_type_span(cur)],
        f'{describe_field(cur)} changed type from "{kind_name(prev)}" to "{kind_name(cur)}".'
        + (f" {extra}" if extra else ""),
        field_subject(cur),
        against=prev.file.path,
    )


def _field_type_name_changed(out: Sink, cur: FieldNode, prev: FieldNode) -> None:
    out.add(
        cur.file,
        [cur.span(FIELD_TYPE_NAME)],
        f'{describe_field(cur)} changed type from "{prev.proto.type_name.lstrip(".")}" '
        f'to "{cur.proto.type_name.lstrip(".")}".',
        field_subject(cur),
        against=prev.file.path,
    )


def _both_map_entries(cur: FieldNode, prev: FieldNode) -> bool:
    return (
        cur.message is not None
        and prev.message is not None
        and cur.message.is_map_entry
        and prev.message.is_map_entry
    )


# --- message pairs ------------------------------------------------------------------------


def _field_no_delete(
    out: Sink, cur: MessageNode, prev: MessageNode, *, number_ok: bool, name_ok: bool
) -> None:
    fields = cur.fields
    reserved = cur.proto.reserved_range
    names = set(cur.proto.reserved_name)
    for number, pf in prev.fields.items():
        if number in fields:
            continue
        if number_ok and any(r.start <= number < r.end for r in reserved):
            continue
        if name_ok and pf.name in names:
            continue
        suffix = ""
        if number_ok:
            suffix = f' without reserving the number "{number}"'
        elif name_ok:
            suffix = f' without reserving the name "{pf.name}"'
        desc = describe_field(pf)
        desc = desc[0].lower() + desc[1:]
        out.add(
            cur.file,
            [cur.span()],
            f"Previously present {desc} was deleted{suffix}.",
            field_subject(pf),
            against=prev.file.path,
        )


def field_no_delete(out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing) -> None:
    """A field number is gone from a message, reserved or not."""
    _field_no_delete(out, cur, prev, number_ok=False, name_ok=False)


def field_no_delete_unless_number_reserved(
    out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing
) -> None:
    """A field number is gone from a message and not reserved."""
    _field_no_delete(out, cur, prev, number_ok=True, name_ok=False)


def field_no_delete_unless_name_reserved(
    out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing
) -> None:
    """A field is gone from a message and its name is not reserved."""
    _field_no_delete(out, cur, prev, number_ok=False, name_ok=True)


def extension_message_no_delete(
    out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing
) -> None:
    """An ``extensions`` range was removed or narrowed."""
    check_ranges(
        out,
        "extension",
        "message",
        cur.name,
        cur.file,
        cur,
        cur.full_name,
        prev.file.path,
        [(r.start, r.end - 1) for r in prev.proto.extension_range],
        [(r.start, r.end - 1) for r in cur.proto.extension_range],
        msg_max(cur),
    )


def reserved_message_no_delete(
    out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing
) -> None:
    """A reserved range or name was removed from a message."""
    check_ranges(
        out,
        "reserved",
        "message",
        cur.name,
        cur.file,
        cur,
        cur.full_name,
        prev.file.path,
        [(r.start, r.end - 1) for r in prev.proto.reserved_range],
        [(r.start, r.end - 1) for r in cur.proto.reserved_range],
        msg_max(cur),
    )
    names = set(cur.proto.reserved_name)
    for name in dict.fromkeys(prev.proto.reserved_name):
        if name not in names:
            out.add(
                cur.file,
                [cur.span()],
                f'Previously present reserved name "{name}" on message "{cur.name}" was deleted.',
                cur.full_name,
                against=prev.file.path,
            )


def message_no_remove_standard_descriptor_accessor(
    out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing
) -> None:
    """``no_standard_descriptor_accessor`` turned on."""
    p = prev.proto.options.no_standard_descriptor_accessor
    c = cur.proto.options.no_standard_descriptor_accessor
    if not p and c:
        out.add(
            cur.file,
            [cur.span(MSG_OPTIONS, 2)],
            'Message option "no_standard_descriptor_accessor" changed from "false" to "true".',
            cur.full_name,
            against=prev.file.path,
        )


def oneof_no_delete(out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing) -> None:
    """A oneof (by name) is gone from a message."""
    have = {o.name for o in cur.proto.oneof_decl}
    for name in sorted(prev.real_oneofs):
        if name not in have:
            out.add(
                cur.file,
                [cur.span()],
                f'Previously present oneof "{name}" on message "{cur.name}" was deleted.',
                f"{cur.full_name}.{name}",
                against=prev.file.path,
            )


def message_same_json_format(out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing) -> None:
    """JSON support of a message was withdrawn (``json_format`` ALLOW → LEGACY_BEST_EFFORT)."""
    p, c = prev.json_format, cur.json_format
    if p == _FS.ALLOW and c != _FS.ALLOW:
        out.add(
            cur.file,
            [cur.span(MSG_OPTIONS, MSG_OPTIONS_FEATURES, 6), cur.span()],
            f'Message "{cur.name}" JSON format support changed from '
            f"{enum_name(_FS.JsonFormat, p)} to {enum_name(_FS.JsonFormat, c)}.",
            cur.full_name,
            against=prev.file.path,
        )


def message_same_required_fields(
    out: Sink, cur: MessageNode, prev: MessageNode, pair: Pairing
) -> None:
    """A required field was added to or removed from an existing message."""
    # buf looks at the declared label only: LEGACY_REQUIRED (editions) is not "required" here.
    req = _F.LABEL_REQUIRED
    preq = {n for n, f in prev.fields.items() if f.proto.label == req}
    creq = {n: f for n, f in cur.fields.items() if f.proto.label == req}
    for n in sorted(preq - set(creq)):
        out.add(
            cur.file,
            [cur.span()],
            f'Message "{prev.name}" had required field "{n}" deleted. Required fields must always '
            "be sent, so if one side does not know about the required field, this will result "
            "in a breakage.",
            f"{cur.full_name}#{n}",
            against=prev.file.path,
        )
    for n, f in sorted(creq.items()):
        if n not in preq:
            out.add(
                cur.file,
                [f.span()],
                f'Message "{cur.name}" had required field "{n}" added. Required fields must always '
                "be sent, so if one side does not know about the required field, this will result "
                "in a breakage.",
                f"{cur.full_name}#{n}",
                against=prev.file.path,
            )


# --- field pairs --------------------------------------------------------------------------


def field_same_type(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The field's type changed at all."""
    if prev.kind != cur.kind:
        _field_type_changed(out, cur, prev)
    elif cur.proto.type in NAMED_KINDS and prev.proto.type_name != cur.proto.type_name:
        _field_type_name_changed(out, cur, prev)


def _enum_compatible(cur: FieldNode, prev: FieldNode, pair: Pairing) -> bool:
    pe = pair.previous.enum(prev.proto.type_name.lstrip("."))
    ce = pair.current.enum(cur.proto.type_name.lstrip("."))
    if pe is None or ce is None or pe.name != ce.name:
        return False
    have = {(v.name, v.number) for v in ce.proto.value}
    return all((v.name, v.number) in have for v in pe.proto.value)


def field_wire_compatible_type(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The field's type changed in a way the binary encoding cannot absorb."""
    pk, ck = prev.kind, cur.kind
    if WIRE_GROUPS[pk] != WIRE_GROUPS[ck]:
        extra = (
            "See https://developers.google.com/protocol-buffers/docs/proto3#updating for wire "
            "compatibility rules."
        )
        if pk == _F.TYPE_STRING and ck == _F.TYPE_BYTES:
            return
        if pk == _F.TYPE_BYTES and ck == _F.TYPE_STRING:
            extra += (
                " Note that while string and bytes are compatible if the data is valid UTF-8, "
                "there is no way to enforce that a bytes field is UTF-8, so these fields may be "
                "incompatible."
            )
        _field_type_changed(out, cur, prev, extra)
        return
    if prev.proto.type_name != cur.proto.type_name:
        if cur.proto.type == _F.TYPE_ENUM:
            if not _enum_compatible(cur, prev, pair):
                _field_type_name_changed(out, cur, prev)
        elif cur.proto.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            _field_type_name_changed(out, cur, prev)


def field_wire_json_compatible_type(
    out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing
) -> None:
    """The field's type changed in a way the binary or JSON encoding cannot absorb."""
    pk, ck = prev.kind, cur.kind
    if WIRE_JSON_GROUPS[pk] != WIRE_JSON_GROUPS[ck]:
        _field_type_changed(
            out,
            cur,
            prev,
            "See https://developers.google.com/protocol-buffers/docs/proto3#updating for wire "
            "compatibility rules and https://developers.google.com/protocol-buffers/docs/"
            "proto3#json for JSON compatibility rules.",
        )
        return
    if prev.proto.type_name != cur.proto.type_name:
        if ck == _F.TYPE_ENUM:
            if not _enum_compatible(cur, prev, pair):
                _field_type_name_changed(out, cur, prev)
        elif ck in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            _field_type_name_changed(out, cur, prev)


def _cardinality(table: dict[Cardinality, int] | None, doc: str) -> Handler[FieldNode]:
    def handler(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
        if _both_map_entries(cur, prev):
            return  # generated; presence of map entry fields means nothing
        pc = prev.cardinality(pair.previous)
        cc = cur.cardinality(pair.current)
        changed = pc != cc if table is None else table[pc] != table[cc]
        if changed:
            out.add(
                cur.file,
                [cur.span()],
                f'{describe_field(cur)} changed cardinality from "{pc.value}" to "{cc.value}".',
                field_subject(cur),
                against=prev.file.path,
            )

    handler.__doc__ = doc
    return handler


field_same_cardinality = _cardinality(
    None, "The field's cardinality changed (optional explicit/implicit, required, repeated, map)."
)
field_wire_compatible_cardinality = _cardinality(
    CARD_WIRE, "The cardinality changed in a way the binary encoding cannot absorb."
)
field_wire_json_compatible_cardinality = _cardinality(
    CARD_WIRE_JSON, "The cardinality changed in a way binary or JSON cannot absorb."
)


_CPP_STRING_TYPES = {1: "VIEW", 2: "CORD", 3: "STRING"}


def _cpp_string_type(f: FieldNode) -> tuple[str, bool]:
    """(string type, is STRING_PIECE) as buf resolves it: ``ctype``, then ``(pb.cpp)``."""
    opts = f.proto.options
    editions = f.file.syntax == "editions"
    if (not editions or f.file.edition < descriptor_pb2.EDITION_2024) and opts.HasField("ctype"):
        c = opts.ctype
        if c == descriptor_pb2.FieldOptions.CORD:
            return "CORD", False
        if c == descriptor_pb2.FieldOptions.STRING_PIECE:
            return "STRING", True
        return "STRING", False
    if not editions:
        return "STRING", False
    value = resolve_language_feature(f, CPP_FEATURES, 2)
    if value is None:
        value = 1 if f.file.edition >= descriptor_pb2.EDITION_2024 else 3
    return _CPP_STRING_TYPES.get(value, str(value)), False


def field_same_cpp_string_type(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The C++ string representation (``ctype``) changed."""
    if _both_map_entries(cur, prev):
        return
    sb = (_F.TYPE_STRING, _F.TYPE_BYTES)
    if prev.proto.type not in sb or cur.proto.type not in sb:
        return
    ps, pp = _cpp_string_type(prev)
    cs, cp = _cpp_string_type(cur)
    if (ps, pp) != (cs, cp) and not (pp and cs == "STRING"):
        old = "STRING_PIECE" if pp else ps
        new = "STRING_PIECE" if cp else cs
        out.add(
            cur.file,
            [
                cur.span(FIELD_OPTIONS, 1),
                cur.span(FIELD_OPTIONS, FIELD_OPTIONS_FEATURES, CPP_FEATURES, 2),
                cur.span(),
            ],
            f'{describe_field(cur)} changed C++ string type from "{old}" to "{new}".',
            field_subject(cur),
            against=prev.file.path,
        )


def _java_utf8(f: FieldNode) -> int:
    """Java's UTF-8 checking: ``java_string_check_utf8``, then ``(pb.java)``, else the default."""
    fo = f.file.proto.options
    default = f.utf8_validation
    if f.file.syntax != "editions" or fo.HasField("java_string_check_utf8"):
        return _FS.VERIFY if fo.java_string_check_utf8 else default
    return _FS.VERIFY if resolve_language_feature(f, JAVA_FEATURES, 2) == 2 else default


def field_same_java_utf8_validation(
    out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing
) -> None:
    """Java's UTF-8 checking of a string field changed."""
    if prev.proto.type != _F.TYPE_STRING or cur.proto.type != _F.TYPE_STRING:
        return
    p, c = _java_utf8(prev), _java_utf8(cur)
    if p != c:
        out.add(
            cur.file,
            [
                cur.file.span((FILE_OPTIONS, 27)),
                cur.span(FIELD_OPTIONS, FIELD_OPTIONS_FEATURES, JAVA_FEATURES, 2),
                cur.span(),
            ],
            f"{describe_field(cur)} changed Java string UTF8 validation from "
            f'"{enum_name(_FS.Utf8Validation, p)}" to "{enum_name(_FS.Utf8Validation, c)}".',
            field_subject(cur),
            against=prev.file.path,
        )


def field_same_jstype(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The ``jstype`` option of a 64-bit integer field changed."""
    if prev.proto.type not in INT64_TYPES or cur.proto.type not in INT64_TYPES:
        return
    p, c = prev.proto.options.jstype, cur.proto.options.jstype
    if p != c:
        name = functools.partial(enum_name, descriptor_pb2.FieldOptions.JSType)
        out.add(
            cur.file,
            [cur.span(FIELD_OPTIONS, 6), cur.span()],
            f'{describe_field(cur)} changed option "jstype" from "{name(p)}" to "{name(c)}".',
            field_subject(cur),
            against=prev.file.path,
        )


def field_same_utf8_validation(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The ``utf8_validation`` feature of a string field changed."""
    if prev.kind != _F.TYPE_STRING or cur.kind != _F.TYPE_STRING:
        return
    p, c = prev.utf8_validation, cur.utf8_validation
    if p != c:
        name = functools.partial(enum_name, _FS.Utf8Validation)
        out.add(
            cur.file,
            [cur.span(FIELD_OPTIONS, FIELD_OPTIONS_FEATURES, 4), cur.span()],
            f"{describe_field(cur)} changed UTF8 validation from {name(p)} to {name(c)}.",
            field_subject(cur),
            against=prev.file.path,
        )


def field_same_json_name(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The field's JSON name changed (explicitly or through a rename)."""
    if prev.is_extension:
        return
    if prev.proto.json_name != cur.proto.json_name:
        out.add(
            cur.file,
            [cur.span(FIELD_JSON_NAME), cur.span()],
            f'{describe_field(cur)} changed option "json_name" from "{prev.proto.json_name}" '
            f'to "{cur.proto.json_name}".',
            field_subject(cur),
            against=prev.file.path,
        )


def field_same_name(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The same field number now has another name."""
    if prev.is_extension:
        pn, cn = prev.full_name, cur.full_name
    else:
        pn, cn = prev.name, cur.name
    if pn != cn:
        out.add(
            cur.file,
            [cur.span(FIELD_NAME)],
            f'{describe_field(cur, with_name=False)} changed name from "{pn}" to "{cn}".',
            field_subject(cur),
            against=prev.file.path,
        )


def _default(f: FieldNode, schema: Schema) -> object:
    """The field's default as buf compares it: text for string/bytes, a number otherwise."""
    p = f.proto
    text = p.default_value if p.HasField("default_value") else None
    k = f.kind
    if k in (_F.TYPE_STRING, _F.TYPE_BYTES):
        return text or ""
    if k == _F.TYPE_BOOL:
        return text == "true"
    if k == _F.TYPE_ENUM:
        e = schema.enum(p.type_name.lstrip("."))
        if e is None or not e.proto.value:
            return 0
        by_name = {v.name: v.number for v in e.proto.value}
        return by_name.get(text, 0) if text is not None else e.proto.value[0].number
    if k in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        if text is None:
            return 0.0
        t = text.lower()
        if t in ("inf", "+inf"):
            return math.inf
        if t == "-inf":
            return -math.inf
        return math.nan if t == "nan" else float(text)
    return 0 if text is None else int(text, 0)


def _f32(x: object) -> object:
    return struct.unpack("f", struct.pack("f", x))[0] if isinstance(x, float) else x


def _defaults_equal(pd: object, cd: object, pk: int, ck: int) -> bool:
    if isinstance(pd, str) or isinstance(cd, str):
        return pd == cd
    floats = {pk, ck}
    if floats == {_F.TYPE_FLOAT, _F.TYPE_DOUBLE}:
        pd, cd = _f32(pd), _f32(cd)  # float <-> double: compare at float precision
    pnan = isinstance(pd, float) and math.isnan(pd)
    cnan = isinstance(cd, float) and math.isnan(cd)
    if pnan or cnan:
        return pnan and cnan
    return bool(pd == cd)  # bool, int and float compare by numeric value, like buf


def _can_have_default(f: FieldNode) -> bool:
    p = f.proto
    return p.label != _F.LABEL_REPEATED and f.kind not in (_F.TYPE_MESSAGE, _F.TYPE_GROUP)


def _default_span(f: FieldNode) -> Span | None:
    """Where buf points for a default: the ``default = …`` pseudo-option.

    protoc records only the value's span; with the usual ``default = value`` spelling the
    option starts ten columns earlier, and never before the ``[`` that opens the options.
    """
    value = f.span(FIELD_DEFAULT)
    if value is None:
        return None
    opts = f.span(FIELD_OPTIONS)
    start = value.column - len("default = ")
    if opts is None or opts.line != value.line or start <= opts.column:
        return value
    return Span(value.line, start, value.end_line, value.end_column)


def field_same_default(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The explicit default value of a field changed (proto2 and editions)."""
    if not _can_have_default(prev) or not _can_have_default(cur):
        return
    pd, cd = _default(prev, pair.previous), _default(cur, pair.current)
    if not pd and not cd:
        return
    if not _defaults_equal(pd, cd, prev.kind, cur.kind):
        out.add(
            cur.file,
            [_default_span(cur), cur.span()],
            f"{describe_field(cur)} changed default value from {pd} to {cd}.",
            field_subject(cur),
            against=prev.file.path,
        )


def field_same_oneof(out: Sink, cur: FieldNode, prev: FieldNode, pair: Pairing) -> None:
    """The field moved into, out of, or between oneofs."""
    if prev.is_extension:
        return
    po = (
        prev.oneof_name()
        if prev.message and prev.oneof_name() in prev.message.real_oneofs
        else None
    )
    co = cur.oneof_name() if cur.message and cur.oneof_name() in cur.message.real_oneofs else None
    if po is None and co is None:
        return
    if po is not None and co is not None:
        if po != co:
            out.add(
                cur.file,
                [cur.span()],
                f'{describe_field(cur)} moved from oneof "{po}" to oneof "{co}".',
                field_subject(cur),
                against=prev.file.path,
            )
        return
    before, after = ("inside", "outside") if co is None else ("outside", "inside")
    out.add(
        cur.file,
        [cur.span()],
        f"{describe_field(cur)} moved from {before} to {after} a oneof.",
        field_subject(cur),
        against=prev.file.path,
    )

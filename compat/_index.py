"""An indexed, read-only view of one release: every element keyed the way rules pair them.

A :class:`Schema` wraps the non-import files of a ``FileDescriptorSet`` and exposes files by
path, messages / enums / services by full name, fields by number, enum values by number and
RPCs by name. It also resolves the few semantic properties that rules compare but that a
descriptor does not spell out (field presence, closed enums, JSON format, UTF-8 validation),
for proto2, proto3 and editions alike.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Iterator

from google.protobuf import descriptor_pb2

__all__ = [
    "Cardinality",
    "EnumNode",
    "EnumValueNode",
    "FieldNode",
    "FileNode",
    "MessageNode",
    "MethodNode",
    "Schema",
    "ServiceNode",
    "Span",
]

_F = descriptor_pb2.FieldDescriptorProto
_FS = descriptor_pb2.FeatureSet

# SourceCodeInfo path components (field numbers in descriptor.proto).
FILE_PACKAGE = 2
FILE_MESSAGE = 4
FILE_ENUM = 5
FILE_SERVICE = 6
FILE_EXTENSION = 7
FILE_OPTIONS = 8
FILE_SYNTAX = 12
FILE_EDITION = 14
MSG_FIELD = 2
MSG_NESTED = 3
MSG_ENUM = 4
MSG_EXTENSION = 6
MSG_OPTIONS = 7
FIELD_NAME = 1
FIELD_TYPE = 5
FIELD_TYPE_NAME = 6
FIELD_DEFAULT = 7
FIELD_OPTIONS = 8
FIELD_JSON_NAME = 10
ENUM_VALUE = 2
ENUM_OPTIONS = 3
ENUM_VALUE_NUMBER = 2
SERVICE_METHOD = 2
METHOD_INPUT = 2
METHOD_OUTPUT = 3
METHOD_OPTIONS = 4
FILE_OPTIONS_FEATURES = 50
MSG_OPTIONS_FEATURES = 12
FIELD_OPTIONS_FEATURES = 21
ENUM_OPTIONS_FEATURES = 7


@dataclasses.dataclass(frozen=True, slots=True)
class Span:
    """A 1-based source range; ``end_column`` is exclusive, as in buf's output."""

    line: int
    """First line."""
    column: int
    """First column."""
    end_line: int
    """Last line."""
    end_column: int
    """Column just past the end."""


NO_SPAN = Span(1, 1, 1, 1)
"""Where buf points when an element has no source location (a deleted top-level type)."""


class Cardinality(enum.Enum):
    """Field cardinality, as buf's ``FIELD_*_CARDINALITY`` rules see it."""

    OPTIONAL_EXPLICIT = "optional with explicit presence"
    OPTIONAL_IMPLICIT = "optional with implicit presence"
    REQUIRED = "required"
    REPEATED = "repeated"
    MAP = "map"


class FileNode:
    """One ``.proto`` file of a release."""

    __slots__ = ("_spans", "edition", "package", "path", "proto", "syntax")

    def __init__(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.proto = proto
        self.path: str = proto.name
        self.package: str = proto.package
        syntax = proto.syntax or "proto2"
        self.syntax: str = syntax
        self.edition: int = proto.edition if syntax == "editions" else 0
        self._spans: dict[tuple[int, ...], int] | None = None

    def span(self, path: tuple[int, ...] | None) -> Span | None:
        """The source span of the element at ``path``, or ``None`` when protoc recorded none."""
        if path is None:
            return None
        locs = self.proto.source_code_info.location
        if self._spans is None:
            # Index only (path -> position); Span objects are built for the few looked up.
            index: dict[tuple[int, ...], int] = {}
            for n, loc in enumerate(locs):
                # protoc lists some paths twice (e.g. options); buf takes the first
                index.setdefault(tuple(loc.path), n)
            self._spans = index
        at = self._spans.get(path)
        if at is None:
            return None
        s = locs[at].span
        if len(s) == 3:
            return Span(s[0] + 1, s[1] + 1, s[0] + 1, s[2] + 1)
        if len(s) == 4:
            return Span(s[0] + 1, s[1] + 1, s[2] + 1, s[3] + 1)
        return None


class MessageNode:
    """A message (top-level, nested, or a generated map entry)."""

    __slots__ = (
        "_fields",
        "_real_oneofs",
        "file",
        "full_name",
        "nested_name",
        "parent",
        "path",
        "proto",
    )

    def __init__(
        self,
        proto: descriptor_pb2.DescriptorProto,
        file: FileNode,
        path: tuple[int, ...],
        parent: MessageNode | None,
    ) -> None:
        self.proto = proto
        self.file = file
        self.path = path
        self.parent = parent
        self.nested_name: str = f"{parent.nested_name}.{proto.name}" if parent else proto.name
        pkg = file.package
        self.full_name: str = f"{pkg}.{self.nested_name}" if pkg else self.nested_name
        self._fields: dict[int, FieldNode] | None = None
        self._real_oneofs: frozenset[str] | None = None

    @property
    def name(self) -> str:
        """The short name."""
        return self.proto.name

    @property
    def fields(self) -> dict[int, FieldNode]:
        """Fields by number, indexed on first use (most messages of a diff are never opened)."""
        if self._fields is None:
            fn, f, path = self.full_name, self.file, self.path
            self._fields = {
                fld.number: FieldNode(fld, f, (*path, MSG_FIELD, i), self, fn)
                for i, fld in enumerate(self.proto.field)
            }
        return self._fields

    @property
    def real_oneofs(self) -> frozenset[str]:
        """Names of the message's oneofs, without proto3 ``optional``'s synthetic ones."""
        if self._real_oneofs is None:
            members: dict[int, list[bool]] = {}
            for f in self.proto.field:
                if f.HasField("oneof_index"):
                    members.setdefault(f.oneof_index, []).append(f.proto3_optional)
            self._real_oneofs = frozenset(
                o.name
                for i, o in enumerate(self.proto.oneof_decl)
                if members.get(i, [False]) != [True]
            )
        return self._real_oneofs

    @property
    def is_map_entry(self) -> bool:
        """Whether protoc generated this message for a ``map<K, V>`` field."""
        return self.proto.options.map_entry

    @property
    def json_format(self) -> int:
        """The resolved ``json_format`` feature."""
        chain = [m.options.features for m in self.options_chain() if m.options.HasField("features")]
        return _resolve(self.file, chain, "json_format")

    def span(self, *sub: int) -> Span | None:
        """The span of this message's declaration, or of its part ``sub``.

        A generated map entry has no source; like buf, point at its map field's type.
        """
        if self.is_map_entry and self.parent is not None:
            entry = "." + self.full_name
            for owner in self.parent.proto.field:
                if owner.type_name == entry:
                    i = list(self.parent.proto.field).index(owner)
                    return self.file.span((*self.parent.path, MSG_FIELD, i, FIELD_TYPE_NAME))
            return None
        return self.file.span(self.path + sub)

    def options_chain(self) -> Iterator[descriptor_pb2.DescriptorProto]:
        """This message and its enclosing messages, innermost first."""
        node: MessageNode | None = self
        while node is not None:
            yield node.proto
            node = node.parent


class FieldNode:
    """A field of a message, or an extension."""

    __slots__ = ("file", "full_name", "message", "path", "proto", "scope")

    def __init__(
        self,
        proto: descriptor_pb2.FieldDescriptorProto,
        file: FileNode,
        path: tuple[int, ...],
        message: MessageNode | None,
        scope: str,
    ) -> None:
        self.proto = proto
        self.file = file
        self.path = path
        self.message = message
        """The containing message; ``None`` for an extension."""
        self.full_name: str = f"{scope}.{proto.name}" if scope else proto.name
        self.scope = scope

    @property
    def name(self) -> str:
        """The short name."""
        return self.proto.name

    @property
    def number(self) -> int:
        """The field number."""
        return self.proto.number

    @property
    def is_extension(self) -> bool:
        """Whether this is an extension rather than a message field."""
        return bool(self.proto.extendee)

    def oneof_name(self, *, include_synthetic: bool = False) -> str | None:
        """The name of the oneof holding this field; synthetic proto3 ``optional`` ones skipped."""
        p = self.proto
        if self.message is None or not p.HasField("oneof_index"):
            return None
        if p.proto3_optional and not include_synthetic:
            return None
        return self.message.proto.oneof_decl[p.oneof_index].name

    def span(self, *sub: int) -> Span | None:
        """The span of this field's declaration, or of its part ``sub`` (e.g. the type).

        protoc records no location for the fields of a generated map entry; like buf, we
        point at the ``map<K, V>`` type of the map field that generated the entry.
        """
        msg = self.message
        if msg is not None and msg.is_map_entry and msg.parent is not None:
            entry = "." + msg.full_name
            for owner in msg.parent.fields.values():
                if owner.proto.type_name == entry:
                    return owner.file.span((*owner.path, FIELD_TYPE_NAME))
            return None
        return self.file.span(self.path + sub)

    # --- resolved semantics -------------------------------------------------------------

    def _feature(self, name: str) -> int:
        chain: list[descriptor_pb2.FeatureSet] = []
        p = self.proto
        if p.options.HasField("features"):
            chain.append(p.options.features)
        if self.message is not None:
            if p.HasField("oneof_index") and not p.proto3_optional:
                oneof = self.message.proto.oneof_decl[p.oneof_index]
                if oneof.options.HasField("features"):
                    chain.append(oneof.options.features)
            for m in self.message.options_chain():
                if m.options.HasField("features"):
                    chain.append(m.options.features)
        return _resolve(self.file, chain, name)

    @property
    def kind(self) -> int:
        """The wire kind: the declared type, with editions' delimited messages as groups."""
        t = self.proto.type
        if (
            t == _F.TYPE_MESSAGE
            and self.file.syntax == "editions"
            and self._feature("message_encoding") == _FS.DELIMITED
        ):
            return _F.TYPE_GROUP
        return t

    @property
    def has_presence(self) -> bool:
        """Whether the field tracks presence (explicit) rather than comparing with zero."""
        p = self.proto
        if p.label == _F.LABEL_REPEATED:
            return False
        if self.message is None or p.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            return True
        if p.HasField("oneof_index"):
            return True
        if self.file.syntax == "proto2":
            return True
        if self.file.syntax == "proto3":
            return False
        return self._feature("field_presence") != _FS.IMPLICIT

    def cardinality(self, schema: Schema) -> Cardinality:
        """The field's cardinality (map, repeated, required, explicit or implicit optional)."""
        p = self.proto
        if p.label == _F.LABEL_REPEATED:
            target = schema.messages.get(p.type_name.lstrip("."))
            if p.type == _F.TYPE_MESSAGE and target is not None and target.is_map_entry:
                return Cardinality.MAP
            return Cardinality.REPEATED
        if p.label == _F.LABEL_REQUIRED:
            return Cardinality.REQUIRED
        if (
            self.file.syntax == "editions"
            and self.message is not None
            and not p.HasField("oneof_index")
            and p.type not in (_F.TYPE_MESSAGE, _F.TYPE_GROUP)
            and self._feature("field_presence") == _FS.LEGACY_REQUIRED
        ):
            return Cardinality.REQUIRED
        if self.has_presence:
            return Cardinality.OPTIONAL_EXPLICIT
        return Cardinality.OPTIONAL_IMPLICIT

    @property
    def is_required(self) -> bool:
        """Whether the field is ``required`` (proto2) or ``LEGACY_REQUIRED`` (editions)."""
        p = self.proto
        if p.label == _F.LABEL_REQUIRED:
            return True
        return (
            self.file.syntax == "editions"
            and p.label != _F.LABEL_REPEATED
            and self._feature("field_presence") == _FS.LEGACY_REQUIRED
        )

    @property
    def utf8_validation(self) -> int:
        """The resolved ``utf8_validation`` feature."""
        return self._feature("utf8_validation")


class EnumValueNode:
    """One enum value."""

    __slots__ = ("enum", "index", "proto")

    def __init__(self, proto: descriptor_pb2.EnumValueDescriptorProto, enum: EnumNode, index: int):
        self.proto = proto
        self.enum = enum
        self.index = index

    @property
    def name(self) -> str:
        """The value's name."""
        return self.proto.name

    @property
    def number(self) -> int:
        """The value's number."""
        return self.proto.number

    @property
    def path(self) -> tuple[int, ...]:
        """The value's source path."""
        return (*self.enum.path, ENUM_VALUE, self.index)


class EnumNode:
    """An enum (top-level or nested)."""

    __slots__ = ("file", "full_name", "nested_name", "parent", "path", "proto", "values")

    def __init__(
        self,
        proto: descriptor_pb2.EnumDescriptorProto,
        file: FileNode,
        path: tuple[int, ...],
        parent: MessageNode | None,
    ) -> None:
        self.proto = proto
        self.file = file
        self.path = path
        self.parent = parent
        self.nested_name: str = f"{parent.nested_name}.{proto.name}" if parent else proto.name
        pkg = file.package
        self.full_name: str = f"{pkg}.{self.nested_name}" if pkg else self.nested_name
        self.values: dict[int, dict[str, EnumValueNode]] = {}
        for i, v in enumerate(proto.value):
            self.values.setdefault(v.number, {})[v.name] = EnumValueNode(v, self, i)

    @property
    def name(self) -> str:
        """The short name."""
        return self.proto.name

    def _feature(self, name: str) -> int:
        chain: list[descriptor_pb2.FeatureSet] = []
        if self.proto.options.HasField("features"):
            chain.append(self.proto.options.features)
        if self.parent is not None:
            for m in self.parent.options_chain():
                if m.options.HasField("features"):
                    chain.append(m.options.features)
        return _resolve(self.file, chain, name)

    def span(self, *sub: int) -> Span | None:
        """The span of this enum's declaration, or of its part ``sub``."""
        return self.file.span(self.path + sub)

    @property
    def is_closed(self) -> bool:
        """Whether unknown values are rejected (proto2 enums, editions ``CLOSED``)."""
        return self._feature("enum_type") == _FS.CLOSED

    @property
    def json_format(self) -> int:
        """The resolved ``json_format`` feature."""
        return self._feature("json_format")


class MethodNode:
    """One RPC."""

    __slots__ = ("path", "proto", "service")

    def __init__(
        self,
        proto: descriptor_pb2.MethodDescriptorProto,
        service: ServiceNode,
        path: tuple[int, ...],
    ) -> None:
        self.proto = proto
        self.service = service
        self.path = path

    @property
    def name(self) -> str:
        """The RPC name."""
        return self.proto.name

    @property
    def input_type(self) -> str:
        """The request message's full name, without the leading dot."""
        return self.proto.input_type.lstrip(".")

    @property
    def output_type(self) -> str:
        """The response message's full name, without the leading dot."""
        return self.proto.output_type.lstrip(".")


class ServiceNode:
    """A service and its RPCs by name."""

    __slots__ = ("file", "full_name", "methods", "path", "proto")

    def __init__(
        self, proto: descriptor_pb2.ServiceDescriptorProto, file: FileNode, path: tuple[int, ...]
    ) -> None:
        self.proto = proto
        self.file = file
        self.path = path
        pkg = file.package
        self.full_name: str = f"{pkg}.{proto.name}" if pkg else proto.name
        self.methods: dict[str, MethodNode] = {
            m.name: MethodNode(m, self, (*path, SERVICE_METHOD, i))
            for i, m in enumerate(proto.method)
        }

    @property
    def name(self) -> str:
        """The short name."""
        return self.proto.name


_LEGACY_DEFAULTS: dict[str, dict[str, int]] = {
    "proto2": {
        "field_presence": _FS.EXPLICIT,
        "enum_type": _FS.CLOSED,
        "utf8_validation": _FS.NONE,
        "message_encoding": _FS.LENGTH_PREFIXED,
        "json_format": _FS.LEGACY_BEST_EFFORT,
    },
    "proto3": {
        "field_presence": _FS.IMPLICIT,
        "enum_type": _FS.OPEN,
        "utf8_validation": _FS.VERIFY,
        "message_encoding": _FS.LENGTH_PREFIXED,
        "json_format": _FS.ALLOW,
    },
    # Edition 2023 and 2024 agree on every feature the rules look at.
    "editions": {
        "field_presence": _FS.EXPLICIT,
        "enum_type": _FS.OPEN,
        "utf8_validation": _FS.VERIFY,
        "message_encoding": _FS.LENGTH_PREFIXED,
        "json_format": _FS.ALLOW,
    },
}


def _resolve(file: FileNode, chain: Iterable[descriptor_pb2.FeatureSet], name: str) -> int:
    if file.syntax != "editions":
        return _LEGACY_DEFAULTS[file.syntax][name]
    for fs in chain:
        if fs.HasField(name):  # type: ignore[arg-type]
            value: int = getattr(fs, name)
            return value
    fopts = file.proto.options
    if fopts.HasField("features") and fopts.features.HasField(name):  # type: ignore[arg-type]
        value = getattr(fopts.features, name)
        return value
    return _LEGACY_DEFAULTS["editions"][name]


class Schema:
    """Every element of one release, indexed by the keys the pairing layer uses.

    Args:
        files: the release's own files (imports already removed).
        imports: files the release imports but does not own (well-known types and the
            like); used only to resolve referenced types.
    """

    def __init__(
        self,
        files: Iterable[descriptor_pb2.FileDescriptorProto],
        imports: Iterable[descriptor_pb2.FileDescriptorProto] = (),
    ) -> None:
        self.files: dict[str, FileNode] = {}
        self.messages: dict[str, MessageNode] = {}
        self.enums: dict[str, EnumNode] = {}
        self.services: dict[str, ServiceNode] = {}
        self.extensions: dict[str, dict[int, FieldNode]] = {}
        self.file_messages: dict[str, dict[str, MessageNode]] = {}
        self.file_enums: dict[str, dict[str, EnumNode]] = {}
        self.file_extensions: dict[str, dict[str, FieldNode]] = {}
        self.file_services: dict[str, dict[str, ServiceNode]] = {}
        self.imported_messages: dict[str, MessageNode] = {}
        self.imported_enums: dict[str, EnumNode] = {}
        for fdp in files:
            self._add_file(fdp)
        for fdp in imports:
            self._add_import(fdp)

    def _add_import(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        f = FileNode(fdp)
        stack: list[tuple[descriptor_pb2.DescriptorProto, MessageNode | None, tuple[int, ...]]]
        stack = [(m, None, (FILE_MESSAGE, i)) for i, m in enumerate(fdp.message_type)]
        for i, e in enumerate(fdp.enum_type):
            en = EnumNode(e, f, (FILE_ENUM, i), None)
            self.imported_enums[en.full_name] = en
        while stack:
            mp, parent, path = stack.pop()
            m = MessageNode(mp, f, path, parent)
            self.imported_messages[m.full_name] = m
            for i, n in enumerate(mp.nested_type):
                stack.append((n, m, (*path, MSG_NESTED, i)))
            for i, e in enumerate(mp.enum_type):
                en = EnumNode(e, f, (*path, MSG_ENUM, i), m)
                self.imported_enums[en.full_name] = en

    def _add_file(self, fdp: descriptor_pb2.FileDescriptorProto) -> None:
        f = FileNode(fdp)
        self.files[f.path] = f
        fmsgs: dict[str, MessageNode] = {}
        fenums: dict[str, EnumNode] = {}
        fexts: dict[str, FieldNode] = {}
        self.file_messages[f.path] = fmsgs
        self.file_enums[f.path] = fenums
        self.file_extensions[f.path] = fexts
        pkg = f.package
        for i, e in enumerate(fdp.enum_type):
            en = EnumNode(e, f, (FILE_ENUM, i), None)
            self.enums[en.full_name] = en
            fenums[en.nested_name] = en
        for i, x in enumerate(fdp.extension):
            self._add_extension(FieldNode(x, f, (FILE_EXTENSION, i), None, pkg), fexts, x.name)
        stack: list[tuple[descriptor_pb2.DescriptorProto, MessageNode | None, tuple[int, ...]]]
        stack = [(m, None, (FILE_MESSAGE, i)) for i, m in enumerate(fdp.message_type)]
        while stack:
            mp, parent, path = stack.pop()
            m = MessageNode(mp, f, path, parent)
            self.messages[m.full_name] = m
            fmsgs[m.nested_name] = m
            fn = m.full_name
            for i, n in enumerate(mp.nested_type):
                stack.append((n, m, (*path, MSG_NESTED, i)))
            for i, e in enumerate(mp.enum_type):
                en = EnumNode(e, f, (*path, MSG_ENUM, i), m)
                self.enums[en.full_name] = en
                fenums[en.nested_name] = en
            for i, x in enumerate(mp.extension):
                node = FieldNode(x, f, (*path, MSG_EXTENSION, i), None, fn)
                self._add_extension(node, fexts, f"{m.nested_name}.{x.name}")
        fsvcs: dict[str, ServiceNode] = {}
        self.file_services[f.path] = fsvcs
        for i, s in enumerate(fdp.service):
            svc = ServiceNode(s, f, (FILE_SERVICE, i))
            self.services[svc.full_name] = svc
            fsvcs[svc.name] = svc

    def _add_extension(self, node: FieldNode, fexts: dict[str, FieldNode], nested: str) -> None:
        self.extensions.setdefault(node.proto.extendee.lstrip("."), {})[node.number] = node
        fexts[nested] = node

    def message(self, full_name: str) -> MessageNode | None:
        """A message of this release or of its imports, by full name."""
        return self.messages.get(full_name) or self.imported_messages.get(full_name)

    def enum(self, full_name: str) -> EnumNode | None:
        """An enum of this release or of its imports, by full name."""
        return self.enums.get(full_name) or self.imported_enums.get(full_name)

    def packages(self) -> dict[str, list[FileNode]]:
        """Files grouped by package."""
        out: dict[str, list[FileNode]] = {}
        for f in self.files.values():
            out.setdefault(f.package, []).append(f)
        return out


def _top(m: MessageNode) -> MessageNode:
    while m.parent is not None:
        m = m.parent
    return m


def _file_context(f: FileNode) -> tuple[str, int, str, bytes]:
    return (f.syntax, f.edition, f.package, f.proto.options.SerializeToString(deterministic=True))


def _has_enum_field(m: descriptor_pb2.DescriptorProto) -> bool:
    return any(f.type == _F.TYPE_ENUM for f in m.field) or any(
        _has_enum_field(n) for n in m.nested_type
    )


def identical(prev: MessageNode, cur: MessageNode, cache: dict[str, bool]) -> bool:
    """Whether nothing a rule or the change list looks at can differ inside this message pair.

    True when the top-level messages enclosing the pair serialize to the same bytes and
    their files agree on syntax, edition, package and options, so every field and nested
    type is declared the same way in the same context. Most messages of a release pair are
    identical, and skipping them is what keeps large diffs fast. Enum-typed fields outside
    proto3 are never skipped, because their implicit default is the enum's first value,
    which is declared elsewhere.

    Args:
        prev: a message of the older release.
        cur: the message with the same full name in the newer release.
        cache: memo shared across one comparison, keyed by top-level full name.
    """
    tp, tc = _top(prev), _top(cur)
    key = tc.full_name
    hit = cache.get(key)
    if hit is not None:
        return hit
    same = (
        tp.full_name == tc.full_name
        and _file_context(tp.file) == _file_context(tc.file)
        and tp.proto.SerializeToString(deterministic=True)
        == tc.proto.SerializeToString(deterministic=True)
        and (tc.file.syntax == "proto3" or not _has_enum_field(tc.proto))
    )
    cache[key] = same
    return same


CPP_FEATURES = 1000
"""``(pb.cpp)``: the FeatureSet extension holding C++ features (``string_type`` = 2)."""
JAVA_FEATURES = 1001
"""``(pb.java)``: the FeatureSet extension holding Java features (``utf8_validation`` = 2)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _scalar_in(data: bytes, number: int) -> int | None:
    """The last varint field ``number`` in serialized message ``data`` (None if absent)."""
    pos, found = 0, None
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            wire = key & 7
            if wire == 0:
                value, pos = _varint(data, pos)
                if key >> 3 == number:
                    found = value
            elif wire == 1:
                pos += 8
            elif wire == 2:
                size, pos = _varint(data, pos)
                pos += size
            elif wire == 5:
                pos += 4
            else:
                return found
    except IndexError:
        return found
    return found


def language_feature(fs: descriptor_pb2.FeatureSet, extension: int, number: int) -> int | None:
    """A language feature such as ``(pb.cpp).string_type`` set in ``fs``, or None.

    The C++ and Java feature extensions are not linked into the Python runtime, so protoc's
    output keeps them as unknown fields; they are read from the raw bytes.
    """
    from google.protobuf import unknown_fields  # imported here: rarely needed

    found = None
    ufs = unknown_fields.UnknownFieldSet(fs)
    for i in range(len(ufs)):
        field = ufs[i]
        if field.field_number == extension and field.wire_type == 2:
            value = _scalar_in(bytes(field.data), number)
            if value is not None:
                found = value
    return found


def resolve_language_feature(f: FieldNode, extension: int, number: int) -> int | None:
    """A language feature resolved for field ``f`` (the field, then its file), or None."""
    for opts in (f.proto.options, f.file.proto.options):
        if opts.HasField("features"):
            value = language_feature(opts.features, extension, number)
            if value is not None:
                return value
    return None

"""Shared ground of the rule handlers: the sink they report to, the pair they read, helpers.

A handler never decides which category its rule belongs to (that is :mod:`compat._registry`)
and never pairs elements itself (that is :mod:`compat._pairing`). It only looks at the pair it
is given and reports through the :class:`Sink`. Messages and locations follow
``buf breaking`` so that the two tools can be compared finding by finding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from google.protobuf import descriptor_pb2

from compat._index import (
    Cardinality,
    EnumNode,
    FieldNode,
    FileNode,
    MessageNode,
    Span,
)
from compat._pairing import Pairing

__all__ = [
    "CARD_WIRE",
    "CARD_WIRE_JSON",
    "ENUM_RANGE_MAX",
    "INT64_TYPES",
    "KIND_NAMES",
    "NAMED_KINDS",
    "WIRE_GROUPS",
    "WIRE_JSON_GROUPS",
    "Handler",
    "Sink",
    "check_ranges",
    "deleted_location",
    "describe_field",
    "enum_name",
    "field_subject",
    "msg_max",
]

_F = descriptor_pb2.FieldDescriptorProto
_FS = descriptor_pb2.FeatureSet


class Sink(Protocol):
    """Where a handler reports; the engine binds it to one rule."""

    def add(
        self,
        file: FileNode | None,
        spans: Sequence[Span | None],
        message: str,
        subject: str,
        *,
        against: str = "",
    ) -> None:
        """Report one finding.

        Args:
            file: the file in the newer release; ``None`` when there is none (deleted file).
            spans: candidate locations, first non-``None`` wins (buf's backup locations).
            message: what changed.
            subject: the element, as a stable key.
            against: the file in the older release.
        """


N = TypeVar("N")

Handler = Callable[[Sink, N, N, Pairing], None]
"""A rule's check of one pair: ``(sink, current, previous, pairing)``. Rules on the two
whole releases get the two schemas as their pair."""


# --- helpers ------------------------------------------------------------------------------

KIND_NAMES: dict[int, str] = {
    _F.TYPE_DOUBLE: "double",
    _F.TYPE_FLOAT: "float",
    _F.TYPE_INT64: "int64",
    _F.TYPE_UINT64: "uint64",
    _F.TYPE_INT32: "int32",
    _F.TYPE_FIXED64: "fixed64",
    _F.TYPE_FIXED32: "fixed32",
    _F.TYPE_BOOL: "bool",
    _F.TYPE_STRING: "string",
    _F.TYPE_GROUP: "group",
    _F.TYPE_MESSAGE: "message",
    _F.TYPE_BYTES: "bytes",
    _F.TYPE_UINT32: "uint32",
    _F.TYPE_ENUM: "enum",
    _F.TYPE_SFIXED32: "sfixed32",
    _F.TYPE_SFIXED64: "sfixed64",
    _F.TYPE_SINT32: "sint32",
    _F.TYPE_SINT64: "sint64",
}

# https://protobuf.dev/programming-guides/proto3/#updating — kinds that decode each other.
WIRE_GROUPS: dict[int, int] = {
    _F.TYPE_INT32: 1,
    _F.TYPE_INT64: 1,
    _F.TYPE_UINT32: 1,
    _F.TYPE_UINT64: 1,
    _F.TYPE_BOOL: 1,
    _F.TYPE_SINT32: 2,
    _F.TYPE_SINT64: 2,
    # string and bytes share a wire type, but only string -> bytes is always safe.
    _F.TYPE_STRING: 3,
    _F.TYPE_BYTES: 4,
    _F.TYPE_FIXED32: 5,
    _F.TYPE_SFIXED32: 5,
    _F.TYPE_FIXED64: 6,
    _F.TYPE_SFIXED64: 6,
    _F.TYPE_DOUBLE: 7,
    _F.TYPE_FLOAT: 8,
    _F.TYPE_GROUP: 9,
    _F.TYPE_MESSAGE: 10,
    _F.TYPE_ENUM: 11,
}

# The intersection of wire and JSON compatibility.
WIRE_JSON_GROUPS: dict[int, int] = {
    _F.TYPE_INT32: 1,
    _F.TYPE_UINT32: 1,
    _F.TYPE_INT64: 2,
    _F.TYPE_UINT64: 2,
    _F.TYPE_FIXED32: 3,
    _F.TYPE_SFIXED32: 3,
    _F.TYPE_FIXED64: 4,
    _F.TYPE_SFIXED64: 4,
    _F.TYPE_BOOL: 5,
    _F.TYPE_SINT32: 6,
    _F.TYPE_SINT64: 7,
    _F.TYPE_STRING: 8,
    _F.TYPE_BYTES: 9,
    _F.TYPE_DOUBLE: 10,
    _F.TYPE_FLOAT: 11,
    _F.TYPE_GROUP: 12,
    _F.TYPE_MESSAGE: 13,
    _F.TYPE_ENUM: 14,
}

CARD_WIRE = {
    Cardinality.OPTIONAL_EXPLICIT: 1,
    Cardinality.OPTIONAL_IMPLICIT: 1,
    Cardinality.REQUIRED: 2,
    Cardinality.REPEATED: 3,
    Cardinality.MAP: 3,
}
CARD_WIRE_JSON = {**CARD_WIRE, Cardinality.MAP: 4}

NAMED_KINDS = (_F.TYPE_MESSAGE, _F.TYPE_ENUM, _F.TYPE_GROUP)
INT64_TYPES = (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_UINT64, _F.TYPE_FIXED64, _F.TYPE_SFIXED64)

MESSAGE_RANGE_MAX = 536870911
MESSAGE_SET_RANGE_MAX = 2147483646
ENUM_RANGE_MAX = 2147483647


def enum_name(wrapper: Any, value: int) -> str:
    """The name of ``value`` in a generated enum type (``UNKNOWN`` if it has none)."""
    v = wrapper.DESCRIPTOR.values_by_number.get(value)
    return str(v.name) if v is not None else str(value)


def field_subject(f: FieldNode) -> str:
    """The stable key of a field: ``<message or extendee>#<number>``."""
    owner = f.proto.extendee.lstrip(".") if f.is_extension else f.scope
    return f"{owner}#{f.number}"


def describe_field(f: FieldNode, *, with_name: bool = True) -> str:
    """Buf's wording: ``Field "3" with name "x" on message "M"``."""
    if f.is_extension:
        kind, owner, name = "Extension", f.proto.extendee.lstrip("."), f.full_name
    else:
        kind, owner, name = "Field", f.message.name if f.message else "", f.name
    named = f' with name "{name}"' if with_name else ""
    return f'{kind} "{f.number}"{named} on message "{owner}"'


def _tag_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1] + 1:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _missing(start: int, end: int, have: list[tuple[int, int]]) -> list[tuple[int, int]]:
    missing: list[tuple[int, int]] = []
    pos = start
    for s, e in have:
        if e < pos:
            continue
        if s > end:
            break
        if s > pos:
            missing.append((pos, s - 1))
        pos = e + 1
        if pos > end:
            break
    if pos <= end:
        missing.append((pos, end))
    return missing


def _range_text(start: int, end: int, maximum: int) -> str:
    if start == end:
        return f"[{start}]"
    if end == maximum:
        return f"[{start},max]"
    return f"[{start},{end}]"


def check_ranges(
    out: Sink,
    kind: str,
    element: str,
    name: str,
    file: FileNode,
    node: MessageNode | EnumNode,
    subject: str,
    against: str,
    previous: Sequence[tuple[int, int]],
    current: Sequence[tuple[int, int]],
    maximum: int,
) -> None:
    """Report each previous (inclusive) range not fully covered by the current ranges."""
    if not previous:
        return
    have = _tag_ranges(current)
    for start, end in previous:
        gone = _missing(start, end, have)
        if gone:
            removed = ", ".join(_range_text(s, e, maximum) for s, e in gone)
            out.add(
                file,
                [node.span()],
                f'Previously present {kind} range "{_range_text(start, end, maximum)}" on '
                f'{element} "{name}" is missing values: {removed} were removed.',
                subject,
                against=against,
            )


def msg_max(m: MessageNode) -> int:
    return MESSAGE_SET_RANGE_MAX if m.proto.options.message_set_wire_format else MESSAGE_RANGE_MAX


def deleted_location(
    file: FileNode, nested_name: str, messages: dict[str, MessageNode]
) -> Span | None:
    """Where buf reports a deleted nested element: its closest surviving enclosing message.

    Args:
        file: the file in the newer release the element was in.
        nested_name: the element's name within its package (``Outer.Inner.Gone``).
        messages: nested name → message, for the scope that is searched.

    Returns:
        The span of the enclosing message, or ``None`` for a top-level element.
    """
    parts = nested_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        m = messages.get(".".join(parts[:i]))
        if m is not None:
            return m.span()
    return None

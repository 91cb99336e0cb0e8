"""The one place that lists every rule and assigns it to categories.

A :class:`RuleSpec` is ``(ID, purpose, handler)`` plus the kind of pair its handler takes.
Which categories a rule belongs to is decided here, never inside a handler, so that the
category lattice (``WIRE`` ⊂ ``WIRE_JSON`` ⊂ ``PACKAGE`` ⊂ ``FILE``, buf's v2
configuration) can be read and reviewed in one table.

Handlers are typed per element kind: a rule is registered through the method of its kind
(:meth:`_Table.field` takes a handler of field pairs, :meth:`_Table.message` one of message
pairs...), and the engine gets them back in a :class:`RuleSet` of typed lists, so mypy
checks that each handler receives the pairs it is written for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, TypeVar

from compat import _rules as r
from compat import _rules_types as t
from compat._index import (
    EnumNode,
    FieldNode,
    FileNode,
    MessageNode,
    MethodNode,
    Schema,
    ServiceNode,
)
from compat._model import DEFAULT_CATEGORIES, Category
from compat._pairing import ValueGroup
from compat._rulebase import Handler

__all__ = ["RULES", "RuleSet", "RuleSpec", "rules_for", "select"]

PairKind = Literal["global", "file", "message", "field", "enum", "enum_value", "service", "method"]

N = TypeVar("N")


@dataclasses.dataclass(frozen=True)
class RuleSpec(Generic[N]):
    """One breaking-change rule."""

    id: str
    """Stable ID; buf's ID for every rule buf has."""
    purpose: str
    """One sentence: what the rule detects."""
    kind: PairKind
    """What the handler compares: a pair of files, messages, fields... or whole releases."""
    handler: Handler[N]
    """The check, called on every pair of its kind."""
    categories: frozenset[Category]
    """The categories that include this rule."""

    @property
    def category(self) -> Category:
        """The least strict category that includes the rule: what a finding breaks."""
        for c in Category:  # declared from least to most strict
            if c in self.categories:
                return c
        raise AssertionError(f"rule {self.id} is in no category")


@dataclasses.dataclass
class RuleSet:
    """Rules grouped by the kind of pair their handlers take, in registry order."""

    releases: list[RuleSpec[Schema]] = dataclasses.field(default_factory=list)
    """Rules on the two whole releases."""
    files: list[RuleSpec[FileNode]] = dataclasses.field(default_factory=list)
    """Rules on file pairs."""
    messages: list[RuleSpec[MessageNode]] = dataclasses.field(default_factory=list)
    """Rules on message pairs."""
    fields: list[RuleSpec[FieldNode]] = dataclasses.field(default_factory=list)
    """Rules on field and extension pairs."""
    enums: list[RuleSpec[EnumNode]] = dataclasses.field(default_factory=list)
    """Rules on enum pairs."""
    enum_values: list[RuleSpec[ValueGroup]] = dataclasses.field(default_factory=list)
    """Rules on enum value pairs (the aliases of one number)."""
    services: list[RuleSpec[ServiceNode]] = dataclasses.field(default_factory=list)
    """Rules on service pairs."""
    methods: list[RuleSpec[MethodNode]] = dataclasses.field(default_factory=list)
    """Rules on RPC pairs."""

    def only(self, ids: set[str]) -> RuleSet:
        """The rules whose ID is in ``ids``."""

        def keep(specs: list[RuleSpec[N]]) -> list[RuleSpec[N]]:
            return [s for s in specs if s.id in ids]

        return RuleSet(
            keep(self.releases),
            keep(self.files),
            keep(self.messages),
            keep(self.fields),
            keep(self.enums),
            keep(self.enum_values),
            keep(self.services),
            keep(self.methods),
        )


def _purpose(handler: Callable[..., Any]) -> str:
    doc = (handler.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


class _Table:
    """Builds the registry: one method per pair kind, each typed for that kind's handlers."""

    def __init__(self) -> None:
        self.order: dict[str, RuleSpec[Any]] = {}
        self.kinds = RuleSet()

    def _add(
        self,
        into: list[RuleSpec[N]],
        kind: PairKind,
        rid: str,
        handler: Handler[N],
        categories: tuple[Category, ...],
    ) -> None:
        spec = RuleSpec(rid, _purpose(handler), kind, handler, frozenset(categories))
        into.append(spec)
        self.order[rid] = spec

    def releases(self, rid: str, handler: Handler[Schema], *categories: Category) -> None:
        self._add(self.kinds.releases, "global", rid, handler, categories)

    def file(self, rid: str, handler: Handler[FileNode], *categories: Category) -> None:
        self._add(self.kinds.files, "file", rid, handler, categories)

    def message(self, rid: str, handler: Handler[MessageNode], *categories: Category) -> None:
        self._add(self.kinds.messages, "message", rid, handler, categories)

    def field(self, rid: str, handler: Handler[FieldNode], *categories: Category) -> None:
        self._add(self.kinds.fields, "field", rid, handler, categories)

    def enum(self, rid: str, handler: Handler[EnumNode], *categories: Category) -> None:
        self._add(self.kinds.enums, "enum", rid, handler, categories)

    def enum_value(self, rid: str, handler: Handler[ValueGroup], *categories: Category) -> None:
        self._add(self.kinds.enum_values, "enum_value", rid, handler, categories)

    def service(self, rid: str, handler: Handler[ServiceNode], *categories: Category) -> None:
        self._add(self.kinds.services, "service", rid, handler, categories)

    def method(self, rid: str, handler: Handler[MethodNode], *categories: Category) -> None:
        self._add(self.kinds.methods, "method", rid, handler, categories)


_W, _WJ, _P, _FL = Category.WIRE, Category.WIRE_JSON, Category.PACKAGE, Category.FILE

# In buf's documentation order. Purposes come from the handlers' docstrings.
_T = _Table()
_T.file("ENUM_NO_DELETE", r.enum_no_delete, _FL)
_T.file("EXTENSION_NO_DELETE", r.extension_no_delete, _FL)
_T.releases("FILE_NO_DELETE", r.file_no_delete, _FL)
_T.file("MESSAGE_NO_DELETE", r.message_no_delete, _FL)
_T.file("SERVICE_NO_DELETE", r.service_no_delete, _FL)
_T.enum("ENUM_SAME_TYPE", r.enum_same_type, _FL, _P)
_T.enum("ENUM_VALUE_NO_DELETE", r.enum_value_no_delete, _FL, _P)
_T.message("EXTENSION_MESSAGE_NO_DELETE", t.extension_message_no_delete, _FL, _P)
_T.message("FIELD_NO_DELETE", t.field_no_delete, _FL, _P)
_T.field("FIELD_SAME_CARDINALITY", t.field_same_cardinality, _FL, _P)
_T.field("FIELD_SAME_CPP_STRING_TYPE", t.field_same_cpp_string_type, _FL, _P)
_T.field("FIELD_SAME_JAVA_UTF8_VALIDATION", t.field_same_java_utf8_validation, _FL, _P)
_T.field("FIELD_SAME_JSTYPE", t.field_same_jstype, _FL, _P)
_T.field("FIELD_SAME_TYPE", t.field_same_type, _FL, _P)
_T.field("FIELD_SAME_UTF8_VALIDATION", t.field_same_utf8_validation, _FL, _P)
for _rid, _handler in r.FILE_OPTION_RULES.items():
    _T.file(_rid, _handler, _FL, _P)
_T.file("FILE_SAME_SYNTAX", r.file_same_syntax, _FL, _P)
_T.message(
    "MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR",
    t.message_no_remove_standard_descriptor_accessor,
    _FL,
    _P,
)
_T.message("ONEOF_NO_DELETE", t.oneof_no_delete, _FL, _P)
_T.service("RPC_NO_DELETE", r.rpc_no_delete, _FL, _P)
_T.enum("ENUM_SAME_JSON_FORMAT", r.enum_same_json_format, _FL, _P, _WJ)
_T.enum_value("ENUM_VALUE_SAME_NAME", r.enum_value_same_name, _FL, _P, _WJ)
_T.field("FIELD_SAME_JSON_NAME", t.field_same_json_name, _FL, _P, _WJ)
_T.field("FIELD_SAME_NAME", t.field_same_name, _FL, _P, _WJ)
_T.message("MESSAGE_SAME_JSON_FORMAT", t.message_same_json_format, _FL, _P, _WJ)
_T.field("FIELD_SAME_DEFAULT", t.field_same_default, _FL, _P, _WJ, _W)
_T.field("FIELD_SAME_ONEOF", t.field_same_oneof, _FL, _P, _WJ, _W)
_T.file("FILE_SAME_PACKAGE", r.file_same_package, _FL, _P, _WJ, _W)
_T.message("MESSAGE_SAME_REQUIRED_FIELDS", t.message_same_required_fields, _FL, _P, _WJ, _W)
_T.enum("RESERVED_ENUM_NO_DELETE", r.reserved_enum_no_delete, _FL, _P, _WJ, _W)
_T.message("RESERVED_MESSAGE_NO_DELETE", t.reserved_message_no_delete, _FL, _P, _WJ, _W)
_T.method("RPC_SAME_CLIENT_STREAMING", r.rpc_same_client_streaming, _FL, _P, _WJ, _W)
_T.method("RPC_SAME_IDEMPOTENCY_LEVEL", r.rpc_same_idempotency_level, _FL, _P, _WJ, _W)
_T.method("RPC_SAME_REQUEST_TYPE", r.rpc_same_request_type, _FL, _P, _WJ, _W)
_T.method("RPC_SAME_RESPONSE_TYPE", r.rpc_same_response_type, _FL, _P, _WJ, _W)
_T.method("RPC_SAME_SERVER_STREAMING", r.rpc_same_server_streaming, _FL, _P, _WJ, _W)
_T.releases("PACKAGE_ENUM_NO_DELETE", r.package_enum_no_delete, _P)
_T.releases("PACKAGE_EXTENSION_NO_DELETE", r.package_extension_no_delete, _P)
_T.releases("PACKAGE_MESSAGE_NO_DELETE", r.package_message_no_delete, _P)
_T.releases("PACKAGE_NO_DELETE", r.package_no_delete, _P)
_T.releases("PACKAGE_SERVICE_NO_DELETE", r.package_service_no_delete, _P)
_T.enum(
    "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", r.enum_value_no_delete_unless_name_reserved, _WJ
)
_T.message("FIELD_NO_DELETE_UNLESS_NAME_RESERVED", t.field_no_delete_unless_name_reserved, _WJ)
_T.field("FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", t.field_wire_json_compatible_cardinality, _WJ)
_T.field("FIELD_WIRE_JSON_COMPATIBLE_TYPE", t.field_wire_json_compatible_type, _WJ)
_T.enum(
    "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
    r.enum_value_no_delete_unless_number_reserved,
    _WJ,
    _W,
)
_T.message(
    "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", t.field_no_delete_unless_number_reserved, _WJ, _W
)
_T.field("FIELD_WIRE_COMPATIBLE_CARDINALITY", t.field_wire_compatible_cardinality, _W)
_T.field("FIELD_WIRE_COMPATIBLE_TYPE", t.field_wire_compatible_type, _W)

RULES: dict[str, RuleSpec[Any]] = _T.order
"""Every rule by ID, in buf's documentation order."""


def _selected(
    categories: Iterable[Category], include: Iterable[str], exclude: Iterable[str]
) -> set[str]:
    cats = set(categories)
    inc, exc = set(include), set(exclude)
    unknown = sorted((inc | exc) - RULES.keys())
    if unknown:
        raise ValueError(f"unknown rule ID(s): {', '.join(unknown)}")
    return {
        spec.id
        for spec in RULES.values()
        if (spec.categories & cats or spec.id in inc) and spec.id not in exc
    }


def rules_for(
    categories: Iterable[Category] = DEFAULT_CATEGORIES,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[RuleSpec[Any]]:
    """The rules to run: those in any of ``categories``, plus ``include``, minus ``exclude``.

    Args:
        categories: categories whose rules run (as buf's ``use``).
        include: extra rule IDs.
        exclude: rule IDs never to run (as buf's ``except``).

    Returns:
        The selected specs, in registry order.

    Raises:
        ValueError: an ID in ``include`` or ``exclude`` names no rule.
    """
    ids = _selected(categories, include, exclude)
    return [spec for spec in RULES.values() if spec.id in ids]


def select(
    categories: Iterable[Category] = DEFAULT_CATEGORIES,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> RuleSet:
    """The same selection as :func:`rules_for`, grouped by pair kind for the engine.

    Raises:
        ValueError: an ID in ``include`` or ``exclude`` names no rule.
    """
    return _T.kinds.only(_selected(categories, include, exclude))

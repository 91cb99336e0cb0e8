"""The one place that lists every rule and assigns it to categories.

A :class:`RuleSpec` is ``(ID, purpose, handler)`` plus the kind of pair its handler takes.
Which categories a rule belongs to is decided here, in :data:`_CATEGORIES`, never inside a
handler, so that the category lattice (``WIRE`` ⊂ ``WIRE_JSON`` ⊂ ``PACKAGE`` ⊂ ``FILE``,
buf's v2 configuration) can be read and reviewed in one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Literal

from compat import _rules as r
from compat import _rules_types as t
from compat._model import Category

__all__ = ["RULES", "RuleSpec", "rules_for"]

PairKind = Literal["global", "file", "message", "field", "enum", "enum_value", "service", "method"]


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """One breaking-change rule."""

    id: str
    """Stable ID; buf's ID for every rule buf has."""
    purpose: str
    """One sentence: what the rule detects."""
    kind: PairKind
    """What the handler compares: a pair of files, messages, fields... or whole releases."""
    handler: Callable[..., None]
    """The check. Signature ``(sink, current, previous, pair)``; ``(sink, pair)`` for global."""
    categories: frozenset[Category]
    """The categories that include this rule."""

    @property
    def category(self) -> Category:
        """The least strict category that includes the rule: what a finding breaks."""
        for c in Category:  # declared from least to most strict
            if c in self.categories:
                return c
        raise AssertionError(f"rule {self.id} is in no category")


_W, _WJ, _P, _FL = Category.WIRE, Category.WIRE_JSON, Category.PACKAGE, Category.FILE

# (ID, kind, handler, categories). Purposes come from the handlers' docstrings.
_TABLE: list[tuple[str, PairKind, Callable[..., None], tuple[Category, ...]]] = [
    ("ENUM_NO_DELETE", "file", r.enum_no_delete, (_FL,)),
    ("EXTENSION_NO_DELETE", "file", r.extension_no_delete, (_FL,)),
    ("FILE_NO_DELETE", "global", r.file_no_delete, (_FL,)),
    ("MESSAGE_NO_DELETE", "file", r.message_no_delete, (_FL,)),
    ("SERVICE_NO_DELETE", "file", r.service_no_delete, (_FL,)),
    ("ENUM_SAME_TYPE", "enum", r.enum_same_type, (_FL, _P)),
    ("ENUM_VALUE_NO_DELETE", "enum", r.enum_value_no_delete, (_FL, _P)),
    ("EXTENSION_MESSAGE_NO_DELETE", "message", t.extension_message_no_delete, (_FL, _P)),
    ("FIELD_NO_DELETE", "message", t.field_no_delete, (_FL, _P)),
    ("FIELD_SAME_CARDINALITY", "field", t.field_same_cardinality, (_FL, _P)),
    ("FIELD_SAME_CPP_STRING_TYPE", "field", t.field_same_cpp_string_type, (_FL, _P)),
    ("FIELD_SAME_JAVA_UTF8_VALIDATION", "field", t.field_same_java_utf8_validation, (_FL, _P)),
    ("FIELD_SAME_JSTYPE", "field", t.field_same_jstype, (_FL, _P)),
    ("FIELD_SAME_TYPE", "field", t.field_same_type, (_FL, _P)),
    ("FIELD_SAME_UTF8_VALIDATION", "field", t.field_same_utf8_validation, (_FL, _P)),
    *((rid, "file", h, (_FL, _P)) for rid, h in r.FILE_OPTION_RULES.items()),
    ("FILE_SAME_SYNTAX", "file", r.file_same_syntax, (_FL, _P)),
    (
        "MESSAGE_NO_REMOVE_STANDARD_DESCRIPTOR_ACCESSOR",
        "message",
        t.message_no_remove_standard_descriptor_accessor,
        (_FL, _P),
    ),
    ("ONEOF_NO_DELETE", "message", t.oneof_no_delete, (_FL, _P)),
    ("RPC_NO_DELETE", "service", r.rpc_no_delete, (_FL, _P)),
    ("ENUM_SAME_JSON_FORMAT", "enum", r.enum_same_json_format, (_FL, _P, _WJ)),
    ("ENUM_VALUE_SAME_NAME", "enum_value", r.enum_value_same_name, (_FL, _P, _WJ)),
    ("FIELD_SAME_JSON_NAME", "field", t.field_same_json_name, (_FL, _P, _WJ)),
    ("FIELD_SAME_NAME", "field", t.field_same_name, (_FL, _P, _WJ)),
    ("MESSAGE_SAME_JSON_FORMAT", "message", t.message_same_json_format, (_FL, _P, _WJ)),
    ("FIELD_SAME_DEFAULT", "field", t.field_same_default, (_FL, _P, _WJ, _W)),
    ("FIELD_SAME_ONEOF", "field", t.field_same_oneof, (_FL, _P, _WJ, _W)),
    ("FILE_SAME_PACKAGE", "file", r.file_same_package, (_FL, _P, _WJ, _W)),
    (
        "MESSAGE_SAME_REQUIRED_FIELDS",
        "message",
        t.message_same_required_fields,
        (_FL, _P, _WJ, _W),
    ),
    ("RESERVED_ENUM_NO_DELETE", "enum", r.reserved_enum_no_delete, (_FL, _P, _WJ, _W)),
    ("RESERVED_MESSAGE_NO_DELETE", "message", t.reserved_message_no_delete, (_FL, _P, _WJ, _W)),
    ("RPC_SAME_CLIENT_STREAMING", "method", r.rpc_same_client_streaming, (_FL, _P, _WJ, _W)),
    ("RPC_SAME_IDEMPOTENCY_LEVEL", "method", r.rpc_same_idempotency_level, (_FL, _P, _WJ, _W)),
    ("RPC_SAME_REQUEST_TYPE", "method", r.rpc_same_request_type, (_FL, _P, _WJ, _W)),
    ("RPC_SAME_RESPONSE_TYPE", "method", r.rpc_same_response_type, (_FL, _P, _WJ, _W)),
    ("RPC_SAME_SERVER_STREAMING", "method", r.rpc_same_server_streaming, (_FL, _P, _WJ, _W)),
    ("PACKAGE_ENUM_NO_DELETE", "global", r.package_enum_no_delete, (_P,)),
    ("PACKAGE_EXTENSION_NO_DELETE", "global", r.package_extension_no_delete, (_P,)),
    ("PACKAGE_MESSAGE_NO_DELETE", "global", r.package_message_no_delete, (_P,)),
    ("PACKAGE_NO_DELETE", "global", r.package_no_delete, (_P,)),
    ("PACKAGE_SERVICE_NO_DELETE", "global", r.package_service_no_delete, (_P,)),
    (
        "ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED",
        "enum",
        r.enum_value_no_delete_unless_name_reserved,
        (_WJ,),
    ),
    (
        "FIELD_NO_DELETE_UNLESS_NAME_RESERVED",
        "message",
        t.field_no_delete_unless_name_reserved,
        (_WJ,),
    ),
    (
        "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY",
        "field",
        t.field_wire_json_compatible_cardinality,
        (_WJ,),
    ),
    ("FIELD_WIRE_JSON_COMPATIBLE_TYPE", "field", t.field_wire_json_compatible_type, (_WJ,)),
    (
        "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED",
        "enum",
        r.enum_value_no_delete_unless_number_reserved,
        (_WJ, _W),
    ),
    (
        "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
        "message",
        t.field_no_delete_unless_number_reserved,
        (_WJ, _W),
    ),
    (
        "FIELD_WIRE_COMPATIBLE_CARDINALITY",
        "field",
        t.field_wire_compatible_cardinality,
        (_W,),
    ),
    ("FIELD_WIRE_COMPATIBLE_TYPE", "field", t.field_wire_compatible_type, (_W,)),
]


def _purpose(handler: Callable[..., Any]) -> str:
    doc = (handler.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


RULES: dict[str, RuleSpec] = {
    rid: RuleSpec(rid, _purpose(h), kind, h, frozenset(cats)) for rid, kind, h, cats in _TABLE
}
"""Every rule by ID, in buf's documentation order."""


def rules_for(
    categories: Iterable[Category] = (Category.WIRE_JSON,),
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> list[RuleSpec]:
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
    cats = set(categories)
    inc, exc = set(include), set(exclude)
    unknown = sorted((inc | exc) - RULES.keys())
    if unknown:
        raise ValueError(f"unknown rule ID(s): {', '.join(unknown)}")
    return [
        spec
        for spec in RULES.values()
        if (spec.categories & cats or spec.id in inc) and spec.id not in exc
    ]

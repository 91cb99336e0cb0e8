"""The profile → adapter settings bridge: the profile is the source of truth.

The adapters take a :class:`~frontend_server.adapters.DialectSettings`; the profile carries
the same facts in its own shape (endpoints, deadlines, capability flags, code tables).
:func:`dialect_settings` derives the former from the latter so a hospital's behaviour is
configured in one place:

* endpoint: the first of ``his.endpoints`` (failover across several is not built yet);
* deadlines: ``his.timeouts``; pool size: ``his.limits.max_concurrency``;
* zone and currency: ``business_hours.timezone`` and ``fees.currency``;
* capabilities: every flag the profile leaves false is disabled in the adapter, so the edge
  never relies on a HIS feature the hospital did not declare (a flag the profile sets but
  the dialect lacks stays off: the adapter's capabilities are the conjunction);
* code tables: a profile entry (HIS code → contract enum) is added to the adapter's table
  (HIS code → neutral code) when the contract value has a neutral counterpart and the code
  is not already defined by the dialect, so the profile can teach the adapter new codes but
  never silently redefine the vendor's documented ones.

The profile's ``fields`` and operation paths/actions/procedures name the contract's fields
and operations in a vocabulary the adapters do not share yet; they are not bridged (see the
package report).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from frontend_server.adapters import DEFAULT_CODE_TABLES, DialectSettings
from frontend_server.profile import Profile

__all__ = ["CAPABILITY_FLAGS", "dialect_settings"]

CAPABILITY_FLAGS: Mapping[str, tuple[str, str]] = {
    "incremental_changes": ("directory", "incremental_changes"),
    "appointment_query_by_key": ("appointment", "query_by_key"),
    "charge_query_by_key": ("charge", "query_by_key"),
    "refund_query_by_key": ("refund", "query_by_key"),
    "hold": ("appointment", "hold"),
    "archived_reports": ("report", "archive_retrieval"),
}
"""Adapter capability → the profile's ``(resource, flag)``."""

# Profile code table → (adapter table, contract enum name → neutral code).
_TABLES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "gender": (
        "gender",
        {"GENDER_MALE": "M", "GENDER_FEMALE": "F", "GENDER_UNKNOWN": "U"},
    ),
    "title": (
        "title",
        {
            "DOCTOR_TITLE_CHIEF_PHYSICIAN": "CHIEF",
            "DOCTOR_TITLE_ASSOCIATE_CHIEF_PHYSICIAN": "ASSOCIATE_CHIEF",
            "DOCTOR_TITLE_ATTENDING_PHYSICIAN": "ATTENDING",
            "DOCTOR_TITLE_RESIDENT_PHYSICIAN": "RESIDENT",
        },
    ),
    "clinic_type": (
        "clinic_type",
        {
            "CLINIC_TYPE_GENERAL": "GENERAL",
            "CLINIC_TYPE_EXPERT": "EXPERT",
            "CLINIC_TYPE_RENOWNED_EXPERT": "RENOWNED",
        },
    ),
    "payer_type": (
        "payer",
        {
            "PAYER_TYPE_SELF_PAY": "SELF",
            "PAYER_TYPE_EMPLOYEE_INSURANCE": "EMPLOYEE",
            "PAYER_TYPE_RESIDENT_INSURANCE": "RESIDENT",
            "PAYER_TYPE_PUBLIC_FUNDED": "PUBLIC",
        },
    ),
    "report_type": (
        "report_type",
        {"REPORT_TYPE_LAB": "LAB", "REPORT_TYPE_IMAGING": "IMAGING"},
    ),
}


def _code_tables(profile: Profile) -> dict[str, dict[str, str]]:
    dialect = profile.his.dialect.value
    out: dict[str, dict[str, str]] = {}
    for table, (adapter_table, neutral) in _TABLES.items():
        documented = DEFAULT_CODE_TABLES[dialect].get(adapter_table, {})
        entries: Mapping[str, str] = getattr(profile.code_tables, table)
        added = {
            code: neutral[value]
            for code, value in entries.items()
            if code != "*" and value in neutral and code not in documented
        }
        if added:
            out[adapter_table] = added
    return out


def dialect_settings(profile: Profile, **overrides: Any) -> DialectSettings:
    """The adapter settings of a profile.

    Args:
        profile: the hospital's validated profile.
        **overrides: fields of :class:`DialectSettings` to set beyond the profile (tests
            and tools: ``table_prefix``, DB poll intervals).

    Returns:
        Settings for :func:`~frontend_server.adapters.make_adapter`.

    Raises:
        ValueError: the derived settings are invalid (names the parameter).
    """
    his = profile.his
    disabled = frozenset(
        name
        for name, (resource, flag) in CAPABILITY_FLAGS.items()
        if not profile.capabilities.can(resource, flag)
    )
    values: dict[str, Any] = {
        "dialect": his.dialect.value,
        "url": his.endpoints[0].url,
        "connect_timeout_seconds": his.timeouts.connect_seconds,
        "read_timeout_seconds": his.timeouts.read_seconds,
        "write_timeout_seconds": his.timeouts.write_seconds,
        "max_connections": his.limits.max_concurrency,
        "timezone": profile.business_hours.timezone,
        "currency": profile.fees.currency,
        "code_tables": _code_tables(profile),
        "disabled_capabilities": disabled,
    }
    values.update(overrides)
    return DialectSettings(**values)

"""The profile → adapter settings bridge: the profile is the source of truth.

The adapters take a :class:`~frontend_server.adapters.DialectSettings`; the profile carries
the same facts in its own vocabulary. :func:`dialect_settings` derives the former from the
latter, so a hospital's HIS is configured in one place, and a vendor upgrade that renames a
field is fixed in the hospital's TOML, not in code:

* endpoint: the first of ``his.endpoints`` (failover across several is not built yet); for
  SOAP, a path in the URL is the service's path (``soap_path``);
* deadlines: ``his.timeouts``; pool size: ``his.limits.max_concurrency``;
* zone and currency: ``business_hours.timezone`` and ``fees.currency``;
* field mappings: ``fields.<entity>.<field> = "hisName"`` becomes ``entity_fields``; the
  profile names fields as the contract does, and where the adapters call a field otherwise
  :data:`FIELD_RENAMES` translates (``patient.id_card_number`` is the adapter's
  ``patient.id_number``);
* operations: ``his.rest.base_path`` / ``his.rest.paths`` become ``rest_base_path`` /
  ``rest_paths``; ``his.soap.namespace`` / ``his.soap.actions`` (trade codes) become
  ``soap_namespace`` / ``soap_trade_codes``; ``his.db.views`` / ``his.db.procedures`` rename
  the documented view and procedure names (``field_names``), ``his.db.table_prefix`` is the
  ``table_prefix``; profile operations are translated by :data:`OPERATION_NAMES`;
* capabilities: every flag the profile leaves false is disabled in the adapter, so the edge
  never relies on a HIS feature the hospital did not declare (a flag the profile sets but
  the dialect lacks stays off: the adapter's capabilities are the conjunction);
* code tables: a profile entry (HIS code → contract enum) is added to the adapter's table
  (HIS code → neutral code) when the contract value has a neutral counterpart and the code
  is not already defined by the dialect, so the profile can teach the adapter new codes but
  never silently redefine the vendor's documented ones.

Every mapping is checked here, before any call: a field, view, procedure or operation the
adapter does not know, a name the dialect cannot use, or two mappings that rename one vendor
name differently is a :class:`~mesh.config.ConfigError` naming the parameter, the file and
the line that set it.

Not bridged: ``his.rest.auth_header`` / ``token`` and ``his.soap.username`` / ``password``
(secret references; nothing resolves secrets yet), ``his.soap.soap_version`` (the adapter
speaks 1.1), ``code_tables.department``, and endpoints after the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from frontend_server.adapters import DEFAULT_CODE_TABLES, DOCUMENTED_FIELDS, DialectSettings
from frontend_server.profile import Profile
from mesh.config import PathItem, dotted_path

__all__ = [
    "CAPABILITY_FLAGS",
    "DB_PROCEDURES",
    "DB_VIEWS",
    "FIELD_RENAMES",
    "OPERATION_NAMES",
    "dialect_settings",
]

CAPABILITY_FLAGS: Mapping[str, tuple[str, str]] = {
    "incremental_changes": ("directory", "incremental_changes"),
    "appointment_query_by_key": ("appointment", "query_by_key"),
    "charge_query_by_key": ("charge", "query_by_key"),
    "refund_query_by_key": ("refund", "query_by_key"),
    "hold": ("appointment", "hold"),
    "archived_reports": ("report", "archive_retrieval"),
}
"""Adapter capability → the profile's ``(resource, flag)``."""

FIELD_RENAMES: Mapping[tuple[str, str], tuple[str, str]] = MappingProxyType(
    {
        # The contract's name for the identity document number; the adapters' records
        # call it after the vendors' "certificate number".
        ("patient", "id_card_number"): ("patient", "id_number"),
        # A doctor may sit in several departments; the adapters read the list.
        ("doctor", "department_id"): ("doctor", "department_ids"),
        # The number of places of a session.
        ("schedule", "quota"): ("schedule", "capacity"),
        # The charged total (the contract's FeeSummary.total_amount).
        ("charge", "amount"): ("charge", "total"),
        # The number printed on the patient's receipt: the (electronic) invoice number.
        ("charge", "receipt_number"): ("charge", "invoice_number"),
        # A full report does not repeat the patient; the report list carries it.
        ("report", "patient_id"): ("report_summary", "patient_id"),
        ("report", "issued_time"): ("report", "issued_at"),
    }
)
"""Profile ``(entity, field)`` → adapter ``(entity, attribute)`` where the names differ.

Every other profile field is looked up under its own name in the adapter's
:data:`~frontend_server.adapters.DOCUMENTED_FIELDS`. A vendor name is renamed wherever it
appears, so mapping ``report.issued_time`` also renames the report list's issue time when
the vendor uses the same name for both."""

OPERATION_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "hold_slot": "hold",
        "release_hold": "release_hold",
        "book_appointment": "book",
        "cancel_appointment": "cancel",
        "get_appointment": "get_appointment",
        "list_patient_appointments": "list_appointments",
        "list_payable_bills": "list_bills",
        "quote_charge": "quote",
        "settle_charge": "settle",
        "get_charge": "get_charge",
        "refund_charge": "refund",
        "get_refund": "get_refund",
        "get_daily_ledger": "daily_ledger",
        "list_departments": "list_departments",
        "list_doctors": "list_doctors",
        "list_schedules": "list_schedules",
        "list_slots": "list_slots",
        "get_changes": "get_changes",
        "register_patient": "register_patient",
        "find_patient": "find_patients",
        "list_reports": "list_reports",
        "get_report": "get_report",
        "retrieve_archived_report": "get_archived_report",
    }
)
"""Profile operation → the adapters' operation (REST paths, SOAP trade codes). Profile
operations missing here (``export_medical_record``) have no HIS call to configure."""

DB_VIEWS: Mapping[str, str] = MappingProxyType(
    {
        "patient": "V_HIS_PATIENT",
        "department": "V_HIS_DEPT",
        "doctor": "V_HIS_DOCTOR",
        "schedule": "V_HIS_DOCTOR_SCHEDULE",
        "slot": "V_HIS_SCHEDULE_SOURCE",
        "deleted": "V_HIS_DELETED_LOG",
        "appointment": "V_HIS_REG_RECORD",
        "bill": "V_HIS_UNPAID_RECIPE",
        "bill_item": "V_HIS_RECIPE_ITEM",
        "charge": "V_HIS_SETTLE",
        "refund": "V_HIS_REFUND",
        "ledger_entry": "V_HIS_DAY_LEDGER",
        "report": "V_HIS_REPORT",
    }
)
"""``his.db.views`` entity → the view the database adapter documents (and reads)."""

DB_PROCEDURES: Mapping[str, str] = MappingProxyType(
    {
        "hold_slot": "P_LOCK_SOURCE",
        "release_hold": "P_UNLOCK_SOURCE",
        "book_appointment": "P_REGISTER",
        "cancel_appointment": "P_CANCEL_REG",
        "quote_charge": "P_PRE_SETTLE",
        "settle_charge": "P_SETTLE",
        "refund_charge": "P_REFUND",
        "register_patient": "P_CREATE_PATIENT",
        "get_report": "P_GET_REPORT",
        "retrieve_archived_report": "P_GET_ARCHIVED_REPORT",
    }
)
"""``his.db.procedures`` operation → the procedure the database adapter documents."""

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


class _Renames:
    """Collects vendor-name renames, refusing two that rename one name differently."""

    def __init__(self, profile: Profile) -> None:
        self._profile = profile
        self._dialect = profile.his.dialect.value
        self._seen: dict[str, tuple[str, tuple[PathItem, ...]]] = {}

    def check(self, path: tuple[PathItem, ...], documented: str, actual: str) -> None:
        """Record that ``documented`` (maybe dotted) is called ``actual`` by this HIS."""
        probe = actual.split(".")
        if not actual or len(probe) != len(documented.split(".")):
            raise self._profile.error_at(
                path,
                f"invalid mapping {actual!r}: the {self._dialect} adapter reads "
                f"{documented!r} here, so the HIS name needs {documented.count('.') + 1} "
                "dot-separated part(s)",
            )
        for old, new in zip(documented.split("."), probe, strict=True):
            earlier = self._seen.get(old)
            if earlier is not None and earlier[0] != new:
                located = self._profile.error_at(earlier[1], "")
                where = f"{located.path}:{located.line}" if located.line else located.path
                raise self._profile.error_at(
                    path,
                    f"conflicting mapping: renames the vendor's {old!r} to {new!r}, but "
                    f"{dotted_path(earlier[1])} ({where}) renames it to {earlier[0]!r} (a "
                    "vendor name is renamed wherever it appears)",
                )
            self._seen[old] = (new, path)


def _adapter_field(
    profile: Profile, entity: str, name: str, path: tuple[PathItem, ...]
) -> tuple[str, str, str]:
    """The adapter's (entity, attribute, documented vendor name) of a profile field."""
    dialect = profile.his.dialect.value
    aliases = {t: n for (e, n), t in FIELD_RENAMES.items() if e == entity}
    if (entity, name) in aliases:
        # One field, one name in profiles: the contract's.
        raise profile.error_at(
            path, f"unknown field: {entity}.{name} is written {entity}.{aliases[entity, name]}"
        )
    target_entity, attribute = FIELD_RENAMES.get((entity, name), (entity, name))
    documented_map = DOCUMENTED_FIELDS[dialect].get(target_entity, {})
    documented = documented_map.get(attribute)
    if documented is None:
        renamed = {n for (e, n) in FIELD_RENAMES if e == entity}
        own = {a for a in documented_map if (entity, a) not in FIELD_RENAMES}
        known = sorted((renamed | own) - {a for (e, a) in aliases if e == entity})
        raise profile.error_at(
            path,
            f"unknown field: the {dialect} adapter has no {entity}.{name} to map "
            f"(known: {', '.join(known)})",
        )
    return target_entity, attribute, documented


def _check(profile: Profile, path: tuple[PathItem, ...], **values: Any) -> None:
    """Let the adapter's own settings check one mapping, and locate what it refuses."""
    try:
        DialectSettings(dialect=profile.his.dialect.value, url="x://", **values)
    except ValueError as err:
        raise profile.error_at(path, f"invalid mapping: {err}") from None


def _entity_fields(profile: Profile, renames: _Renames) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for entity, mapping in profile.fields.items():
        for name, actual in mapping.items():
            path: tuple[PathItem, ...] = ("fields", entity, name)
            target, attribute, documented = _adapter_field(profile, entity, name, path)
            renames.check(path, documented, actual)
            _check(profile, path, entity_fields={target: {attribute: actual}})
            out.setdefault(target, {})[attribute] = actual
    return out


def _operations(
    profile: Profile, section: str, key: str, mapping: Mapping[str, str], known: Mapping[str, str]
) -> dict[str, str]:
    """Profile operation → HIS name, keyed by the adapter's operation names in ``known``."""
    out: dict[str, str] = {}
    for operation, value in mapping.items():
        adapter_op = known.get(operation)
        if adapter_op is None:
            raise profile.error_at(
                ("his", section, key, operation),
                f"unknown operation: the {profile.his.dialect.value} adapter has no call to "
                f"configure for {operation!r} (known: {', '.join(sorted(known))})",
            )
        out[adapter_op] = value
    return out


def _rest(profile: Profile) -> dict[str, Any]:
    rest = profile.his.rest
    if rest is None:
        return {}
    paths = _operations(profile, "rest", "paths", rest.paths, OPERATION_NAMES)
    for operation, value in rest.paths.items():
        if not value.startswith("/"):
            raise profile.error_at(
                ("his", "rest", "paths", operation),
                f"invalid value {value!r}: a path below base_path starts with '/'",
            )
    return {"rest_base_path": rest.base_path, "rest_paths": paths}


def _soap(profile: Profile, url: str) -> dict[str, Any]:
    soap = profile.his.soap
    if soap is None:
        return {}
    # The SOAP dialect has no changes call: a directory sync reads it in full.
    known = {p: a for p, a in OPERATION_NAMES.items() if a != "get_changes"}
    values: dict[str, Any] = {
        "soap_namespace": soap.namespace,
        "soap_trade_codes": _operations(profile, "soap", "actions", soap.actions, known),
    }
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        values["url"] = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        values["soap_path"] = parts.path
    return values


def _db(profile: Profile, renames: _Renames) -> dict[str, Any]:
    db = profile.his.db
    if db is None:
        return {}
    if db.schema:
        raise profile.error_at(
            ("his", "db", "schema"),
            f"invalid value {db.schema!r}: the db adapter reads the default schema only "
            "(name objects with his.db.table_prefix instead)",
        )
    names: dict[str, str] = {}
    for section, mapping, known in (
        ("views", db.views, DB_VIEWS),
        ("procedures", db.procedures, DB_PROCEDURES),
    ):
        for key, actual in mapping.items():
            path: tuple[PathItem, ...] = ("his", "db", section, key)
            documented = known.get(key)
            if documented is None:
                what = "view" if section == "views" else "procedure"
                raise profile.error_at(
                    path,
                    f"unknown {what}: the db adapter has no {what} for {key!r} "
                    f"(known: {', '.join(sorted(known))})",
                )
            renames.check(path, documented, actual)
            _check(profile, path, field_names={documented: actual})
            if actual != documented:
                names[documented] = actual
    values: dict[str, Any] = {"field_names": names}
    if db.table_prefix:
        _check(profile, ("his", "db", "table_prefix"), table_prefix=db.table_prefix)
        values["table_prefix"] = db.table_prefix
    return values


def dialect_settings(profile: Profile, **overrides: Any) -> DialectSettings:
    """The adapter settings of a profile.

    Args:
        profile: the hospital's validated profile.
        **overrides: fields of :class:`DialectSettings` to set beyond the profile (tests
            and tools: ``table_prefix``, DB poll intervals).

    Returns:
        Settings for :func:`~frontend_server.adapters.make_adapter`.

    Raises:
        ConfigError: a mapping of the profile names a field, view, procedure or operation
            the adapter does not know, or a name it cannot use (names the parameter, its
            file and line).
        ValueError: the derived settings are invalid, e.g. a bad override (names the
            parameter).
    """
    his = profile.his
    disabled = frozenset(
        name
        for name, (resource, flag) in CAPABILITY_FLAGS.items()
        if not profile.capabilities.can(resource, flag)
    )
    url = his.endpoints[0].url
    renames = _Renames(profile)
    values: dict[str, Any] = {
        "dialect": his.dialect.value,
        "url": url,
        "connect_timeout_seconds": his.timeouts.connect_seconds,
        "read_timeout_seconds": his.timeouts.read_seconds,
        "write_timeout_seconds": his.timeouts.write_seconds,
        "max_connections": his.limits.max_concurrency,
        "timezone": profile.business_hours.timezone,
        "currency": profile.fees.currency,
        "code_tables": _code_tables(profile),
        "disabled_capabilities": disabled,
        "entity_fields": _entity_fields(profile, renames),
    }
    values.update(_rest(profile))
    values.update(_soap(profile, url))
    values.update(_db(profile, renames))
    values.update(overrides)
    return DialectSettings(**values)

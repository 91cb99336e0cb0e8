"""Loading a profile: read the chain of files, merge, validate into a :class:`Profile`.

Every problem is a :class:`~mesh.config.ConfigError` whose message is one line,
``file:line: dotted.parameter: problem``, naming the file (template or hospital) that set
the value, or, for a missing parameter, the table that should have it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from frontend_server.profile._model import (
    CAPABILITIES,
    OPERATIONS,
    QUEUEABLE_OPERATIONS,
    BusinessHours,
    Capabilities,
    CodeTables,
    DbSettings,
    Dialect,
    Fees,
    HisConfig,
    HisEndpoint,
    HisLimits,
    HisTimeouts,
    OperationMode,
    Profile,
    RestSettings,
    SoapSettings,
)
from frontend_server.profile._source import Layer, Node, load_layers, merge
from frontend_server.rules import ALLOWED_SLOT_MINUTES, AppointmentRules, RuleVariant
from frontend_server.tasks import QueueConfig
from hplus.hospital.v1 import common_pb2, directory_pb2, report_pb2
from mesh.config import ConfigError, PathItem

__all__ = [
    "FIELD_ENTITIES",
    "REQUIRED_CODES",
    "REQUIRED_FIELDS",
    "canonical_json",
    "load_profile",
    "load_profile_content",
    "profile_digest",
]

REQUIRED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "patient": ("patient_id", "name", "gender", "id_card_number", "phone"),
    "department": ("department_id", "name"),
    "doctor": ("doctor_id", "name", "title", "department_id"),
    "schedule": ("schedule_id", "doctor_id", "visit_date", "period", "quota"),
    "appointment": ("appointment_id", "patient_id", "schedule_id", "ticket_number", "status"),
    "charge": ("charge_id", "amount", "receipt_number"),
    "report": ("report_id", "patient_id", "report_type", "issued_time"),
}
"""Field mappings every profile must give: entity → contract fields (the adapters read
these for every HIS). Other fields of a known entity may be mapped too."""

FIELD_ENTITIES: tuple[str, ...] = (
    *REQUIRED_FIELDS,
    "slot",
    "bill",
    "bill_item",
    "quote",
    "refund",
    "ledger_entry",
    "report_summary",
    "observation",
    "imaging",
)
"""Entities a profile may map fields of: those of :data:`REQUIRED_FIELDS` and the other
records the adapters read. Which fields each has is the adapter's vocabulary, checked
when the adapter settings are derived (``frontend_server.services.dialect_settings``)."""

_ENUMS: Mapping[str, tuple[str, Any]] = {
    "gender": ("Gender", common_pb2.Gender),
    "title": ("DoctorTitle", directory_pb2.DoctorTitle),
    "clinic_type": ("ClinicType", directory_pb2.ClinicType),
    "payer_type": ("PayerType", common_pb2.PayerType),
    "report_type": ("ReportType", report_pb2.ReportType),
}

REQUIRED_CODES: Mapping[str, tuple[str, ...]] = {
    "gender": ("GENDER_MALE", "GENDER_FEMALE"),
    "title": ("DOCTOR_TITLE_CHIEF_PHYSICIAN", "DOCTOR_TITLE_ATTENDING_PHYSICIAN"),
    "clinic_type": ("CLINIC_TYPE_GENERAL",),
    "payer_type": ("PAYER_TYPE_SELF_PAY",),
    "report_type": ("REPORT_TYPE_LAB", "REPORT_TYPE_IMAGING"),
}
"""Contract values each code table must map at least one HIS code to."""

_TOP_LEVEL = (
    "profile",
    "his",
    "fields",
    "code_tables",
    "appointment",
    "fees",
    "business_hours",
    "operations",
    "capabilities",
    "tasks",
)
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PERIODS = ("morning", "afternoon", "evening")
_SECRET = re.compile(r"^secret://[A-Za-z0-9][A-Za-z0-9._/-]*$")
_HTTP_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_DB_URL = re.compile(r"^[a-z][a-z0-9]*(\+[a-z0-9]+)?://\S*$")
_WRITES = frozenset(
    {
        "hold_slot",
        "release_hold",
        "book_appointment",
        "cancel_appointment",
        "settle_charge",
        "refund_charge",
        "register_patient",
    }
)


def _json_default(value: object) -> str:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(content: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a profile: keys sorted, no whitespace, UTF-8.

    Integral numbers are written as integers (``5.0`` as ``5``), so a profile digests the
    same from TOML and from JSON, which has one number type; TOML dates and times are
    written in ISO 8601.
    """
    return json.dumps(
        _integral(content),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    ).encode("utf-8")


def profile_digest(content: Mapping[str, Any]) -> str:
    """The profile digest the contract's ``ConfigProfileInfo.digest`` carries.

    Returns:
        ``"sha256:"`` + lower-case hex SHA-256 of :func:`canonical_json`.
    """
    return "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()


def load_profile(path: Path) -> Profile:
    """Load and validate a hospital's profile (and the templates it extends).

    Args:
        path: the hospital's profile file.

    Returns:
        The validated profile, with its merged content and digest.

    Raises:
        ConfigError: a file cannot be read or parsed, or a parameter is unknown, missing,
            of the wrong type, or invalid, or a mapping is missing; the message names the
            parameter, the file and the line.
    """
    return _build(load_layers(path))


def load_profile_content(content: Mapping[str, Any], *, source: str = "<content>") -> Profile:
    """Validate a merged profile given as data, e.g. ApplyConfig's ``content`` Struct.

    JSON (and ``google.protobuf.Struct``) has one number type, so integral numbers are
    taken as integers; everything else is validated as from files. Errors name the
    parameter and ``source`` (no line).

    Args:
        content: the whole merged profile (sections at the top level), without ``extends``.
        source: what to name as the file in errors.

    Raises:
        ConfigError: as :func:`load_profile`.
    """
    data = _integral(content)
    if "extends" in data:
        raise ConfigError("extends: not allowed in merged content", path=source)
    return _build([Layer(path=Path(source), text="", data=data)])


def _integral(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _integral(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integral(v) for v in value]
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _build(layers: list[Layer]) -> Profile:
    doc = merge(layers)
    root = Node(doc)
    _refuse_non_finite(root, doc.data, ())
    root.reject_unknown(_TOP_LEVEL, what="section")
    meta = root.table("profile", required=True)
    meta.reject_unknown(["id", "hospital_id", "template_id", "version", "name"])
    his = _his(root.table("his", required=True))
    capabilities = _capabilities(root.table("capabilities"))
    profile = Profile(
        profile_id=_non_empty(meta, "id"),
        hospital_id=_non_empty(meta, "hospital_id"),
        template_id=_non_empty(meta, "template_id"),
        version=meta.number("version", int, 0, minimum=0),
        his=his,
        fields=_fields(root.table("fields", required=True)),
        code_tables=_code_tables(root.table("code_tables", required=True)),
        appointment=_appointment(root.table("appointment", required=True)),
        fees=_fees(root.table("fees", required=True)),
        business_hours=_business_hours(root.table("business_hours", required=True)),
        operations=_operations(root.table("operations"), capabilities),
        capabilities=capabilities,
        tasks=_tasks(root.table("tasks")),
        content=doc.data,
        digest=profile_digest(doc.data),
        sources=tuple(layer.path for layer in layers),
        origins=doc,
    )
    _cross_check(root, profile)
    return profile


def _refuse_non_finite(root: Node, value: Any, path: tuple[PathItem, ...]) -> None:
    """Refuses ``nan`` and ``inf`` anywhere in the profile, with path, file and line.

    TOML (and ApplyConfig's JSON) can spell them, but no profile number may be one: a
    timeout of ``inf`` never fires, and the digest (canonical JSON) has no spelling for them.
    """
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _refuse_non_finite(root, sub, (*path, str(key)))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            _refuse_non_finite(root, sub, (*path, index))
    elif isinstance(value, float) and not math.isfinite(value):
        raise root.error_at(path, f"invalid value {value!r}: must be a finite number")


def _non_empty(node: Node, key: str, default: str | None = None) -> str:
    value = node.get(key, str) if default is None else node.get(key, str, default)
    if default is None and not value.strip():
        raise node.error(key, "invalid value '': must not be empty")
    return value


def _secret(node: Node, key: str) -> str:
    value = node.get(key, str)
    if not _SECRET.match(value):
        raise node.error(
            key, "invalid value: secrets are written as references 'secret://<name>', never inline"
        )
    return value


def _his(node: Node) -> HisConfig:
    node.reject_unknown(["dialect", "endpoints", "timeouts", "limits", "rest", "soap", "db"])
    dialect = node.choice("dialect", Dialect)
    endpoints: list[HisEndpoint] = []
    items = node.tables("endpoints", required=True)
    if not items:
        raise node.error("endpoints", "invalid value: at least one endpoint is required")
    for item in items:
        item.reject_unknown(["name", "url"])
        url = item.get("url", str)
        pattern = _DB_URL if dialect is Dialect.DB else _HTTP_URL
        if not pattern.match(url):
            want = "a SQLAlchemy URL" if dialect is Dialect.DB else "an http:// or https:// URL"
            raise item.error("url", f"invalid value {url!r}: expected {want}")
        endpoints.append(HisEndpoint(name=_non_empty(item, "name"), url=url))
    names = [e.name for e in endpoints]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise items[index].error("name", f"invalid value {name!r}: duplicate endpoint name")
    t = node.table("timeouts", required=True)
    t.reject_unknown(["connect_seconds", "read_seconds", "write_seconds"])
    timeouts = HisTimeouts(
        connect_seconds=t.number("connect_seconds", float, minimum=0, exclusive_minimum=True),
        read_seconds=t.number("read_seconds", float, minimum=0, exclusive_minimum=True),
        write_seconds=t.number("write_seconds", float, minimum=0, exclusive_minimum=True),
    )
    lim = node.table("limits", required=True)
    lim.reject_unknown(["rate_per_second", "burst", "max_concurrency"])
    limits = HisLimits(
        rate_per_second=lim.number("rate_per_second", float, minimum=0, exclusive_minimum=True),
        burst=lim.number("burst", int, 1, minimum=1),
        max_concurrency=lim.number("max_concurrency", int, minimum=1),
    )
    for other in Dialect:
        if other is not dialect and node.has(other.value):
            raise node.error(
                other.value,
                f"unknown parameter: [his.{other.value}] is only for dialect "
                f"{other.value!r}, this profile's dialect is {dialect.value!r}",
            )
    config = HisConfig(
        dialect=dialect, endpoints=tuple(endpoints), timeouts=timeouts, limits=limits
    )
    section = node.table(dialect.value, required=True)
    if dialect is Dialect.REST:
        section.reject_unknown(["base_path", "auth_header", "token", "paths"])
        rest = RestSettings(
            base_path=section.get("base_path", str, ""),
            auth_header=section.get("auth_header", str, "Authorization"),
            token=_secret(section, "token"),
            paths=_operation_map(section, "paths"),
        )
        return HisConfig(**{**config.__dict__, "rest": rest})
    if dialect is Dialect.SOAP:
        section.reject_unknown(["namespace", "soap_version", "actions", "username", "password"])
        version = section.get("soap_version", str, "1.1")
        if version not in ("1.1", "1.2"):
            raise section.error("soap_version", f"invalid value {version!r}: must be 1.1 or 1.2")
        soap = SoapSettings(
            namespace=_non_empty(section, "namespace"),
            soap_version=version,
            actions=_operation_map(section, "actions"),
            username=_non_empty(section, "username"),
            password=_secret(section, "password"),
        )
        return HisConfig(**{**config.__dict__, "soap": soap})
    section.reject_unknown(["schema", "table_prefix", "views", "procedures", "password"])
    views = section.str_map("views", required=True)
    for entity in REQUIRED_FIELDS:
        if entity not in views:
            raise section.child_error("views", entity, f"missing mapping: no view for {entity!r}")
    db = DbSettings(
        schema=section.get("schema", str, ""),
        views=views,
        procedures=_operation_map(section, "procedures"),
        password=_secret(section, "password"),
        table_prefix=section.get("table_prefix", str, ""),
    )
    return HisConfig(**{**config.__dict__, "db": db})


def _operation_map(section: Node, key: str) -> dict[str, str]:
    """A table operation → HIS name; every HIS write must be named."""
    table = section.table(key, required=True)
    table.reject_unknown(OPERATIONS, what="operation")
    values = section.str_map(key, required=True)
    for op in sorted(_WRITES - {"register_patient"}):
        if op not in values:
            raise section.child_error(key, op, f"missing mapping: no HIS name for {op!r}")
    return values


def _fields(node: Node) -> dict[str, dict[str, str]]:
    node.reject_unknown(FIELD_ENTITIES, what="entity")
    out: dict[str, dict[str, str]] = {}
    for entity in FIELD_ENTITIES:
        required = REQUIRED_FIELDS.get(entity, ())
        if entity not in REQUIRED_FIELDS and not node.has(entity):
            continue
        mapping = node.str_map(entity, required=bool(required))
        for name in required:
            if name not in mapping:
                raise node.child_error(
                    entity, name, f"missing mapping: no HIS field for {entity}.{name}"
                )
        table = node.table(entity)
        for name, his_name in mapping.items():
            if not his_name.strip():
                raise table.error(name, "invalid value '': a HIS field name is required")
        out[entity] = mapping
    return out


def _code_tables(node: Node) -> CodeTables:
    node.reject_unknown([*_ENUMS, "department"], what="code table")
    tables: dict[str, dict[str, str]] = {}
    for name, (enum_name, wrapper) in _ENUMS.items():
        mapping = node.str_map(name, required=True)
        table = node.table(name)
        known = [
            str(k) for k in wrapper.DESCRIPTOR.values_by_name if not k.endswith("_UNSPECIFIED")
        ]
        for code, value in mapping.items():
            if value not in known:
                raise table.error(
                    code,
                    f"invalid value {value!r}: not a {enum_name} value (known: {', '.join(known)})",
                )
        for required in REQUIRED_CODES[name]:
            if required not in mapping.values():
                raise node.error(name, f"missing mapping: no HIS code maps to {required}")
        tables[name] = mapping
    departments = node.str_map("department", required=True)
    if not departments:
        raise node.error("department", "missing mapping: no department codes")
    table = node.table("department")
    for code, value in departments.items():
        if not value.strip():
            raise table.error(code, "invalid value '': a platform department code is required")
    return CodeTables(department=departments, **tables)


_COMMON_RULE_KEYS = (
    "booking_window_days",
    "release_time",
    "same_day_booking",
    "same_day_cutoff_minutes",
    "cancel_cutoff_minutes",
    "real_name",
    "hold_minutes",
    "max_hold_minutes",
)
_VARIANT_KEYS: Mapping[RuleVariant, tuple[str, ...]] = {
    RuleVariant.UNLIMITED: (),
    RuleVariant.HALVES: ("half_capacity", "morning_end", "afternoon_start"),
    RuleVariant.FIXED_SLOTS: ("slot_minutes", "slot_capacity"),
    RuleVariant.NUMBERED: ("ticket_quota", "minutes_per_ticket"),
}


def _appointment(node: Node) -> AppointmentRules:
    node.reject_unknown(["variant", *_COMMON_RULE_KEYS, *(v.value for v in RuleVariant)])
    variant = node.choice("variant", RuleVariant)
    defaults = AppointmentRules(variant=variant)
    values: dict[str, Any] = {"variant": variant}
    values["booking_window_days"] = node.number(
        "booking_window_days", int, defaults.booking_window_days, minimum=0, maximum=365
    )
    values["release_time"] = node.time("release_time", defaults.release_time)
    values["same_day_booking"] = node.get("same_day_booking", bool, defaults.same_day_booking)
    for key in ("same_day_cutoff_minutes", "cancel_cutoff_minutes"):
        values[key] = node.number(key, int, getattr(defaults, key), minimum=0, maximum=7 * 1440)
    values["real_name"] = node.get("real_name", bool, defaults.real_name)
    values["hold_minutes"] = node.number("hold_minutes", int, defaults.hold_minutes, minimum=1)
    values["max_hold_minutes"] = node.number(
        "max_hold_minutes",
        int,
        max(defaults.max_hold_minutes, values["hold_minutes"]),
        minimum=values["hold_minutes"],
    )
    # Every variant's table is checked for typos, but only the chosen one is used, so a
    # hospital can switch variant without deleting its template's other tables.
    for other, keys in _VARIANT_KEYS.items():
        node.table(other.value).reject_unknown(keys)
    params = node.table(variant.value, required=variant in _REQUIRED_VARIANT_TABLE)
    if variant is RuleVariant.FIXED_SLOTS:
        minutes = params.get("slot_minutes", int)
        if minutes not in ALLOWED_SLOT_MINUTES:
            raise params.error(
                "slot_minutes", f"invalid value {minutes}: must be one of 5, 10, 15, 30"
            )
        values["slot_minutes"] = minutes
        values["slot_capacity"] = params.number("slot_capacity", int, 1, minimum=1)
    elif variant is RuleVariant.NUMBERED:
        values["ticket_quota"] = params.number("ticket_quota", int, minimum=1, maximum=1000)
        values["minutes_per_ticket"] = params.number(
            "minutes_per_ticket", int, defaults.minutes_per_ticket, minimum=1
        )
    elif variant is RuleVariant.HALVES:
        if params.has("half_capacity"):
            values["half_capacity"] = params.number("half_capacity", int, minimum=1)
        values["morning_end"] = params.time("morning_end", defaults.morning_end)
        values["afternoon_start"] = params.time("afternoon_start", defaults.afternoon_start)
        if values["afternoon_start"] < values["morning_end"]:
            raise params.error("afternoon_start", "invalid value: must not be before morning_end")
    return AppointmentRules(**values)


_REQUIRED_VARIANT_TABLE = frozenset({RuleVariant.FIXED_SLOTS, RuleVariant.NUMBERED})


def _fees(node: Node) -> Fees:
    node.reject_unknown(["currency", "registration"])
    currency = node.get("currency", str, "CNY")
    if currency != "CNY":
        raise node.error("currency", f"invalid value {currency!r}: hospitals account in CNY")
    table = node.table("registration", required=True)
    known = {
        k.removeprefix("CLINIC_TYPE_").lower(): k
        for k in directory_pb2.ClinicType.DESCRIPTOR.values_by_name
        if not k.endswith("_UNSPECIFIED")
    }
    table.reject_unknown(known, what="clinic type")
    fees: dict[str, int] = {}
    for key in table.names():
        fees[known[key]] = table.number(key, int, minimum=0)
    return Fees(currency=currency, registration_fen=fees)


def _business_hours(node: Node) -> BusinessHours:
    node.reject_unknown(["timezone", "days", "sessions"])
    zone = node.get("timezone", str, "Asia/Shanghai")
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise node.error("timezone", f"invalid value {zone!r}: not an IANA time zone") from None
    days = node.str_list("days", _WEEKDAYS[:5])
    for index, day in enumerate(days):
        if day not in _WEEKDAYS:
            raise node.child_error(
                "days", index, f"invalid value {day!r}: must be one of {', '.join(_WEEKDAYS)}"
            )
    sessions_node = node.table("sessions", required=True)
    sessions_node.reject_unknown(_PERIODS, what="period")
    sessions: dict[str, tuple[dt.time, dt.time]] = {}
    for period in sessions_node.names():
        text = sessions_node.get(period, str)
        start_text, sep, end_text = text.partition("-")
        if not sep:
            raise sessions_node.error(period, f"invalid value {text!r}: expected HH:MM-HH:MM")
        start = sessions_node.parse_time(period, start_text.strip())
        end = sessions_node.parse_time(period, end_text.strip())
        if end <= start:
            raise sessions_node.error(period, f"invalid value {text!r}: ends before it starts")
        sessions[period] = (start, end)
    if not sessions:
        raise node.error("sessions", "missing required parameter: at least one period")
    return BusinessHours(timezone=zone, days=tuple(days), sessions=sessions)


def _capabilities(node: Node) -> Capabilities:
    node.reject_unknown(CAPABILITIES, what="capability resource")
    flags: dict[str, dict[str, bool]] = {}
    for resource, known in CAPABILITIES.items():
        table = node.table(resource)
        table.reject_unknown(known, what="capability")
        flags[resource] = {flag: table.get(flag, bool, False) for flag in sorted(known)}
    return Capabilities(flags=flags)


def _operations(node: Node, capabilities: Capabilities) -> dict[str, OperationMode]:
    node.reject_unknown(OPERATIONS, what="operation")
    modes: dict[str, OperationMode] = {}
    for op in OPERATIONS:
        default = OperationMode.QUEUED if op in QUEUEABLE_OPERATIONS else OperationMode.REALTIME
        if op in ("hold_slot", "release_hold") and not capabilities.can("appointment", "hold"):
            default = OperationMode.UNSUPPORTED
        mode = node.choice(op, OperationMode, default)
        if mode is OperationMode.QUEUED and op not in QUEUEABLE_OPERATIONS:
            raise node.error(
                op,
                f"invalid value 'queued': {op} must run in real time "
                f"(queueable: {', '.join(sorted(QUEUEABLE_OPERATIONS))})",
            )
        if mode is OperationMode.REALTIME and default is OperationMode.UNSUPPORTED:
            raise node.error(
                op,
                "invalid value 'realtime': the HIS cannot hold "
                "(capabilities.appointment.hold is false)",
            )
        modes[op] = mode
    return modes


def _tasks(node: Node) -> QueueConfig:
    defaults = QueueConfig()
    floats = (
        "drain_rate_per_second",
        "backoff_initial_seconds",
        "backoff_multiplier",
        "backoff_max_seconds",
        "lease_seconds",
        "attempt_timeout_seconds",
        "default_lifetime_seconds",
        "idle_poll_seconds",
    )
    ints = ("burst", "max_concurrency", "max_attempts", "queue_limit", "retry_budget")
    node.reject_unknown([*floats, *ints])
    values: dict[str, Any] = {}
    for key in floats:
        minimum, exclusive = (1.0, False) if key == "backoff_multiplier" else (0.0, True)
        values[key] = node.number(
            key, float, getattr(defaults, key), minimum=minimum, exclusive_minimum=exclusive
        )
    for key in ints:
        values[key] = node.number(key, int, getattr(defaults, key), minimum=1)
    initial, largest = values["backoff_initial_seconds"], values["backoff_max_seconds"]
    if initial > largest:
        key = "backoff_initial_seconds"
        if not node.has(key):
            key = "backoff_max_seconds"
        raise node.error(
            key,
            f"invalid value {values[key]!r}: backoff_initial_seconds ({initial:g}) must be "
            f"<= backoff_max_seconds ({largest:g})",
        )
    return QueueConfig(**values)


def _cross_check(root: Node, profile: Profile) -> None:
    """Checks that span sections."""
    fees = root.table("fees").table("registration")
    for code, clinic in profile.code_tables.clinic_type.items():
        if clinic not in profile.fees.registration_fen:
            short = clinic.removeprefix("CLINIC_TYPE_").lower()
            raise fees.error(
                short,
                f"missing mapping: no registration fee for {clinic} "
                f"(code_tables.clinic_type maps HIS code {code!r} to it)",
            )
    rules = profile.appointment
    if rules.variant is RuleVariant.HALVES:
        sessions = profile.business_hours.sessions
        if "morning" not in sessions or "afternoon" not in sessions:
            raise root.table("business_hours").error(
                "sessions", "missing mapping: the 'halves' rule needs morning and afternoon"
            )

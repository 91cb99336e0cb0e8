"""The validated configuration profile of one hospital: frozen dataclasses."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from frontend_server.profile._source import MergedDocument
from frontend_server.rules import AppointmentRules
from frontend_server.tasks import QueueConfig
from mesh.config import ConfigError, PathItem, dotted_path

__all__ = [
    "CAPABILITIES",
    "OPERATIONS",
    "QUEUEABLE_OPERATIONS",
    "BusinessHours",
    "Capabilities",
    "CodeTables",
    "DbSettings",
    "Dialect",
    "Fees",
    "HisConfig",
    "HisEndpoint",
    "HisLimits",
    "HisTimeouts",
    "OperationMode",
    "Profile",
    "RestSettings",
    "SoapSettings",
]


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


class Dialect(enum.StrEnum):
    """How the HIS is reached: one adapter per dialect."""

    REST = "rest"
    """REST/JSON over HTTP."""
    SOAP = "soap"
    """SOAP-style XML over HTTP."""
    DB = "db"
    """Database views and procedure tables, through SQLAlchemy."""


class OperationMode(enum.StrEnum):
    """How the edge runs an operation against this HIS."""

    REALTIME = "realtime"
    """Called on the HIS while the cloud waits."""
    QUEUED = "queued"
    """Accepted at once into the pending-task queue and drained at the HIS's rate."""
    UNSUPPORTED = "unsupported"
    """The HIS cannot do it; the edge answers UNIMPLEMENTED."""


OPERATIONS: tuple[str, ...] = (
    "hold_slot",
    "release_hold",
    "book_appointment",
    "cancel_appointment",
    "get_appointment",
    "list_patient_appointments",
    "list_payable_bills",
    "quote_charge",
    "settle_charge",
    "get_charge",
    "refund_charge",
    "get_refund",
    "get_daily_ledger",
    "list_departments",
    "list_doctors",
    "list_schedules",
    "list_slots",
    "get_changes",
    "register_patient",
    "find_patient",
    "list_reports",
    "get_report",
    "retrieve_archived_report",
    "export_medical_record",
)
"""Operations a profile can set a mode for: the hospital RPCs and the task kinds."""

QUEUEABLE_OPERATIONS = frozenset({"retrieve_archived_report", "export_medical_record"})
"""Operations that may run through the pending-task queue (non-real-time reads)."""

CAPABILITIES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "appointment": frozenset({"hold", "query_by_key", "choose_place", "refund_on_cancel"}),
        "charge": frozenset({"query_by_key", "partial_refund", "itemized"}),
        "refund": frozenset({"query_by_key"}),
        "patient": frozenset({"register", "query_by_card"}),
        "report": frozenset({"presented_forms", "archive_retrieval"}),
        "directory": frozenset({"incremental_changes"}),
    }
)
"""Capability flags per resource, e.g. ``charge.query_by_key``: "the HIS can find a charge
by our idempotency key". Every flag defaults to false: the edge then relies on its ledger."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HisEndpoint:
    """One address of the HIS (several for failover)."""

    name: str
    """Name for logs, e.g. ``"primary"``."""
    url: str
    """``http(s)://`` URL for REST and SOAP, a SQLAlchemy URL for DB."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HisTimeouts:
    """Deadlines of calls to the HIS."""

    connect_seconds: float
    """Connecting."""
    read_seconds: float
    """A read operation, from request to complete response."""
    write_seconds: float
    """A write operation (booking, charge); longer, because a lost answer costs a resolve."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HisLimits:
    """How hard the edge may press the HIS with real-time calls."""

    rate_per_second: float
    """Calls started per second, at most."""
    burst: int
    """Calls that may start back to back."""
    max_concurrency: int
    """Calls in flight, at most."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestSettings:
    """REST/JSON dialect details."""

    base_path: str
    """Path prefix of the HIS API, e.g. ``"/his/api/v2"``."""
    auth_header: str
    """Header that carries the credential."""
    token: str
    """Credential, as a ``secret://name`` reference."""
    paths: Mapping[str, str]
    """Operation → path below ``base_path``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SoapSettings:
    """SOAP/XML dialect details."""

    namespace: str
    """XML namespace of the service."""
    soap_version: str
    """``"1.1"`` or ``"1.2"``."""
    actions: Mapping[str, str]
    """Operation → the HIS's name for it: its SOAPAction, or its trade code when the
    service has one method that dispatches on a trade code."""
    username: str
    """WS-Security user name."""
    password: str
    """WS-Security password, as a ``secret://name`` reference."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DbSettings:
    """Database dialect details."""

    schema: str
    """Schema of the views and tables; empty for the default."""
    views: Mapping[str, str]
    """Entity → view name (e.g. ``schedule`` → ``V_HIS_SCHEDULE``)."""
    procedures: Mapping[str, str]
    """Write operation → procedure table or stored procedure name."""
    password: str
    """Database password, as a ``secret://name`` reference (not in the URL)."""
    table_prefix: str = ""
    """Prefix of every view and table name (e.g. ``"H3_"``); empty for none."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class HisConfig:
    """Where and how to reach the HIS."""

    dialect: Dialect
    """Which adapter."""
    endpoints: tuple[HisEndpoint, ...]
    """Addresses, tried in order."""
    timeouts: HisTimeouts
    """Deadlines."""
    limits: HisLimits
    """Rate and concurrency for real-time calls."""
    rest: RestSettings | None = None
    """Set when ``dialect`` is REST."""
    soap: SoapSettings | None = None
    """Set when ``dialect`` is SOAP."""
    db: DbSettings | None = None
    """Set when ``dialect`` is DB."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CodeTables:
    """HIS codes ↔ contract values.

    Each table maps a HIS code to a contract enum name (or, for departments, to the
    platform's department code); the code ``"*"`` is the fallback for codes not listed.
    """

    gender: Mapping[str, str]
    """HIS gender code → ``Gender`` name."""
    title: Mapping[str, str]
    """HIS title code → ``DoctorTitle`` name."""
    clinic_type: Mapping[str, str]
    """HIS registration type → ``ClinicType`` name."""
    payer_type: Mapping[str, str]
    """HIS fee category (费别) → ``PayerType`` name."""
    report_type: Mapping[str, str]
    """HIS report category → ``ReportType`` name."""
    department: Mapping[str, str]
    """HIS department code → platform department code."""

    def to_contract(self, table: str, his_code: str) -> str | None:
        """The contract value of ``his_code`` in ``table`` (or the ``"*"`` fallback)."""
        mapping: Mapping[str, str] = getattr(self, table)
        return mapping.get(his_code, mapping.get("*"))

    def to_his(self, table: str, contract_value: str) -> str | None:
        """The first HIS code that maps to ``contract_value`` in ``table``."""
        mapping: Mapping[str, str] = getattr(self, table)
        return next((k for k, v in mapping.items() if v == contract_value and k != "*"), None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fees:
    """Fees the HIS does not quote itself."""

    currency: str
    """Always ``"CNY"``."""
    registration_fen: Mapping[str, int]
    """Registration fee per clinic type (``ClinicType`` name), in fen."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BusinessHours:
    """When the hospital works."""

    timezone: str
    """IANA zone of the hospital's clock, e.g. ``"Asia/Shanghai"``."""
    days: tuple[str, ...]
    """Working days: ``mon`` … ``sun``."""
    sessions: Mapping[str, tuple[dt.time, dt.time]]
    """Period (``morning``, ``afternoon``, ``evening``) → (start, end)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What the HIS can do, per resource (see :data:`CAPABILITIES`)."""

    flags: Mapping[str, Mapping[str, bool]]
    """Resource → flag → value; every known flag is present."""

    def can(self, resource: str, flag: str) -> bool:
        """Whether the HIS has capability ``resource.flag``.

        Raises:
            KeyError: the flag is not a known capability (a bug in the caller).
        """
        return self.flags[resource][flag]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Profile:
    """A hospital's validated configuration profile (vendor template + overrides)."""

    profile_id: str
    """Id of the profile in the cloud's fleet registry."""
    hospital_id: str
    """The hospital it configures."""
    template_id: str
    """Id of the vendor template it extends."""
    version: int
    """Version of the profile in the fleet registry."""
    his: HisConfig
    """How to reach the HIS."""
    fields: Mapping[str, Mapping[str, str]]
    """Field mappings: entity → contract field → HIS field name."""
    code_tables: CodeTables
    """Code tables."""
    appointment: AppointmentRules
    """The appointment rule variant and its parameters."""
    fees: Fees
    """Fees."""
    business_hours: BusinessHours
    """Business hours."""
    operations: Mapping[str, OperationMode]
    """Every operation of :data:`OPERATIONS` → how it runs."""
    capabilities: Capabilities
    """Capability flags."""
    tasks: QueueConfig
    """Pending-task queue settings."""
    content: Mapping[str, Any]
    """The merged profile as plain data (for GetConfig); ``extends`` removed."""
    digest: str
    """``"sha256:"`` + hex of the canonical JSON of ``content``."""
    sources: tuple[Path, ...]
    """The files it was read from, base template first."""
    origins: MergedDocument | None = dataclasses.field(default=None, repr=False, compare=False)
    """Which file and line set each parameter, so checks made after loading (the adapter
    bridge) can still name them; ``None`` for a profile built by hand."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "fields", _frozen_map({k: _frozen_map(v) for k, v in self.fields.items()})
        )
        object.__setattr__(self, "operations", _frozen_map(self.operations))

    def mode(self, operation: str) -> OperationMode:
        """How ``operation`` runs (see :data:`OPERATIONS`)."""
        return self.operations[operation]

    def field(self, entity: str, name: str) -> str:
        """The HIS field name of contract field ``name`` of ``entity``."""
        return self.fields[entity][name]

    def error_at(self, path: tuple[PathItem, ...], problem: str) -> ConfigError:
        """A :class:`ConfigError` for the parameter at ``path``, with its file and line.

        Args:
            path: the parameter, e.g. ``("fields", "patient", "phone")``.
            problem: what is wrong with it.

        Returns:
            The error (``file:line: dotted.path: problem``); without :attr:`origins`, the
            last source file and no line.
        """
        where = dotted_path(path) or "profile"
        if self.origins is None:
            source = self.sources[-1] if self.sources else None
            return ConfigError(f"{where}: {problem}", path=source)
        file, line = self.origins.locate(path)
        return ConfigError(f"{where}: {problem}", path=file, line=line)

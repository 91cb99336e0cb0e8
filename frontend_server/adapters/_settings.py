"""Configuration of one HIS adapter: endpoint, deadlines and the mapping tables."""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from frontend_server.adapters._fieldmaps import DOCUMENTED_FIELDS
from frontend_server.adapters._vendors import (
    DEFAULT_CODE_TABLES,
    DEFAULT_REST_PATHS,
    DEFAULT_SOAP_TRADE_CODES,
    NEUTRAL_CODES,
)
from mesh.tunnel import call_time_left

__all__ = ["CAPABILITY_NAMES", "DialectName", "DialectSettings", "within_caller"]

DialectName = Literal["rest", "soap", "db"]

CAPABILITY_NAMES = frozenset(
    {
        "incremental_changes",
        "appointment_query_by_key",
        "charge_query_by_key",
        "refund_query_by_key",
        "hold",
        "archived_reports",
        "bulk_slots",
    }
)
"""Capabilities a hospital's settings may switch off (see :class:`Capabilities`)."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, kw_only=True)
class DialectSettings:
    """How one adapter reaches one HIS and reads its vocabulary.

    Every mapping overrides the dialect's documented defaults entry by entry, so a hospital
    profile states only what differs from its vendor template.

    Raises:
        ValueError: From ``__post_init__`` for a bad value, naming the parameter.
    """

    dialect: DialectName
    """Which adapter: ``rest`` (JSON over HTTP), ``soap`` (XML over HTTP) or ``db``."""
    url: str
    """REST: base URL (``http://his:8080``); SOAP: base URL of the web service host;
    DB: async SQLAlchemy URL (``sqlite+aiosqlite:///…``, ``postgresql+asyncpg://…``)."""
    connect_timeout_seconds: float = 3.0
    """Deadline to establish a connection."""
    read_timeout_seconds: float = 8.0
    """Deadline of a whole read call (listing, queries, reports)."""
    write_timeout_seconds: float = 15.0
    """Deadline of a whole write call (hold, book, cancel, quote, settle, refund, register);
    past it the adapter raises :class:`HisTimeout` and the write may have happened."""
    field_names: Mapping[str, str] = field(default_factory=dict)
    """Documented vendor field name -> the name this HIS uses (JSON key, XML element, view
    column or procedure parameter; also view and procedure names for ``db``). A renamed
    vendor field is fixed here, not in code."""
    entity_fields: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Entity -> domain attribute -> the name this HIS uses (e.g. ``{"department": {"name":
    "deptTitle"}}``): the same overrides as ``field_names``, addressed the way the contract
    names things (see :data:`DOCUMENTED_FIELDS`). A vendor name is renamed wherever it
    appears; ``field_names`` wins over this for the same vendor name."""
    code_tables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Code table -> HIS code -> neutral value, merged over the dialect's defaults. Tables:
    see :data:`NEUTRAL_CODES` (gender, title, period, clinic_type, slot_mode, payer,
    payment_method, report_type, …, and ``error``: vendor error code -> reject reason)."""
    rest_base_path: str = "/openapi/v3"
    """REST: path prefix of every operation."""
    rest_paths: Mapping[str, str] = field(default_factory=dict)
    """REST: operation -> path below the base path (``{id}`` for the resource id)."""
    http_headers: Mapping[str, str] = field(default_factory=dict)
    """REST/SOAP: extra headers sent on every request (e.g. a vendor token header)."""
    max_connections: int = 8
    """REST/SOAP: connection pool size; DB: pool size."""
    soap_path: str = "/HisWebService.asmx"
    """SOAP: path of the endpoint."""
    soap_namespace: str = "urn:huakang:his:ws"
    """SOAP: namespace of the method and its response."""
    soap_method: str = "HisCall"
    """SOAP: the single method's element name."""
    soap_trade_codes: Mapping[str, str] = field(default_factory=dict)
    """SOAP: operation -> trade code."""
    table_prefix: str = ""
    """DB: prefix of every view and table name."""
    db_poll_initial_seconds: float = 0.01
    """DB: first wait before re-reading the procedure response table."""
    db_poll_max_seconds: float = 0.2
    """DB: longest wait between two reads of the response table (exponential backoff)."""
    timezone: str = "Asia/Shanghai"
    """Zone of the HIS's local times."""
    currency: str = "CNY"
    """Currency of every amount."""
    disabled_capabilities: frozenset[str] = frozenset()
    """Capabilities this HIS lacks although its dialect has them (:data:`CAPABILITY_NAMES`)."""

    def __post_init__(self) -> None:
        if self.dialect not in ("rest", "soap", "db"):
            raise ValueError(f"dialect: expected rest, soap or db, got {self.dialect!r}")
        if not self.url:
            raise ValueError("url: must not be empty")
        for name in ("connect_timeout_seconds", "read_timeout_seconds", "write_timeout_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0")
        if not 0 < self.db_poll_initial_seconds <= self.db_poll_max_seconds:
            raise ValueError("db_poll_initial_seconds: must be > 0 and <= db_poll_max_seconds")
        if self.max_connections < 1:
            raise ValueError("max_connections: must be >= 1")
        for old, new in self.field_names.items():
            if not old or not new:
                raise ValueError(f"field_names[{old!r}]: names must not be empty")
            if self.dialect != "rest" and not _NAME.match(new):
                raise ValueError(f"field_names[{old!r}]: {new!r} is not a valid identifier")
        self._check_entity_fields()
        if self.table_prefix and not _NAME.match(self.table_prefix):
            raise ValueError(f"table_prefix: {self.table_prefix!r} is not a valid identifier")
        for table, entries in self.code_tables.items():
            allowed = NEUTRAL_CODES.get(table)
            if allowed is None:
                raise ValueError(
                    f"code_tables.{table}: unknown table; known: {sorted(NEUTRAL_CODES)}"
                )
            for code, neutral in entries.items():
                if neutral not in allowed:
                    raise ValueError(
                        f"code_tables.{table}[{code!r}]: {neutral!r} is not one of "
                        f"{sorted(allowed)}"
                    )
        unknown_ops = set(self.rest_paths) - set(DEFAULT_REST_PATHS)
        if unknown_ops:
            raise ValueError(f"rest_paths: unknown operations {sorted(unknown_ops)}")
        unknown_ops = set(self.soap_trade_codes) - set(DEFAULT_SOAP_TRADE_CODES)
        if unknown_ops:
            raise ValueError(f"soap_trade_codes: unknown operations {sorted(unknown_ops)}")
        unknown_caps = set(self.disabled_capabilities) - CAPABILITY_NAMES
        if unknown_caps:
            raise ValueError(f"disabled_capabilities: unknown {sorted(unknown_caps)}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"timezone: unknown zone {self.timezone!r}") from err
        object.__setattr__(self, "field_names", _frozen(self.field_names))
        object.__setattr__(
            self,
            "entity_fields",
            MappingProxyType({k: _frozen(v) for k, v in self.entity_fields.items()}),
        )
        object.__setattr__(
            self,
            "code_tables",
            MappingProxyType({k: _frozen(v) for k, v in self.code_tables.items()}),
        )
        object.__setattr__(self, "rest_paths", _frozen(self.rest_paths))
        object.__setattr__(self, "http_headers", _frozen(self.http_headers))
        object.__setattr__(self, "soap_trade_codes", _frozen(self.soap_trade_codes))
        object.__setattr__(self, "disabled_capabilities", frozenset(self.disabled_capabilities))

    def _check_entity_fields(self) -> None:
        seen: dict[str, tuple[str, str]] = {}
        documented_maps = DOCUMENTED_FIELDS[self.dialect]
        for entity, attributes in self.entity_fields.items():
            documented_map = documented_maps.get(entity)
            if documented_map is None:
                raise ValueError(
                    f"entity_fields.{entity}: unknown entity; known: {sorted(documented_maps)}"
                )
            for attribute, actual in attributes.items():
                where = f"entity_fields.{entity}.{attribute}"
                documented = documented_map.get(attribute)
                if documented is None:
                    raise ValueError(
                        f"{where}: the {self.dialect} dialect has no such field; known: "
                        f"{sorted(documented_map)}"
                    )
                if not actual or actual.count(".") != documented.count("."):
                    raise ValueError(f"{where}: {actual!r} does not match {documented!r}")
                if self.dialect != "rest" and not all(
                    _NAME.match(part) for part in actual.split(".")
                ):
                    raise ValueError(f"{where}: {actual!r} is not a valid identifier")
                for old, new in zip(documented.split("."), actual.split("."), strict=True):
                    if old in seen and seen[old][0] != new:
                        raise ValueError(
                            f"{where}: maps {old!r} to {new!r} but {seen[old][1]} maps it to "
                            f"{seen[old][0]!r}"
                        )
                    seen[old] = (new, where)

    def resolved_field_names(self) -> Mapping[str, str]:
        """Documented vendor name -> this HIS's name, from both override forms.

        Returns:
            The mapping (only names that differ from the documented ones).
        """
        names: dict[str, str] = {}
        documented_maps = DOCUMENTED_FIELDS[self.dialect]
        for entity, attributes in self.entity_fields.items():
            for attribute, actual in attributes.items():
                documented = documented_maps[entity][attribute] or ""
                for old, new in zip(documented.split("."), actual.split("."), strict=True):
                    if old != new:
                        names[old] = new
        names.update(self.field_names)
        return names

    def merged_code_table(self, table: str) -> Mapping[str, str]:
        """The dialect's default table with this HIS's entries on top.

        Args:
            table: Code table name.

        Returns:
            HIS code -> neutral value.
        """
        merged = dict(DEFAULT_CODE_TABLES[self.dialect].get(table, {}))
        merged.update(self.code_tables.get(table, {}))
        return merged

    def rest_path(self, operation: str) -> str:
        """The REST path of an operation.

        Args:
            operation: Operation name.

        Returns:
            The path below the base path.
        """
        return self.rest_paths.get(operation, DEFAULT_REST_PATHS[operation])

    def trade_code(self, operation: str) -> str:
        """The SOAP trade code of an operation.

        Args:
            operation: Operation name.

        Returns:
            The trade code.
        """
        return self.soap_trade_codes.get(operation, DEFAULT_SOAP_TRADE_CODES[operation])


_MAX_MARGIN_SECONDS = 0.5
"""Time kept, at most, for a HIS failure's answer to travel back before the caller's deadline."""


def within_caller(timeout: float) -> float:
    """``timeout`` (a HIS call's, from the profile), ended before the caller's deadline.

    Inside a tunnel call with a deadline, a HIS call may not outlast it: it gets what is
    left less a margin for the answer's way back (a tenth of it, at most
    `_MAX_MARGIN_SECONDS`). So a HIS slower than the node's deadline comes back as the
    edge's ``HIS_TIMEOUT`` (the HIS's, with its dialect), not as a ``DEADLINE_EXCEEDED``
    the node could not tell from a tunnel that lost the answer. Outside a call (background
    work) the timeout is unchanged.

    Args:
        timeout: the configured seconds.

    Returns:
        The seconds the HIS call may take.
    """
    left = call_time_left()
    if left is None:
        return timeout
    return max(min(timeout, left - min(_MAX_MARGIN_SECONDS, left / 10)), 0.001)

"""Settings of what edges report to the cloud and what the cloud checks on them.

``[edge_api]`` (bounds of `hplus.cloud.v1.EdgeService`), ``[health]`` (alert thresholds, with
per-hospital overrides under ``[health.hospitals.<ID>]``), ``[probes]`` (business probes, with
each hospital's known cases under ``[probes.hospitals.<ID>]``) and ``[reports]`` (report
lookups through the edge's task queue). `cloud.config.NodeConfig` holds one of each;
`from_file` reads them from the node's TOML file with located errors.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mesh.config import ConfigError, Section

__all__ = [
    "EdgeApiConfig",
    "HealthConfig",
    "ProbeCase",
    "ProbesConfig",
    "ReportsConfig",
    "Thresholds",
    "from_file",
]

_MIB = 1024 * 1024


def _positive(owner: str, obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{owner}.{name}: must be > 0, got {value}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeApiConfig:
    """Bounds of ``EdgeService`` on the public endpoint (``[edge_api]``)."""

    max_request_bytes: int = 5 * _MIB
    """Largest request message; larger ones end with RESOURCE_EXHAUSTED before parsing."""
    max_results_per_call: int = 100
    """Task results one ReportTaskResults call may carry (the contract's 100)."""
    max_results_bytes: int = 4 * _MIB
    """Bytes of all results of one call together (the contract's 4 MiB)."""
    max_result_bytes: int = 1 * _MIB
    """Bytes of one result's payload; a larger one is rejected alone (INVALID_ARGUMENT)."""
    calls_per_minute: int = 120
    """Calls one hospital may make per minute (all its edges, all methods); more:
    RESOURCE_EXHAUSTED with RetryInfo."""
    report_interval: float = 30.0
    """``next_report_interval`` the cloud asks edges for, seconds."""
    recent_requests: int = 1000
    """``request_id``s remembered per node for idempotent answers (an LRU)."""

    def __post_init__(self) -> None:
        _positive(
            "edge_api",
            self,
            (
                "max_request_bytes",
                "max_results_per_call",
                "max_results_bytes",
                "max_result_bytes",
                "calls_per_minute",
                "report_interval",
                "recent_requests",
            ),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When an edge's health raises an alert (``[health]``, per hospital overridable)."""

    max_backlog: int = 1000
    """Tasks waiting in any one queue; more is an alert (``BACKLOG``)."""
    max_oldest_age: float = 3600.0
    """Seconds the oldest waiting task may wait; longer is an alert (``TASK_AGE``)."""
    min_disk_free_bytes: int = 1024 * _MIB
    """Free bytes on the edge's store volume; less is an alert (``DISK_LOW``)."""
    his_unreachable: bool = True
    """Whether an unreachable HIS interface is an alert (``HIS_UNREACHABLE``)."""
    stale_after: float = 120.0
    """Seconds without a report after which the edge's health is stale (``SILENT``)."""

    def __post_init__(self) -> None:
        _positive("health", self, ("max_backlog", "max_oldest_age", "stale_after"))
        if self.min_disk_free_bytes < 0:
            raise ConfigError(
                f"health.min_disk_free_bytes: must be >= 0, got {self.min_disk_free_bytes}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class HealthConfig:
    """Edge health kept by the node (``[health]``)."""

    history: int = 200
    """Reports kept per edge (the newest; older ones are deleted as new ones arrive)."""
    defaults: Thresholds = dataclasses.field(default_factory=Thresholds)
    """Thresholds of every hospital without an override."""
    hospitals: Mapping[str, Thresholds] = dataclasses.field(default_factory=dict)
    """Per-hospital thresholds (``[health.hospitals.<ID>]``: only the keys given differ)."""

    def __post_init__(self) -> None:
        _positive("health", self, ("history",))
        object.__setattr__(self, "hospitals", MappingProxyType(dict(self.hospitals)))

    def thresholds(self, hospital_id: str) -> Thresholds:
        """The thresholds in force for ``hospital_id``."""
        return self.hospitals.get(hospital_id, self.defaults)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeCase:
    """The known reads probed at one hospital (``[probes.hospitals.<ID>]``)."""

    patient_id: str = ""
    """A test patient's id at the hospital; without one only departments are probed."""
    report_id: str = ""
    """A report of that patient; empty: the newest available one is picked (and re-picked
    when the HIS archives it)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbesConfig:
    """Business probes (``[probes]``)."""

    enabled: bool = True
    """Run the probe loop (a round per ``interval``)."""
    interval: float = 300.0
    """Seconds between rounds."""
    call_timeout: float = 10.0
    """Deadline of one probe call."""
    window: float = 86400.0
    """Seconds of results availability is computed over."""
    keep: float = 7 * 86400.0
    """Seconds results are kept."""
    hospitals: Mapping[str, ProbeCase] = dataclasses.field(default_factory=dict)
    """Known cases per hospital; hospitals not listed get the department probe only."""

    def __post_init__(self) -> None:
        _positive("probes", self, ("interval", "call_timeout", "window", "keep"))
        object.__setattr__(self, "hospitals", MappingProxyType(dict(self.hospitals)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportsConfig:
    """Report lookups through the edges' task queues (``[reports]``)."""

    database_url: str | None = None
    """Where lookups and their results live until they expire; default
    ``<data_dir>/reports.db``."""
    result_ttl: float = 1800.0
    """Seconds a looked-up result is kept (then purged): the platform is a channel, not
    a store of patients' reports."""
    retry_after: float = 3.0
    """``retry_after`` answered while a lookup is pending, seconds."""
    task_deadline: float = 600.0
    """Seconds after submission the edge may still run a lookup."""
    call_timeout: float = 10.0
    """Deadline of SubmitTask through the tunnel."""
    purge_interval: float = 60.0
    """Seconds between purges of expired lookups."""
    max_pending_per_account: int = 20
    """Lookups one account may have pending at once."""

    def __post_init__(self) -> None:
        _positive(
            "reports",
            self,
            (
                "result_ttl",
                "retry_after",
                "task_deadline",
                "call_timeout",
                "purge_interval",
                "max_pending_per_account",
            ),
        )


_KINDS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _flat(
    cls: type[Any], section: Section, given: Mapping[str, object], skip: tuple[str, ...] = ()
) -> dict[str, object]:
    """The scalar fields of ``cls`` present in ``given`` (types checked, located)."""
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    section.reject_unknown([*fields, *skip])
    out: dict[str, object] = {}
    for name in fields:
        if name in given:
            hint = hints[name]
            kind = str if hint == (str | None) else hint
            out[name] = section.get(name, kind, kind())
    return out


def _build(cls: type[Any], section: Section, kwargs: Mapping[str, object], prefix: str) -> Any:
    try:
        return cls(**kwargs)
    except ConfigError as err:
        key = err.message.split(":", 1)[0].rsplit(".", 1)[-1]
        raise section.error(key, err.message.split(": ", 1)[1]) from None


def _table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    raw = doc.get(name, {})
    return raw if isinstance(raw, Mapping) else {}


def from_file(doc: Mapping[str, Any], path: Path, text: str) -> dict[str, object]:
    """``NodeConfig`` values from the edge tables present in ``doc``.

    The tables are ``[edge_api]``, ``[health]``, ``[probes]`` and ``[reports]``.

    Raises:
        ConfigError: a setting is unknown or invalid (file, line and key named).
    """
    values: dict[str, object] = {}
    edge = Section.of(doc, "edge_api", path=path, text=text)
    given = _flat(EdgeApiConfig, edge, _table(doc, "edge_api"))
    if given:
        values["edge_api"] = _build(EdgeApiConfig, edge, given, "edge_api")

    health = Section.of(doc, "health", path=path, text=text)
    raw = _table(doc, "health")
    base = _flat(Thresholds, health, raw, skip=("history", "hospitals"))
    defaults = _build(Thresholds, health, base, "health")
    overrides: dict[str, Thresholds] = {}
    for hospital_id, table in _table(raw, "hospitals").items():
        sub = Section.of(_table(raw, "hospitals"), hospital_id, path=path, text=text)
        sub = Section(table, name=f"health.hospitals.{hospital_id}", path=path, text=text)
        kwargs = {**base, **_flat(Thresholds, sub, table)}
        overrides[hospital_id] = _build(Thresholds, sub, kwargs, "health")
    if raw:
        kwargs_h: dict[str, object] = {"defaults": defaults, "hospitals": overrides}
        if "history" in raw:
            kwargs_h["history"] = health.get("history", int, 200)
        values["health"] = _build(HealthConfig, health, kwargs_h, "health")

    probes = Section.of(doc, "probes", path=path, text=text)
    raw = _table(doc, "probes")
    kwargs_p = _flat(ProbesConfig, probes, raw, skip=("hospitals",))
    cases: dict[str, ProbeCase] = {}
    for hospital_id, table in _table(raw, "hospitals").items():
        Section.of(_table(raw, "hospitals"), hospital_id, path=path, text=text)
        sub = Section(table, name=f"probes.hospitals.{hospital_id}", path=path, text=text)
        cases[hospital_id] = _build(ProbeCase, sub, _flat(ProbeCase, sub, table), "probes")
    if raw:
        values["probes"] = _build(ProbesConfig, probes, {**kwargs_p, "hospitals": cases}, "probes")

    reports = Section.of(doc, "reports", path=path, text=text)
    given = _flat(ReportsConfig, reports, _table(doc, "reports"))
    if given:
        values["reports"] = _build(ReportsConfig, reports, given, "reports")
    return values

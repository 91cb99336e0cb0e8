"""What the dashboard shows: one row per hospital, assembled from the node's sources.

The overview joins what the node knows of every hospital — its tunnels (presence: every
node's, when presence is Redis), and the public read store's sync state — into rows, and
lets other parts of the node add columns (`Overview.add_source`): edge health, probe
results, errors by owner. A source is an async callable returning, per hospital id, a dict
of display fields; a failing source blanks its columns and says so, it never breaks the page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloud.fleet import CredentialStore
    from cloud.presence import Presence
    from cloud.readstore import ReadStore

__all__ = ["Column", "HospitalRow", "Overview", "Source"]

log = logging.getLogger(__name__)

Source = Callable[[], Awaitable[Mapping[str, Mapping[str, Any]]]]
"""Per hospital id, the fields a source adds to its row."""


@dataclasses.dataclass(frozen=True)
class Column:
    """A column added by a source: the field it reads and its heading."""

    field: str
    heading: str


@dataclasses.dataclass
class HospitalRow:
    """One hospital as the overview shows it."""

    hospital_id: str
    name: str = ""
    online: bool = False
    tunnels: int = 0
    edge_version: str = ""
    contract_release: str = ""
    rtt_ms: float | None = None
    in_flight: int = 0
    last_seen: str = ""
    sync_lag_seconds: float | None = None
    sync_error: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def state(self) -> str:
        """``up`` (green), ``degraded`` (amber: a source flags it) or ``down`` (red)."""
        if not self.online:
            return "down"
        if self.sync_error or any(v == "ALERT" for v in self.extra.values()):
            return "degraded"
        return "up"

    def to_json(self) -> dict[str, Any]:
        """The row as the live refresh receives it."""
        out = dataclasses.asdict(self)
        out["state"] = self.state
        return out


def _iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class Overview:
    """Assembles the rows of the overview from the node's parts."""

    def __init__(
        self,
        *,
        presence: Presence | None,
        readstore: ReadStore | None,
        credentials: CredentialStore | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._presence = presence
        self._readstore = readstore
        self._credentials = credentials
        self._clock = clock
        self._sources: list[tuple[str, Source, list[Column]]] = []

    @property
    def columns(self) -> list[Column]:
        """The columns added by sources, in the order they were added."""
        return [c for _, _, cols in self._sources for c in cols]

    def add_source(self, name: str, source: Source, columns: Sequence[Column]) -> None:
        """Add columns to every row (``name`` appears in the page when the source fails)."""
        self._sources.append((name, source, list(columns)))

    async def rows(self) -> tuple[list[HospitalRow], list[str]]:
        """The rows, sorted with hospitals that are down first, and the sources that failed."""
        rows: dict[str, HospitalRow] = {}
        failed: list[str] = []

        def row(hospital_id: str) -> HospitalRow:
            if hospital_id not in rows:
                rows[hospital_id] = HospitalRow(hospital_id)
            return rows[hospital_id]

        if self._credentials is not None:
            # Every hospital with a live credential is listed, connected or not: a hospital
            # whose edge stopped must turn red, not disappear.
            try:
                issued = await self._credentials.list()
            except Exception:
                log.exception("dashboard: the fleet's credentials failed")
                failed.append("credentials")
                issued = []
            for credential in issued:
                if credential.revoked_at is None:
                    row(credential.hospital_id)
        if self._readstore is not None:
            try:
                statuses = await self._readstore.status()
            except Exception:
                log.exception("dashboard: the read store's sync status failed")
                failed.append("sync status")
                statuses = []
            now = self._clock()
            for status in statuses:
                r = row(status.hospital_id)
                r.name = status.name
                times = [k.data_time for k in status.kinds.values() if k.data_time is not None]
                if times:
                    r.sync_lag_seconds = round((now - min(times)).total_seconds(), 1)
                errors = [k.last_error for k in status.kinds.values() if k.last_error]
                r.sync_error = errors[0] if errors else ""
        if self._presence is not None:
            try:
                tunnels = await self._presence.all()
            except Exception:
                log.exception("dashboard: presence failed")
                failed.append("presence")
                tunnels = []
            for t in tunnels:
                r = row(t.hospital_id)
                r.online = True
                r.tunnels += 1
                r.edge_version = t.edge_version
                r.contract_release = t.contract_release
                if t.rtt_ms is not None:
                    r.rtt_ms = t.rtt_ms if r.rtt_ms is None else max(r.rtt_ms, t.rtt_ms)
                r.in_flight += t.in_flight
                r.last_seen = max(r.last_seen, _iso(t.last_seen))
        for name, source, columns in self._sources:
            try:
                values = await source()
            except Exception:
                log.exception("dashboard: source %s failed", name)
                failed.append(name)
                continue
            for hospital_id, fields in values.items():
                r = row(hospital_id)
                for column in columns:
                    if column.field in fields:
                        r.extra[column.field] = fields[column.field]
        ordered = sorted(rows.values(), key=lambda r: (r.state == "up", r.hospital_id))
        return ordered, failed

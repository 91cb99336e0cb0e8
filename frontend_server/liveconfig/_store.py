"""The edge's history of profiles: one JSON file per revision under ``DATA_DIR/config``.

Every profile the edge makes active (at start, by ApplyConfig, by RollbackConfig) is kept as
``r<revision>.json`` (mode 0600, in a directory mode 0700, through :mod:`mesh.files`) with who
asked, when, the idempotency key and how it came about. The history is bounded: beyond
``limit`` revisions the oldest files are deleted (never the active one). The results of
ApplyConfig / RollbackConfig by idempotency key live in ``results.json`` (bounded too), so a
retry gets the original answer after a restart as well.

The files are small (a profile is a few kB to a few tens of kB) and written rarely: plain
files replaced atomically are enough; no database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mesh.files import create_private_file, make_private_dir, replace_private_file

__all__ = ["ConfigStore", "RevisionSource", "StoredRevision"]

log = logging.getLogger(__name__)

_REVISION_FILE = re.compile(r"^r(\d{6,})\.json$")
_RESULTS = "results.json"


class RevisionSource(enum.StrEnum):
    """How a revision came about (``ConfigRevisionSource`` in the contract)."""

    START = "start"
    APPLY = "apply"
    ROLLBACK = "rollback"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredRevision:
    """One profile the edge made active."""

    revision: int
    """The edge's own number, counting up from 1."""
    profile_id: str
    version: int
    digest: str
    template_id: str
    applied_at: dt.datetime
    """When it became active (UTC)."""
    source: RevisionSource
    requested_by: str = ""
    idempotency_key: str = ""
    restored_revision: int = 0
    """For a rollback: the revision it restored."""
    rolled_back: bool = False
    """It failed its health gate and the previous profile was restored."""
    rollback_reason: str = ""
    content: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    """The merged profile content (secrets are references)."""

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["applied_at"] = self.applied_at.isoformat()
        out["source"] = self.source.value
        out["content"] = dict(self.content)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StoredRevision:
        values = dict(data)
        values["applied_at"] = dt.datetime.fromisoformat(values["applied_at"])
        values["source"] = RevisionSource(values["source"])
        return cls(**values)


class ConfigStore:
    """The history of profiles in ``directory`` (see the module docstring).

    Args:
        directory: where the files live (created mode 0700 by :meth:`open`).
        limit: revisions kept.
        results_limit: idempotency results kept.

    The methods do file I/O: call them from a thread (``asyncio.to_thread``).
    """

    def __init__(self, directory: Path, *, limit: int = 20, results_limit: int = 1000) -> None:
        if limit < 2:
            raise ValueError("limit must be >= 2 (the active revision and one to go back to)")
        self.directory = directory
        self.limit = limit
        self._results_limit = results_limit
        self._revisions: dict[int, StoredRevision] = {}
        self._results: dict[str, dict[str, Any]] = {}

    def open(self) -> None:
        """Creates the directory or reads the history in it.

        A revision file that cannot be read is skipped with a log line naming it (the
        history is a convenience; the profile file is what the edge started with).
        """
        # Files restored from a backup with looser modes are tightened, with one log line.
        existing = sorted(self.directory.iterdir()) if self.directory.is_dir() else []
        make_private_dir(self.directory, files=[p for p in existing if p.is_file()])
        for path in existing:
            match = _REVISION_FILE.match(path.name)
            if match is None:
                continue
            try:
                found = StoredRevision.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError) as err:
                log.warning("config history: %s cannot be read, skipped: %s", path, err)
                continue
            self._revisions[found.revision] = found
        results = self.directory / _RESULTS
        if results.exists():
            try:
                loaded = json.loads(results.read_text(encoding="utf-8"))
                self._results = {str(k): dict(v) for k, v in loaded.items()}
            except (OSError, ValueError, TypeError, AttributeError) as err:
                log.warning("config history: %s cannot be read, ignored: %s", results, err)

    def revisions(self) -> list[StoredRevision]:
        """The history, newest first."""
        return [self._revisions[n] for n in sorted(self._revisions, reverse=True)]

    def get(self, revision: int) -> StoredRevision | None:
        """One revision, or ``None`` when it is not (or no longer) kept."""
        return self._revisions.get(revision)

    def active(self) -> StoredRevision | None:
        """The newest revision that was not rolled back."""
        return next((r for r in self.revisions() if not r.rolled_back), None)

    def record(self, **fields: Any) -> StoredRevision:
        """Writes a new revision (the next number) and prunes the history.

        Args:
            fields: the :class:`StoredRevision` fields but ``revision``.

        Returns:
            The revision written.
        """
        number = max(self._revisions, default=0) + 1
        entry = StoredRevision(revision=number, **fields)
        data = json.dumps(entry.to_json(), sort_keys=True, ensure_ascii=False, default=str)
        create_private_file(self.directory / f"r{number:06d}.json", data.encode("utf-8"))
        self._revisions[number] = entry
        self._prune()
        return entry

    def _prune(self) -> None:
        active = self.active()
        for number in sorted(self._revisions)[: max(0, len(self._revisions) - self.limit)]:
            if active is not None and number == active.revision:
                continue
            (self.directory / f"r{number:06d}.json").unlink(missing_ok=True)
            del self._revisions[number]

    def result(self, key: str) -> dict[str, Any] | None:
        """The recorded result of an idempotency key, or ``None``."""
        return self._results.get(key)

    def remember(self, key: str, result: Mapping[str, Any]) -> None:
        """Records the result of an idempotency key (the oldest are dropped beyond the limit)."""
        self._results[key] = dict(result)
        while len(self._results) > self._results_limit:
            del self._results[next(iter(self._results))]
        data = json.dumps(self._results, sort_keys=False, ensure_ascii=False)
        replace_private_file(self.directory / _RESULTS, data.encode("utf-8"))

"""The edge's data directory: its stores checked at start, and the identity record.

The ledger is the evidence that a booking or a charge happened; the task store holds work
the cloud was told is accepted. Losing either silently is worse than not starting: a
ledger that comes back empty makes a retried booking run again (and be refused as a
duplicate, recorded FAILED, although it exists at the HIS). So before an engine touches
them, :meth:`DataDir.open`:

1. makes the directory mode 0700 and its files 0600 (tightening looser ones, one log line);
2. reads ``edge-identity.json`` (mode 0600): the hospital, the directory's id, each store's
   id (also stamped inside the store), when it was created, and how many entries it held at
   the last clean stop;
3. inspects each store (:func:`~frontend_server.sqlite.inspect_store`: header,
   ``integrity_check``, kind, schema version, stamp) and refuses to start, with
   :class:`StoreRefused`, when a store is damaged, of another kind, written by a newer
   schema, missing or empty where this directory had one, or another directory's (its
   stamp differs from the record's);
4. creates missing stores (stamped), migrates older ones forward, and writes the record.

A refusal names the file, says what is wrong and what to do: restore the file from
backup, or let the operator reset that store, which archives its files (renamed with a
timestamp, never deleted) and begins a new one. A reset applies only to a store that fails
its checks, so a reset flag left in a service definition cannot discard a healthy ledger
at every restart.

Without a record (a new directory, or one from a release before records), stores that
carry no stamp are adopted and stamped; stamped stores mean a record existed, so the
record is re-created from their stamps when they agree, and a store missing beside a
stamped one is refused as above.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from frontend_server.sqlite import (
    FileState,
    StoreFile,
    StoreKind,
    StoreStamp,
    count_entries,
    inspect_store,
    stamp_store,
)
from mesh.files import make_private_dir, replace_private_file, sqlite_files

__all__ = ["IDENTITY_FILE", "DataDir", "StoreRefused", "StoreSlot"]

log = logging.getLogger(__name__)

IDENTITY_FILE = "edge-identity.json"
"""The identity record's file name in the data directory."""
_FORMAT = 1


def _utc(clock: Callable[[], dt.datetime]) -> str:
    return clock().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(stamp: str) -> str:
    """An ISO time as messages show it: ``2026-12-06 00:00:48 UTC``."""
    return stamp.replace("T", " ").replace("Z", " UTC")


class StoreRefused(Exception):
    """The data directory or one of its stores failed the start checks: do not start.

    Args:
        path: the file or directory at fault.
        problem: what is wrong, e.g. "the ledger is empty but this data directory had one
            (created …)".
        store: the store (``"ledger"``, ``"tasks"``) a reset would replace; ``None`` when a
            reset cannot help.
        remedy: what to do instead of a reset.
    """

    def __init__(
        self,
        path: Path,
        problem: str,
        *,
        store: str | None,
        remedy: str = "restore it from backup",
    ) -> None:
        self.path = path
        self.problem = problem
        self.store = store
        self.remedy = remedy
        super().__init__(self.describe("reset it"))

    def describe(self, reset: str) -> str:
        """One line: the path, the problem and what to do.

        Args:
            reset: how the reader resets the store, e.g. "start with --reset-ledger".
        """
        if self.store is None:
            return f"{self.path}: {self.problem}: {self.remedy}"
        return (
            f"{self.path}: {self.problem}: {self.remedy}, or {reset} to archive it and begin "
            f"a new one"
        )


@dataclasses.dataclass(frozen=True)
class StoreSlot:
    """One store of the data directory."""

    kind: StoreKind
    """What it is."""
    file: str
    """Its file name in the directory."""


def _entries(count: int) -> str:
    return "1 entry" if count == 1 else f"{count:,} entries"


def _history(entry: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    created = f"created {_shown(str(entry.get('created_at', '?')))}"
    entries = entry.get("entries_at_last_clean_stop")
    stopped = record.get("last_clean_stop")
    if isinstance(entries, int) and stopped:
        return f"{created}, {_entries(entries)} at the last clean stop on {_shown(stopped)}"
    return f"{created}, no clean stop recorded since"


class DataDir:
    """The edge's data directory (see the module docstring).

    Args:
        path: the directory (created mode 0700 if missing).
        hospital_id: the hospital this edge serves; a directory of another is refused.
        stores: the stores kept in it.
        clock: the current time, timezone-aware (tests pass their own).
    """

    def __init__(
        self,
        path: Path,
        *,
        hospital_id: str,
        stores: Sequence[StoreSlot],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.path = path
        self.hospital_id = hospital_id
        self.stores = tuple(stores)
        self._clock = clock
        self._record: dict[str, Any] | None = None

    @property
    def identity_path(self) -> Path:
        """The identity record's file."""
        return self.path / IDENTITY_FILE

    def store_path(self, name: str) -> Path:
        """The file of the store called ``name``."""
        for slot in self.stores:
            if slot.kind.name == name:
                return self.path / slot.file
        raise KeyError(name)

    # -- start ---------------------------------------------------------------------------

    def open(self, *, reset: Collection[str] = ()) -> None:
        """Check the directory and its stores, prepare them, and write the record.

        Args:
            reset: stores (by name) to archive and begin anew *if they fail their checks*.

        Raises:
            StoreRefused: a check failed (and no reset applies).
            OSError: the directory or a file cannot be created, read or changed.
        """
        files = [self.identity_path]
        for slot in self.stores:
            files.extend(sqlite_files(self.path / slot.file))
        make_private_dir(self.path, files=files)
        record = self._load()
        if record is not None and record["hospital_id"] != self.hospital_id:
            raise StoreRefused(
                self.path,
                f"this data directory belongs to hospital {record['hospital_id']} "
                f"(created {_shown(record['created_at'])}), not {self.hospital_id}",
                store=None,
                remedy="give each hospital's edge its own --data-dir",
            )
        kinds = [slot.kind for slot in self.stores]
        found: dict[str, StoreFile] = {}
        for slot in self.stores:
            path = self.path / slot.file
            try:
                found[slot.kind.name] = inspect_store(
                    path, slot.kind, known=[k for k in kinds if k is not slot.kind]
                )
            except sqlite3.Error as err:
                raise StoreRefused(
                    path,
                    f"{slot.kind.title} cannot be read ({err})",
                    store=None,
                    remedy="check that no other edge uses this data directory, and its permissions",
                ) from None
        now = _utc(self._clock)
        witness = self._witness(record, found)
        recreated = record is None and witness is not None
        if record is None:
            record = self._new_record(witness, now)
        # Every check first: a refusal must leave the directory exactly as it was.
        problems = {
            slot.kind.name: self._problem(slot.kind, found[slot.kind.name], record, witness)
            for slot in self.stores
        }
        for name, problem in problems.items():
            if problem is not None and name not in reset:
                raise problem
        for slot in self.stores:
            try:
                self._prepare(
                    slot, found[slot.kind.name], problems[slot.kind.name], record, reset, now
                )
            except sqlite3.Error as err:
                raise StoreRefused(
                    self.path / slot.file,
                    f"{slot.kind.title} cannot be prepared ({err})",
                    store=None,
                    remedy="check the disk's free space and the file's permissions",
                ) from None
        if recreated:
            log.warning(
                "%s was missing: re-created from the stores' stamps (data directory created %s)",
                self.identity_path,
                _shown(record["created_at"]),
            )
        record["last_start"] = now
        self._record = record
        self._save()

    def _load(self) -> dict[str, Any] | None:
        path = self.identity_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        remedy = "restore it from backup, or remove it to re-create it from the stores"
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise StoreRefused(
                path, f"the identity record is not JSON ({err})", store=None, remedy=remedy
            ) from None
        fields = {"hospital_id": str, "data_dir_id": str, "created_at": str, "stores": dict}
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("format"), int)
            or any(not isinstance(record.get(k), t) for k, t in fields.items())
        ):
            raise StoreRefused(path, "the identity record is incomplete", store=None, remedy=remedy)
        if record["format"] > _FORMAT:
            raise StoreRefused(
                path,
                f"the identity record was written by a newer release of hplus (format "
                f"{record['format']}; this one knows up to {_FORMAT})",
                store=None,
                remedy="run the release that wrote it",
            )
        record.setdefault("archived", [])
        record.setdefault("last_clean_stop", None)
        return record

    def _witness(
        self, record: dict[str, Any] | None, found: Mapping[str, StoreFile]
    ) -> StoreFile | None:
        """Without a record: the first stamped store, which proves a directory existed."""
        if record is not None:
            return None
        for slot in self.stores:
            store = found[slot.kind.name]
            if store.state is FileState.STAMPED:
                return store
        return None

    def _new_record(self, witness: StoreFile | None, now: str) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "hospital_id": self.hospital_id,
            "data_dir_id": witness.stamp.data_dir_id
            if witness is not None and witness.stamp is not None
            else uuid.uuid4().hex,
            "created_at": witness.stamp.created_at
            if witness is not None and witness.stamp is not None
            else now,
            "stores": {},
            "archived": [],
            "last_clean_stop": None,
        }

    def _problem(
        self,
        kind: StoreKind,
        store: StoreFile,
        record: Mapping[str, Any],
        witness: StoreFile | None,
    ) -> StoreRefused | None:
        path, title, name = store.path, kind.title, kind.name
        entry = record["stores"].get(name)
        state = store.state
        if state in (FileState.DAMAGED, FileState.NOT_SQLITE):
            return StoreRefused(path, f"{title} is damaged ({store.detail})", store=name)
        if state is FileState.FOREIGN:
            return StoreRefused(
                path,
                f"this is not {title}: {store.detail}",
                store=name,
                remedy=f"put back this data directory's {path.name} (restore it from backup)",
            )
        if state is FileState.NEWER:
            return StoreRefused(
                path,
                f"{title} was written by a newer release of hplus (schema "
                f"{store.schema_version}; this one knows up to {kind.schema_version})",
                store=name,
                remedy="run the release that wrote it",
            )
        if state in (FileState.MISSING, FileState.EMPTY):
            if isinstance(entry, dict):
                return StoreRefused(
                    path,
                    f"{title} is {state.value} but this data directory had one "
                    f"({_history(entry, record)})",
                    store=name,
                )
            if witness is not None and witness.stamp is not None:
                return StoreRefused(
                    path,
                    f"{title} is {state.value} but {witness.path.name} shows this data "
                    f"directory had one (created {_shown(witness.stamp.created_at)}) and "
                    f"{IDENTITY_FILE} is gone",
                    store=name,
                )
            return None
        if state is FileState.UNSTAMPED:
            if isinstance(entry, dict):
                return StoreRefused(
                    path,
                    f"{title} is not this data directory's: it carries no store id, and this "
                    f"directory's was {_history(entry, record)}",
                    store=name,
                    remedy=f"put back this data directory's {path.name} (restore it from backup)",
                )
            return None
        stamp = store.stamp
        assert stamp is not None
        if stamp.hospital_id != self.hospital_id:
            return StoreRefused(
                path,
                f"{title} belongs to hospital {stamp.hospital_id} (created "
                f"{_shown(stamp.created_at)}), not {self.hospital_id}",
                store=name,
                remedy=f"put back this data directory's {path.name} (restore it from backup)",
            )
        expected = entry.get("store_id") if isinstance(entry, dict) else None
        if (expected is not None and stamp.store_id != expected) or (
            expected is None and stamp.data_dir_id != record["data_dir_id"]
        ):
            ours = (
                f"this directory's was {_history(entry, record)}"
                if isinstance(entry, dict)
                else f"this directory was created {_shown(record['created_at'])}"
            )
            return StoreRefused(
                path,
                f"{title} is another data directory's (created "
                f"{_shown(stamp.created_at)}, store id {stamp.store_id[:12]}); {ours}",
                store=name,
                remedy=f"put back this data directory's {path.name} (restore it from backup)",
            )
        return None

    def _prepare(
        self,
        slot: StoreSlot,
        store: StoreFile,
        problem: StoreRefused | None,
        record: dict[str, Any],
        reset: Collection[str],
        now: str,
    ) -> None:
        kind = slot.kind
        if problem is not None:
            archived = self._archive(store.path, now)
            log.warning(
                "%s: %s; reset as asked: %s; beginning a new one",
                store.path,
                problem.problem,
                f"archived as {', '.join(p.name for p in archived)}"
                if archived
                else "nothing to archive",
            )
            record["archived"].append(
                {
                    "store": kind.name,
                    "files": [p.name for p in archived],
                    "at": now,
                    "problem": problem.problem,
                }
            )
            store = StoreFile(path=store.path, state=FileState.MISSING)
        elif kind.name in reset:
            log.info(
                "%s passed its checks: kept (a reset applies only to a store that fails them)",
                store.path,
            )
        entry = record["stores"].get(kind.name)
        if store.state in (FileState.MISSING, FileState.EMPTY, FileState.UNSTAMPED):
            stamp = StoreStamp(
                store_id=uuid.uuid4().hex,
                data_dir_id=record["data_dir_id"],
                hospital_id=self.hospital_id,
                created_at=now,
            )
            stamp_store(store.path, kind, stamp, from_version=store.schema_version)
            if store.state is FileState.UNSTAMPED:
                log.warning(
                    "%s: %s from an earlier release adopted (%s) and stamped (schema %d -> %d)",
                    store.path,
                    kind.title,
                    _entries(count_entries(store.path, kind)),
                    store.schema_version,
                    kind.schema_version,
                )
            entry = {
                "file": slot.file,
                "store_id": stamp.store_id,
                "created_at": now,
                "entries_at_last_clean_stop": None,
            }
        else:
            assert store.stamp is not None
            if store.schema_version < kind.schema_version:
                stamp_store(store.path, kind, None, from_version=store.schema_version)
                log.warning(
                    "%s: %s migrated from schema %d to %d",
                    store.path,
                    kind.title,
                    store.schema_version,
                    kind.schema_version,
                )
            if not isinstance(entry, dict):
                entry = {
                    "file": slot.file,
                    "store_id": store.stamp.store_id,
                    "created_at": store.stamp.created_at,
                    "entries_at_last_clean_stop": None,
                }
        entry["schema_version"] = kind.schema_version
        record["stores"][kind.name] = entry

    def _archive(self, path: Path, now: str) -> list[Path]:
        """Rename the store's files (database, WAL, …) aside with a timestamp."""
        present = [p for p in sqlite_files(path) if p.exists()]
        if not present:
            return []
        mark = now.replace("-", "").replace(":", "")
        base = path.with_name(f"{path.stem}-archived-{mark}{path.suffix}")
        serial = 1
        while any(base.with_name(base.name + p.name[len(path.name) :]).exists() for p in present):
            serial += 1
            base = path.with_name(f"{path.stem}-archived-{mark}-{serial}{path.suffix}")
        archived = []
        for p in present:
            target = base.with_name(base.name + p.name[len(path.name) :])
            os.rename(p, target)
            archived.append(target)
        return archived

    def _save(self) -> None:
        assert self._record is not None
        data = json.dumps(self._record, indent=2, sort_keys=True) + "\n"
        replace_private_file(self.identity_path, data.encode())

    # -- stop ----------------------------------------------------------------------------

    def record_clean_stop(self, *, damaged: Collection[str] = ()) -> None:
        """Note in the record that the edge stopped cleanly, with each store's entry count.

        Call after the stores are closed. Nothing is recorded when a store was found
        damaged while running (``damaged``): that stop was not clean.

        Args:
            damaged: names of stores found damaged while running.
        """
        record = self._record
        if record is None:
            return
        if damaged:
            log.warning("not recording a clean stop: %s damaged", ", ".join(sorted(damaged)))
            return
        for slot in self.stores:
            path = self.path / slot.file
            try:
                entries = count_entries(path, slot.kind)
            except sqlite3.Error as err:
                log.warning("not recording a clean stop: %s cannot be read (%s)", path, err)
                return
            record["stores"][slot.kind.name]["entries_at_last_clean_stop"] = entries
        record["last_clean_stop"] = _utc(self._clock)
        self._save()

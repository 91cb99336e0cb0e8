"""``hplus cloud hospitals …`` and ``hplus cloud sync …``: the public read store by hand."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import CliError, Parser
from tools.cli._node import config_flags
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.config import NodeConfig
    from cloud.readstore import HospitalSyncStatus, ReadStore

__all__ = ["register"]

T = TypeVar("T")


def register(csub: argparse._SubParsersAction[Parser]) -> None:
    """Add ``hospitals`` and ``sync`` to the ``cloud`` command group."""
    hosp = csub.add_parser("hospitals", help="hospital master data of the public read store")
    hs = hosp.add_subparsers(dest="hospitals_cmd", metavar="COMMAND", parser_class=Parser)
    hs.required = True
    imp = hs.add_parser(
        "import",
        help="import hospitals' public master data from a TOML file ([[hospital]] tables)",
        description="Validate FILE (errors name the file, line and key) and insert or replace "
        "the hospitals it lists. Names and aliases are indexed with their pinyin initials.",
    )
    imp.add_argument("file", metavar="FILE", type=Path)
    config_flags(imp)
    imp.set_defaults(func=_import)
    ls = hs.add_parser("list", help="list the hospitals' master data")
    ls.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(ls)
    ls.set_defaults(func=_list)

    sync = csub.add_parser("sync", help="the read store's sync with every hospital")
    ss = sync.add_subparsers(dest="sync_cmd", metavar="COMMAND", parser_class=Parser)
    ss.required = True
    status = ss.add_parser(
        "status",
        help="per hospital: watermarks, last success, lag, last error, stale flag, drift check",
        description="Read every hospital's sync state from the read store (shared by all "
        "nodes): per entity kind the watermark, last success, data time and last error; the "
        "node holding the sync lease; whether it is stale; the last digest comparison.",
    )
    status.add_argument("--hospital", help="only this hospital")
    status.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(status)
    status.set_defaults(func=_status)


def _with_store(config: NodeConfig, action: Callable[[ReadStore], Awaitable[T]]) -> T:
    from cloud.db import DatabaseError
    from cloud.readstore import ReadStore

    async def go() -> T:
        store = await ReadStore.open(config.readstore_url)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except DatabaseError as err:
        raise CliError(str(err)) from None


def _import(args: argparse.Namespace) -> int:
    from cloud.readstore import HospitalRecord, load_hospitals
    from mesh.config import ConfigError

    config = _load(args)
    try:
        records: list[HospitalRecord] = load_hospitals(args.file)
    except ConfigError as err:
        raise CliError(str(err)) from None

    async def put(store: ReadStore) -> tuple[int, int]:
        return await store.put_hospitals(records)

    added, replaced = _with_store(config, put)
    print(f"imported {len(records)} hospital(s) from {args.file}: {added} new, {replaced} replaced")
    return 0


def _list(args: argparse.Namespace) -> int:
    from cloud.readstore import HospitalRecord

    async def get(store: ReadStore) -> list[HospitalRecord]:
        return await store.hospitals()

    rows = _with_store(_load(args), get)
    if args.format == "json":
        for r in rows:
            record = {
                "hospital_id": r.hospital_id,
                "name": r.name,
                "aliases": list(r.aliases),
                "name_initials": r.name_initials,
                "grade": r.grade,
                "region_code": r.region_code,
                "time_zone": r.time_zone,
                "features": list(r.features),
            }
            print(json.dumps(record, ensure_ascii=False))
        return 0
    print(f"{'HOSPITAL':<16} {'REGION':<7} {'INITIALS':<12} {'FEATURES':<28} NAME (ALIASES)")
    for r in rows:
        aliases = f" ({', '.join(r.aliases)})" if r.aliases else ""
        features = ",".join(r.features) or "-"
        print(
            f"{r.hospital_id:<16} {r.region_code or '-':<7} {r.name_initials:<12} "
            f"{features:<28} {r.name}{aliases}"
        )
    print(f"{len(rows)} hospital(s)")
    return 0


def _when(value: dt.datetime | None) -> str:
    return (
        value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        if value
        else "-"
    )


def _age(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = max(0, int(value.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _state(s: HospitalSyncStatus, now: dt.datetime, stale_after: float) -> str:
    if s.offline_since is not None:
        return "offline"
    if not s.kinds:
        return "never synced"
    if s.stale(now, stale_after):
        return "stale"
    return "ok"


def _status_json(s: HospitalSyncStatus, now: dt.datetime, stale_after: float) -> dict[str, Any]:
    from cloud.readstore import KIND_NAMES

    lag = s.lag(now)
    return {
        "hospital_id": s.hospital_id,
        "name": s.name,
        "state": _state(s, now, stale_after),
        "stale": s.stale(now, stale_after),
        "last_success": _when(s.last_success) if s.last_success else None,
        "lag_seconds": round(lag.total_seconds(), 3) if lag is not None else None,
        "offline_since": _when(s.offline_since) if s.offline_since else None,
        "lease_owner": s.lease_owner,
        "last_drift_check": _when(s.last_drift_check) if s.last_drift_check else None,
        "drift_result": s.drift_result,
        "flag": s.flag,
        "flagged_at": _when(s.flagged_at) if s.flagged_at else None,
        "kinds": {
            KIND_NAMES[k.kind]: {
                "watermark": k.watermark,
                "last_success": _when(k.last_success) if k.last_success else None,
                "data_time": _when(k.data_time) if k.data_time else None,
                "last_error": k.last_error,
                "last_error_at": _when(k.last_error_at) if k.last_error_at else None,
                "failures": k.failures,
                "last_changes": k.last_changes,
                "last_snapshot": k.last_snapshot,
            }
            for k in sorted(s.kinds.values(), key=lambda k: k.kind)
            if k.kind in KIND_NAMES
        },
    }


def _status(args: argparse.Namespace) -> int:
    from cloud.readstore import KIND_NAMES

    config = _load(args)

    async def get(store: ReadStore) -> list[HospitalSyncStatus]:
        return await store.status(args.hospital)

    rows = _with_store(config, get)
    if args.hospital and not rows:
        raise CliError(f"no hospital {args.hospital!r} in the read store", exit_code=1)
    now = dt.datetime.now(dt.UTC)
    stale_after = config.sync.stale_after
    if args.format == "json":
        for s in rows:
            print(json.dumps(_status_json(s, now, stale_after), ensure_ascii=False))
        return 0
    for s in rows:
        print(
            f"{s.hospital_id}  {s.name or '(no master data)'}  [{_state(s, now, stale_after)}]  "
            f"last success {_when(s.last_success)}  lag {_age(s.lag(now))}  "
            f"lease {s.lease_owner or '-'}"
        )
        if s.offline_since:
            print(f"  offline since {_when(s.offline_since)}")
        for k in sorted(s.kinds.values(), key=lambda k: k.kind):
            print(
                f"  {KIND_NAMES.get(k.kind, str(k.kind)):<12} watermark {k.watermark or '-':<24} "
                f"success {_when(k.last_success)}  data {_when(k.data_time)}  "
                f"changes {k.last_changes}{' (snapshot)' if k.last_snapshot else ''}  "
                f"failures {k.failures}"
            )
            if k.last_error:
                print(f"    last error {_when(k.last_error_at)}: {k.last_error}")
        print(f"  drift check {_when(s.last_drift_check)}: {s.drift_result or '-'}")
        if s.flag:
            print(f"  ! feed flagged {_when(s.flagged_at)}: {s.flag}")
    print(f"{len(rows)} hospital(s)")
    return 0

"""``hplus partitions …``: the business partitions' map, row counts, and online splits."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_FAILED, CliError, Parser
from tools.cli._node import config_flags
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.partitions import Status

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``partitions`` command group."""
    p = sub.add_parser(
        "partitions",
        help="business partitions: the region map, row counts, online splits",
        description="Accounts and patients (orders and payments next) live in partitions by "
        "region (a GB/T 2260 province code). These commands read and change the partition map "
        "in the control database ([databases] partitions; default DATA_DIR/partitions.db).",
    )
    psub = p.add_subparsers(dest="partitions_cmd", metavar="COMMAND", parser_class=Parser)
    psub.required = True

    status = psub.add_parser(
        "status",
        help="partitions, their regions, URLs (no passwords), fences, row counts, the map version",
    )
    status.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(status)
    status.set_defaults(func=_status)

    split = psub.add_parser(
        "split",
        help="split a partition into new ones, online (copy, catch up, fence, switch)",
        description="Copy every row of SOURCE's regions into the new partitions while nodes "
        "keep writing (changes made during the copy are captured and replayed), then fence "
        "SOURCE, replay the last changes and switch the map in one transaction. Nodes notice "
        "within their map poll; SOURCE refuses writes only between its fence and the switch "
        "(printed). SOURCE keeps its rows, retired. Without --assign, SOURCE's regions in code "
        "order are cut into equal runs, the first run to the first target.",
    )
    split.add_argument("source", metavar="SOURCE")
    split.add_argument(
        "--into",
        required=True,
        metavar="NAME=URL,NAME=URL",
        help="the new partitions and their (empty, unused) databases",
    )
    split.add_argument(
        "--assign",
        action="append",
        default=[],
        metavar="NAME=REGION,REGION",
        help="the regions one target takes (repeat per target; all of SOURCE's, once each)",
    )
    config_flags(split)
    split.set_defaults(func=_split)

    unfence = psub.add_parser(
        "unfence",
        help="lift the fence a split killed between its fence and its switch left behind",
    )
    unfence.add_argument("name", metavar="PARTITION")
    config_flags(unfence)
    unfence.set_defaults(func=_unfence)


def _run(action: Callable[[], Coroutine[Any, Any, T]]) -> T:
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.db import DatabaseError
    from cloud.partitions import PartitionError

    try:
        return asyncio.run(action())
    except (DatabaseError, PartitionError) as err:
        raise CliError(str(err)) from None
    except (OSError, SQLAlchemyError) as err:
        raise CliError(str(err).splitlines()[0], exit_code=EXIT_FAILED) from None


def _pairs(text: str, flag: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise CliError(f"{flag}: expected NAME=VALUE, got {item!r}")
        out.append((name.strip(), value.strip()))
    return out


def _absolute(url: str) -> str:
    """A SQLite URL with a relative path made absolute.

    The map is read by nodes whose working directory is not this command's.
    """
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return url  # refused, with its reason, when the split opens it
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if Path(parsed.database).is_absolute():
        return url
    absolute = parsed.set(database=str(Path(parsed.database).resolve()))
    return absolute.render_as_string(hide_password=False)


def _status(args: argparse.Namespace) -> int:
    from cloud.partitioned import SCHEMAS
    from cloud.partitions import read_status, redact

    config = _load(args)
    status = _run(lambda: read_status(config.partitions_url, SCHEMAS))
    if status is None:
        print(f"no partition map yet in {redact(config.partitions_url)}: start a node once")
        return EXIT_FAILED
    if args.format == "json":
        print(json.dumps(_as_json(status), indent=2))
        return 0
    print(f"partition map version {status.map.version} ({redact(config.partitions_url)})")
    header = ("PARTITION", "STATE", "FENCED", "ROWS", "REGIONS", "URL")
    print("{:<12} {:<8} {:<7} {:>8}  {:<60} {}".format(*header))
    for p in status.partitions:
        fenced = "?" if p.fenced is None else ("yes" if p.fenced else "no")
        rows = "?" if p.error else f"{sum(p.rows.values()):,}"
        regions = ",".join(p.regions) or "-"
        print(f"{p.name:<12} {p.state.value:<8} {fenced:<7} {rows:>8}  {regions:<60} {p.url}")
        if p.error:
            print(f"  ! cannot read its database: {p.error}")
        elif any(p.rows.values()):
            counts = ", ".join(f"{t} {n:,}" for t, n in sorted(p.rows.items()) if n)
            redundant = " (redundant: never read)" if p.state.value == "retired" else ""
            print(f"  {counts}{redundant}")
    for s in status.splits:
        targets = "; ".join(f"{t} <- {','.join(r)}" for t, r in s.targets.items())
        pause = "" if s.pause_seconds is None else f", writes paused {s.pause_seconds:.3f}s"
        when = s.started_at.isoformat(timespec="seconds")
        detail = f": {s.detail}" if s.detail else ""
        print(
            f"split {s.split_id} {when} {s.source} -> {targets}: {s.state}, "
            f"{s.rows_copied:,} rows copied{pause}{detail}"
        )
    return 0


def _as_json(status: Status) -> dict[str, Any]:
    return {
        "map_version": status.map.version,
        "partitions": [
            {
                "name": p.name,
                "state": p.state.value,
                "fenced": p.fenced,
                "regions": list(p.regions),
                "url": p.url,
                "rows": p.rows,
                "error": p.error,
            }
            for p in status.partitions
        ],
        "splits": [
            {
                "split_id": s.split_id,
                "source": s.source,
                "targets": s.targets,
                "state": s.state,
                "started_at": s.started_at.isoformat(),
                "rows_copied": s.rows_copied,
                "pause_seconds": s.pause_seconds,
                "detail": s.detail,
            }
            for s in status.splits
        ],
    }


def _split(args: argparse.Namespace) -> int:
    from cloud.partitioned import SCHEMAS
    from cloud.partitions import split

    into = [(name, _absolute(url)) for name, url in _pairs(args.into, "--into")]
    assign: dict[str, list[str]] | None = None
    if args.assign:
        assign = {}
        for item in args.assign:
            name, sep, regions = item.partition("=")
            if not sep or not name:
                raise CliError(f"--assign: expected NAME=REGION,REGION, got {item!r}")
            assign.setdefault(name, []).extend(r.strip() for r in regions.split(",") if r.strip())
    config = _load(args)

    def progress(line: str) -> None:
        print(line)
        sys.stdout.flush()

    report = _run(
        lambda: split(
            config.partitions_url, args.source, into, SCHEMAS, assign=assign, progress=progress
        )
    )
    print(
        f"done: {report.rows_copied:,} rows copied, {report.changes_replayed:,} changes "
        f"replayed; {report.source} refused writes for {report.pause_seconds:.3f}s; map "
        f"version {report.map_version} (nodes switch within their map poll)"
    )
    return 0


def _unfence(args: argparse.Namespace) -> int:
    from cloud.partitions import unfence

    config = _load(args)
    if _run(lambda: unfence(config.partitions_url, args.name)):
        print(f"lifted the fence of {args.name}; writers waiting on it retry at once")
    else:
        print(f"{args.name} was not fenced")
    return 0

"""``hplus cloud errors``: failed calls grouped by owner and hospital (issue 13, item 3)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import time
from typing import TYPE_CHECKING, Any

from mesh.attribution import Owner
from tools.cli._base import CliError, Parser
from tools.cli._node import config_flags
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.attribution import FailureRow, Group

__all__ = ["parse_since", "register"]

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_OWNERS = tuple(owner.value for owner in Owner)


def parse_since(text: str) -> float:
    """Seconds of a ``--since`` value such as ``90s``, ``15m``, ``1h`` or ``7d``.

    Raises:
        CliError: not a positive number followed by s, m, h or d.
    """
    found = _SINCE.match(text.strip())
    if not found or int(found.group(1)) == 0:
        raise CliError(f"--since: expected a positive N followed by s, m, h or d, got {text!r}")
    return int(found.group(1)) * _UNIT[found.group(2)]


def register(csub: argparse._SubParsersAction[Parser]) -> None:
    """Add ``errors`` to the ``cloud`` command group."""
    p = csub.add_parser(
        "errors",
        help="failed calls grouped by owner and hospital (who must act, and why)",
        description="Read the failed calls every node recorded in the fleet database and "
        "group them by owner (patient_input, app, cloud_platform, tunnel_network, "
        "frontend_server, his_vendor, hospital_network, payment_channel) and hospital, "
        "with the attribution table's reason codes (mesh.attribution). --rows lists the "
        "calls themselves with their request ids (hplus trace REQUEST_ID shows one).",
    )
    p.add_argument("--since", default="1h", help="how far back: N followed by s, m, h or d")
    p.add_argument("--owner", choices=_OWNERS, help="only this owner's failures")
    p.add_argument("--hospital", help="only this hospital's failures")
    p.add_argument("--rows", action="store_true", help="list the failed calls, newest first")
    p.add_argument("--limit", type=int, default=50, help="rows listed with --rows (default 50)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(p)
    p.set_defaults(func=_errors)


def _read(args: argparse.Namespace, since: float) -> tuple[list[Group], list[FailureRow]]:
    from cloud.attribution import FailureStore, migrate_attribution
    from cloud.db import DatabaseError, create_engine

    config = _load(args)

    async def go() -> tuple[list[Group], list[FailureRow]]:
        engine = create_engine(config.fleet_url)
        try:
            await migrate_attribution(engine)
            store = FailureStore(engine)
            groups = await store.groups(since=since, owner=args.owner, hospital_id=args.hospital)
            rows = (
                await store.rows(
                    since=since, owner=args.owner, hospital_id=args.hospital, limit=args.limit
                )
                if args.rows
                else []
            )
            return groups, rows
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except DatabaseError as err:
        raise CliError(str(err)) from None


def _errors(args: argparse.Namespace) -> int:
    window = parse_since(args.since)
    if args.limit <= 0:
        raise CliError("--limit: expected a positive number")
    since = time.time() - window
    groups, rows = _read(args, since)
    if args.format == "json":
        out: dict[str, Any] = {
            "since": dt.datetime.fromtimestamp(since, dt.UTC).isoformat(timespec="seconds"),
            "total": sum(g.count for g in groups),
            "calls": sum(g.calls for g in groups),
            "by_owner": _totals(groups),
            "groups": [g.as_dict() for g in groups],
        }
        if args.rows:
            out["rows"] = [r.as_dict() for r in rows]
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    if not groups:
        print(f"no failed calls in the last {args.since}")
        return 0
    total = sum(g.count for g in groups)
    calls = sum(g.calls for g in groups)
    print(
        f"{total} failed requests ({calls} failed calls, the node's calls to edges included) "
        f"in the last {args.since}"
    )
    print("by owner: " + ", ".join(f"{o} {n}" for o, n in _totals(groups).items()))
    print()
    print(f"{'OWNER':<17} {'HOSPITAL':<16} {'FAILED':>6}  {'VENDOR':<10} REASONS")
    for g in groups:
        reasons = ", ".join(
            f"{r} {n}" for r, n in sorted(g.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        print(
            f"{g.owner:<17} {g.hospital_id or '-':<16} {g.count:>6}  {g.vendor or '-':<10} "
            f"{reasons}"
        )
    if args.rows:
        print()
        print(
            f"{'TIME (UTC)':<19} {'OWNER':<17} {'REASON':<22} {'HOSPITAL':<14} {'CODE':<19} "
            f"{'METHOD':<44} REQUEST ID"
        )
        for r in rows:
            when = dt.datetime.fromtimestamp(r.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            method = r.method.rsplit(".", 1)[-1] + (" (to edge)" if r.side == "hospital" else "")
            print(
                f"{when:<19} {r.owner:<17} {r.reason:<22} {r.hospital_id or '-':<14} "
                f"{r.code:<19} {method:<44} {r.request_id or '-'}"
            )
    return 0


def _totals(groups: list[Group]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for g in groups:
        totals[g.owner] = totals.get(g.owner, 0) + g.count
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))

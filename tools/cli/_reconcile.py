"""``hplus reconcile DATE``: the three-way reconciliation of one business date, run on a node."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

from tools.cli._base import EXIT_FAILED, CliError, Parser
from tools.cli._cloud import _NODE_HINT, _internal
from tools.cli._node import config_flags, failure, run_on_node

if TYPE_CHECKING:
    from hplus.cloud.v1 import operations_pb2

_CSV_COLUMNS = (
    "kind",
    "hospital_id",
    "order_id",
    "out_trade_no",
    "out_refund_no",
    "platform_fen",
    "channel_fen",
    "hospital_fen",
    "resolution",
    "evidence",
    "detail",
)


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``reconcile`` command."""
    p = sub.add_parser(
        "reconcile",
        help="reconcile one business date: platform orders vs the channel's statement vs "
        "each hospital's ledger",
        description="Ask a node (its internal endpoint, with the cluster secret) to reconcile "
        "DATE (YYYY-MM-DD, UTC+8): the platform's payments, the payment channel's statement and "
        "every hospital's GetDailyLedger. The run is stored in the control database. Exit 0: "
        "no discrepancy and every ledger read; 1: discrepancies (listed) or a ledger not read; "
        "2: bad input or refused; 3: node unreachable.",
    )
    p.add_argument("date", metavar="DATE", help="business date, YYYY-MM-DD")
    p.add_argument("--hospital", metavar="ID", help="only this hospital")
    p.add_argument("--format", choices=["text", "json", "csv"], default="text")
    p.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the run (default 300)"
    )
    config_flags(p)
    p.set_defaults(func=_reconcile)


def _yuan(value: int | None) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    return f"{sign}{abs(value) // 100}.{abs(value) % 100:02d}"


def _kind(value: int) -> str:
    from hplus.cloud.v1 import operations_pb2

    return operations_pb2.DiscrepancyKind.Name(value).removeprefix("DISCREPANCY_KIND_")  # type: ignore[arg-type]


def _fen(item: Any, name: str) -> int | None:
    return int(getattr(item, name)) if item.HasField(name) else None


def _rows(reply: operations_pb2.ReconcileResponse) -> list[dict[str, Any]]:
    return [
        {
            "kind": _kind(d.kind),
            "hospital_id": d.hospital_id,
            "order_id": d.order_id,
            "out_trade_no": d.out_trade_no,
            "out_refund_no": d.out_refund_no,
            "platform_fen": _fen(d, "platform_fen"),
            "channel_fen": _fen(d, "channel_fen"),
            "hospital_fen": _fen(d, "hospital_fen"),
            "resolution": d.resolution,
            "evidence": d.evidence,
            "detail": d.detail,
        }
        for d in reply.discrepancies
    ]


def _print_text(reply: operations_pb2.ReconcileResponse, day: dt.date) -> None:
    scope = f" hospital {reply.hospital_id}" if reply.hospital_id else ""
    print(
        f"reconciliation {day.isoformat()}{scope} (run {reply.run_id}): "
        f"{len(reply.discrepancies)} discrepancies; {reply.platform_payments} platform "
        f"payments, {reply.statement_rows} statement rows"
    )
    for h in reply.hospitals:
        if h.ledger_read:
            closed = "day closed" if h.day_closed else "day NOT closed"
            print(f"  ledger {h.hospital_id}: {h.entries} entries, {closed}")
        else:
            print(f"  ledger {h.hospital_id}: NOT READ ({h.error})")
    for note in reply.notes:
        print(f"  note: {note}")
    rows = _rows(reply)
    if not rows:
        return
    header = ("KIND", "HOSPITAL", "ORDER", "OUT_TRADE_NO", "PLATFORM", "CHANNEL", "HOSPITAL¥")
    print("{:<20} {:<14} {:<18} {:<24} {:>10} {:>10} {:>10}".format(*header))
    for r in rows:
        print(
            f"{r['kind']:<20} {r['hospital_id'] or '-':<14} {r['order_id'] or '-':<18} "
            f"{(r['out_trade_no'] or '-'):<24} {_yuan(r['platform_fen']):>10} "
            f"{_yuan(r['channel_fen']):>10} {_yuan(r['hospital_fen']):>10}"
        )
        refund = f" (refund {r['out_refund_no']})" if r["out_refund_no"] else ""
        print(f"    {r['detail']}{refund}")
        if r["resolution"]:
            print(f"    resolvable: {r['resolution']} — {r['evidence']}")


def _reconcile(args: argparse.Namespace) -> int:
    from google.type import date_pb2

    from cloud.gateway import INTERNAL_AUTH_KEY
    from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
    from mesh import errors

    try:
        day = dt.date.fromisoformat(args.date)
    except ValueError:
        raise CliError(f"DATE: {args.date!r} is not a date (expected YYYY-MM-DD)") from None
    if args.timeout <= 0:
        raise CliError("--timeout: must be > 0")
    target, creds, secret = _internal(args)

    async def call(channel: Any) -> operations_pb2.ReconcileResponse:
        stub = errors.wrap(operations_pb2_grpc.OperationsServiceStub(channel))
        reply: operations_pb2.ReconcileResponse = await stub.Reconcile(
            operations_pb2.ReconcileRequest(
                business_date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
                hospital_id=args.hospital or "",
            ),
            metadata=((INTERNAL_AUTH_KEY, secret),),
            timeout=args.timeout,
        )
        return reply

    try:
        reply = run_on_node(target, creds, call, hint=_NODE_HINT)
    except errors.ClientError as err:
        raise failure(f"node {target}", err, exit_code=2) from None
    except errors.StatusError as err:
        raise failure(f"node {target}", err) from None
    if args.format == "json":
        doc = {
            "run_id": reply.run_id,
            "business_date": day.isoformat(),
            "hospital_id": reply.hospital_id or None,
            "platform_payments": reply.platform_payments,
            "statement_rows": reply.statement_rows,
            "hospitals": [
                {
                    "hospital_id": h.hospital_id,
                    "ledger_read": h.ledger_read,
                    "day_closed": h.day_closed,
                    "entries": h.entries,
                    "error": h.error,
                }
                for h in reply.hospitals
            ],
            "notes": list(reply.notes),
            "discrepancies": _rows(reply),
        }
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in _rows(reply):
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    else:
        _print_text(reply, day)
    unread = any(not h.ledger_read for h in reply.hospitals)
    return EXIT_FAILED if reply.discrepancies or unread else 0

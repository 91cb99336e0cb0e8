"""``hplus orders …``: one order's whole history, and the manual-review queue."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_FAILED, CliError, Parser
from tools.cli._node import config_flags
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.config import NodeConfig
    from cloud.orders import OrderCoordinator, OrderRow

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``orders`` command group."""
    p = sub.add_parser(
        "orders",
        help="patients' orders: one order's history of transitions and probes, manual review",
        description="Orders live in the business partitions (the account's region). These "
        "commands read them from the partition databases the node's configuration names.",
    )
    osub = p.add_subparsers(dest="orders_cmd", metavar="COMMAND", parser_class=Parser)
    osub.required = True

    show = osub.add_parser(
        "show",
        help="an order: its state, payment, refund and whole history (intents, answers, "
        "probes, evidence, transitions)",
    )
    show.add_argument("order_id", metavar="ID")
    config_flags(show)
    show.set_defaults(func=_show)

    review = osub.add_parser(
        "review",
        help="the manual-review queue (orders whose evidence stayed missing); resolve one",
        description="Without --resolve: list the orders waiting for a person. With --resolve: "
        "record the decision, after checking the hospital's own records: 'confirmed' (the "
        "hospital's write happened: the order moves on as if it had answered) or 'failed' (it "
        "did not: a paid order is refunded by the node). The note goes into the history.",
    )
    review.add_argument("--resolve", metavar="ID", help="the order to resolve")
    review.add_argument(
        "--as", dest="outcome", choices=["confirmed", "failed"], help="what the hospital says"
    )
    review.add_argument("--note", default="", help="who decided and on what evidence")
    config_flags(review)
    review.set_defaults(func=_review)


def _run(config: NodeConfig, work: Callable[[OrderCoordinator], Coroutine[Any, Any, T]]) -> T:
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.db import DatabaseError
    from cloud.partitions import PartitionError

    async def main() -> T:
        from cloud.gateway import HospitalUnavailable
        from cloud.orders import HospitalAppointments, OrderCoordinator, OrderStore
        from cloud.partitioned import SCHEMAS
        from cloud.partitions import PartitionSet

        async def offline(hospital_id: str) -> Any:
            # This command reaches no hospital: a resolution uses what the order holds.
            raise HospitalUnavailable(hospital_id, why="not asked from the command line")

        parts = await PartitionSet.open(
            config.partitions_url, first_urls=config.first_partition_urls, schemas=SCHEMAS
        )
        try:
            coordinator = OrderCoordinator(
                OrderStore(parts, node_id="hplus-cli"), HospitalAppointments(offline), None
            )
            return await work(coordinator)
        finally:
            await parts.close()

    try:
        return asyncio.run(main())
    except (DatabaseError, PartitionError) as err:
        raise CliError(str(err)) from None
    except (OSError, SQLAlchemyError) as err:
        raise CliError(str(err).splitlines()[0], exit_code=EXIT_FAILED) from None


def _when(value: Any) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _summary(row: OrderRow) -> list[str]:
    from cloud.orders import public_status
    from hplus.cloud.v1 import patient_pb2

    status = patient_pb2.OrderStatus.Name(
        public_status(  # type: ignore[arg-type]
            row.step,
            unknown=row.unknown,
            review=row.review,
            refund_for=row.refund_for,
            paid=row.paid,
        )
    )
    flags = [f for f, on in (("unknown", row.unknown), ("review", row.review)) if on]
    lines = [
        f"order {row.order_id}  {status.removeprefix('ORDER_STATUS_')}  step {row.step.value}"
        + (f" ({', '.join(flags)})" if flags else ""),
        f"  account {row.account_id}  app {row.app_id}  request {row.request_id}",
        f"  hospital {row.hospital_id}  slot {row.slot_id}  hold {row.hold_id or '-'}  "
        f"appointment {row.appointment_id or '-'}  receipt {row.receipt_number or '-'}",
        f"  write in flight: {row.step_key or '-'}"
        + (" (sent, answer not recorded)" if row.in_flight else ""),
        f"  due {row.amount_due_fen / 100:.2f}  paid {row.paid_fen / 100:.2f}  "
        f"refunded {row.refunded_fen / 100:.2f} CNY;  payment deadline "
        f"{_when(row.payment_deadline)}",
    ]
    if row.out_trade_no:
        lines.append(
            f"  payment {row.out_trade_no} {row.payment_state or '-'}  transaction "
            f"{row.transaction_id or '-'}  paid {_when(row.paid_at)}"
        )
    if row.refund_no:
        lines.append(
            f"  refund {row.refund_no} {row.refund_state or '-'} {row.refund_fen / 100:.2f} CNY  "
            f"completed {_when(row.refund_completed_at)}"
        )
    if row.status_code:
        lines.append(f"  hospital said: code {row.status_code}: {row.status_message}")
    if row.review:
        lines.append(f"  under review: {row.review_reason}")
    lines.append(
        f"  created {_when(row.created_at)}  updated {_when(row.updated_at)}  "
        f"next action {_when(row.next_attempt_at)}"
    )
    return lines


def _show(args: argparse.Namespace) -> int:
    config = _load(args)

    async def work(coordinator: OrderCoordinator) -> int:
        row = await coordinator.store.get(args.order_id)
        if row is None:
            raise CliError(f"no order {args.order_id!r}", exit_code=EXIT_FAILED)
        for line in _summary(row):
            print(line)
        print()
        print(f"{'SEQ':>4}  {'AT (UTC)':<19}  {'KIND':<10} {'STEP':<36} {'NODE':<10} DETAIL")
        for h in await coordinator.store.history(row.order_id):
            moved = h.step_from if h.step_from == h.step_to else f"{h.step_from} -> {h.step_to}"
            at = h.at.strftime("%Y-%m-%d %H:%M:%S")
            shown = h.key and h.kind in ("intent", "probe", "resend", "resumed", "lost", "refused")
            key = f" [{h.key}]" if shown else ""
            print(f"{h.seq:>4}  {at:<19}  {h.kind:<10} {moved:<36} {h.node:<10} {h.detail}{key}")
        return 0

    return _run(config, work)


def _review(args: argparse.Namespace) -> int:
    if (args.resolve is None) != (args.outcome is None):
        raise CliError("--resolve ID and --as confirmed|failed go together")
    if args.resolve is not None and not args.note.strip():
        raise CliError("--note: say who decided and on what evidence")
    config = _load(args)

    async def work(coordinator: OrderCoordinator) -> int:
        if args.resolve is not None:
            try:
                row = await coordinator.resolve(
                    args.resolve, happened=args.outcome == "confirmed", note=args.note.strip()
                )
            except LookupError as err:
                raise CliError(str(err), exit_code=EXIT_FAILED) from None
            print(f"resolved {row.order_id} as {args.outcome}: now at step {row.step.value}")
            if row.step.value == "refunding":
                print("  the node refunds the payment through the channel")
            return 0
        queue = await coordinator.store.reviews()
        if not queue:
            print("no order waits for review")
            return 0
        print(f"{'ORDER':<22} {'HOSPITAL':<16} {'STEP':<12} {'PAID':>8}  {'SINCE':<25} REASON")
        for row in queue:
            print(
                f"{row.order_id:<22} {row.hospital_id:<16} {row.step.value:<12} "
                f"{row.paid_fen / 100:>8.2f}  {_when(row.unknown_since or row.updated_at):<25} "
                f"{row.review_reason}"
            )
        return 0

    return _run(config, work)

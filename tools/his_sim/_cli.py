"""Command line: run one simulated HIS until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from tools.his_sim._base import SimBase
from tools.his_sim._db import DbHis
from tools.his_sim._rest import RestHis
from tools.his_sim._soap import SoapHis

__all__ = ["main", "make_simulator"]


def make_simulator(
    dialect: str,
    *,
    seed: int = 1,
    host: str = "127.0.0.1",
    port: int = 0,
    admin_port: int | None = None,
    db_url: str | None = None,
    table_prefix: str = "",
) -> SimBase:
    """Builds (but does not start) a simulator of one dialect.

    Args:
        dialect: "rest", "soap" or "db".
        seed: Data seed.
        host: Interface to listen on.
        port: HTTP port (the database HIS serves only its admin API there).
        admin_port: Optional separate admin port.
        db_url: Database URL for the "db" dialect; None for a temporary SQLite file.
        table_prefix: Table and view name prefix for the "db" dialect.

    Returns:
        The simulator.

    Raises:
        ValueError: For an unknown dialect, or a database option with another dialect.
    """
    if dialect == "db":
        return DbHis(
            seed=seed,
            host=host,
            port=port,
            admin_port=admin_port,
            db_url=db_url,
            table_prefix=table_prefix,
        )
    if db_url is not None or table_prefix:
        raise ValueError("--db-url and --table-prefix apply to --dialect db only")
    if dialect == "rest":
        return RestHis(seed=seed, host=host, port=port, admin_port=admin_port)
    if dialect == "soap":
        return SoapHis(seed=seed, host=host, port=port, admin_port=admin_port)
    raise ValueError(f"unknown dialect {dialect!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.his_sim", description="Run one simulated hospital HIS."
    )
    parser.add_argument("--dialect", required=True, choices=("rest", "soap", "db"))
    parser.add_argument("--port", type=int, default=0, help="HTTP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--seed", type=int, default=1, help="data seed (default 1)")
    parser.add_argument("--admin-port", type=int, default=None, help="separate admin port")
    parser.add_argument(
        "--db-url",
        default=None,
        help="async SQLAlchemy URL for --dialect db (default: SQLite file his_sim_<seed>.db)",
    )
    parser.add_argument("--table-prefix", default="", help="table/view prefix (--dialect db)")
    return parser


async def _run(sim: SimBase) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        where = sim.base_url
        if isinstance(sim, DbHis):
            where = f"{sim.db_url} (admin API {sim.base_url})"
        print(f"his_sim {sim.dialect} seed={sim.core.seed} ready at {where}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one simulator until SIGINT or SIGTERM.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    args = _parser().parse_args(argv)
    db_url = args.db_url
    if args.dialect == "db" and db_url is None:
        db_url = f"sqlite+aiosqlite:///his_sim_{args.seed}.db"
    try:
        sim = make_simulator(
            args.dialect,
            seed=args.seed,
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            db_url=db_url,
            table_prefix=args.table_prefix,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    asyncio.run(_run(sim))
    return 0

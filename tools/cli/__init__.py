"""The ``hplus`` console script.

Each command group lives in its own module exposing ``register(subparsers)``; a command sets
``func(args) -> int`` with :meth:`argparse.ArgumentParser.set_defaults`. Only groups that exist
are registered, so ``hplus --help`` lists real commands only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from tools.cli._base import EXIT_BROKEN_PIPE, CliError, Parser, write_secret_file

__all__ = ["CliError", "build_parser", "main", "write_secret_file"]

Register = Callable[["argparse._SubParsersAction[Parser]"], None]


def _groups() -> list[Register]:
    # Imported here so that `hplus --help` stays fast and a group's heavy imports
    # (grpc, SQLAlchemy) load only when that group runs.
    from tools.cli import (
        _cloud,
        _compat,
        _contracts,
        _edge,
        _fleet,
        _orders,
        _partitions,
        _reconcile,
        _registry,
        _trace,
    )

    return [
        _cloud.register,
        _edge.register,
        _registry.register,
        _compat.register,
        _contracts.register,
        _partitions.register,
        _fleet.register,
        _trace.register,
        _reconcile.register,
        _orders.register,
    ]


def build_parser() -> Parser:
    """Build the full ``hplus`` argument parser."""
    parser = Parser(prog="hplus", description="Hospital+ platform: cloud, edge and contracts.")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log verbosity (default: INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("HPLUS_LOG_FORMAT") or "text",
        help="text, or json: one object per line (time, level, logger, message, request_id); "
        "default $HPLUS_LOG_FORMAT or text",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for register in _groups():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hplus``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands that re-run themselves (``edge run --supervise``) need the arguments as given.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from mesh.logs import configure_logging

    # Every line carries the request id; patient identifiers are masked whoever logs them.
    configure_logging(level=getattr(logging, args.log_level), log_format=args.log_format)
    if args.log_level != "DEBUG":
        # Alembic narrates every migration step at INFO; a no-op upgrade is not news.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosqlite's DEBUG lines carry every statement's parameters: patient data, at any level.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        code = func(args)
        sys.stdout.flush()  # inside the try: a closed pipe must fail here, not at exit
        return code
    except CliError as err:
        print(f"hplus: error: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Whoever read our output (`| head`) stopped: not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush cannot fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE

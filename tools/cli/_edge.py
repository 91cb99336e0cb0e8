"""``hplus edge …``: run a front-end server inside a hospital."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import uuid
from pathlib import Path

from tools.cli._base import CliError, Parser

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``edge`` command group."""
    p = sub.add_parser("edge", help="run a front-end server inside a hospital")
    esub = p.add_subparsers(dest="edge_cmd", metavar="COMMAND", parser_class=Parser)
    esub.required = True
    run = esub.add_parser(
        "run",
        help="dial out to the cloud and serve this hospital's services through the tunnel",
        description="Dial out to the cloud gateway(s) and hold tunnels (two when more than one "
        "gateway is given), reconnecting with backoff and jitter. Ctrl-C drains and stops.",
    )
    run.add_argument(
        "--cloud",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a cloud gateway node; repeat for several",
    )
    run.add_argument("--hospital", required=True, help="the hospital id this edge serves")
    run.add_argument(
        "--credential", required=True, type=Path, help="file holding the hospital credential"
    )
    run.add_argument("--ca", type=Path, help="CA certificate (PEM) to trust for the cloud")
    run.add_argument("--insecure", action="store_true", help="dial without TLS (development only)")
    run.add_argument("--edge-id", help="this edge's id (default: host name + random suffix)")
    run.set_defaults(func=_run)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CliError(f"{path}: cannot read {what}: {err.strerror}") from None
    if not data.strip():
        raise CliError(f"{path}: {what} is empty")
    return data


def _run(args: argparse.Namespace) -> int:
    from frontend_server.admin import EdgeAdminServicer
    from frontend_server.dialer import Dialer, DialerConfig
    from hplus.hospital.v1 import admin_pb2_grpc
    from mesh.tunnel import TunnelServer

    credential = _read(args.credential, "credential").decode(errors="replace").strip()
    ca = _read(args.ca, "CA certificate") if args.ca else None
    if ca is not None and b"-----BEGIN CERTIFICATE-----" not in ca:
        raise CliError(f"{args.ca}: CA certificate is not PEM")
    edge_id = args.edge_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    try:
        config = DialerConfig(
            gateways=tuple(args.cloud),
            hospital_id=args.hospital,
            edge_id=edge_id,
            credential=credential,
            tls=not args.insecure,
            ca_cert=ca,
        )
    except ValueError as err:
        raise CliError(str(err)) from None

    async def main() -> None:
        server = TunnelServer()
        admin_pb2_grpc.add_EdgeAdminServiceServicer_to_server(
            EdgeAdminServicer(
                hospital_id=args.hospital, edge_id=edge_id, services=lambda: server.services
            ),
            server,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"hplus edge {edge_id} for hospital {args.hospital}: dialing "
            f"{', '.join(config.gateways)} ({config.slots} tunnel(s))"
        )
        sys.stdout.flush()
        async with Dialer(config, server) as dialer:
            await stop.wait()
            log.info("signal received: draining tunnels")
            await dialer.shutdown()

    asyncio.run(main())
    return 0

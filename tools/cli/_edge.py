"""``hplus edge …``: run a front-end server inside a hospital."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from tools.cli._base import EXIT_STORE_REFUSED, CliError, Parser

if TYPE_CHECKING:
    from frontend_server.dialer import DialerConfig
    from frontend_server.profile import Profile
    from mesh.observability import ObservabilityConfig

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
        "gateway is given), reconnecting with backoff and jitter. With --profile, serve every "
        "hospital service over the HIS the profile configures, with the idempotency ledger "
        "and the pending-task queue under --data-dir. SIGINT/SIGTERM drains and stops.",
    )
    run.add_argument(
        "--cloud",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a cloud gateway node; repeat for several",
    )
    run.add_argument(
        "--hospital",
        help="the hospital id this edge serves (default: the profile's; required without one)",
    )
    run.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="the hospital's configuration profile (TOML); without it the edge serves only "
        "EdgeAdminService",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the ledger and task queue live (default: var/edge/<hospital>)",
    )
    run.add_argument(
        "--credential", required=True, type=Path, help="file holding the hospital credential"
    )
    run.add_argument("--ca", type=Path, help="CA certificate (PEM) to trust for the cloud")
    run.add_argument("--insecure", action="store_true", help="dial without TLS (development only)")
    run.add_argument("--edge-id", help="this edge's id (default: host name + random suffix)")
    run.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=os.environ.get("HPLUS_METRICS_LISTEN") or "",
        help="serve Prometheus GET /metrics here (default $HPLUS_METRICS_LISTEN, else none); "
        "off loopback it needs --metrics-token-file",
    )
    run.add_argument(
        "--metrics-token-file",
        type=Path,
        metavar="FILE",
        help="bearer token scrapers must send (Authorization: Bearer ...)",
    )
    run.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("HPLUS_OTLP_ENDPOINT") or "",
        help="also export spans to this OTLP/gRPC collector (the otlp extra)",
    )
    for store, what in (("ledger", "ledger (ledger.db)"), ("tasks", "task store (tasks.db)")):
        run.add_argument(
            f"--reset-{store}",
            dest="reset",
            action="append_const",
            const=store,
            help=f"if the {what} fails its start checks (damaged, missing, emptied, another "
            "data directory's), archive its files (renamed with a timestamp, never deleted) "
            "and begin a new one; a store that passes them is kept",
        )
    run.set_defaults(func=_run, reset=None)


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CliError(f"{path}: cannot read {what}: {err.strerror}") from None
    if not data.strip():
        raise CliError(f"{path}: {what} is empty")
    return data


def _run(args: argparse.Namespace) -> int:
    from frontend_server.dialer import DialerConfig

    profile = _profile(args.profile) if args.profile else None
    hospital = args.hospital or (profile.hospital_id if profile is not None else None)
    if hospital is None:
        raise CliError("--hospital is required without --profile")
    if profile is not None and hospital != profile.hospital_id:
        raise CliError(
            f"--hospital {hospital} does not match the profile's hospital_id "
            f"{profile.hospital_id} ({args.profile})"
        )
    credential = _read(args.credential, "credential").decode(errors="replace").strip()
    ca = _read(args.ca, "CA certificate") if args.ca else None
    if ca is not None and b"-----BEGIN CERTIFICATE-----" not in ca:
        raise CliError(f"{args.ca}: CA certificate is not PEM")
    edge_id = args.edge_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    try:
        config = DialerConfig(
            gateways=tuple(args.cloud),
            hospital_id=hospital,
            edge_id=edge_id,
            credential=credential,
            tls=not args.insecure,
            ca_cert=ca,
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    reset = frozenset(args.reset or ())
    if profile is None:
        if reset:
            flags = ", ".join(f"--reset-{store}" for store in sorted(reset))
            raise CliError(f"{flags} needs --profile (an edge without one keeps no stores)")
        asyncio.run(_serve_admin_only(config, _observability(args)))
        return 0
    data_dir = args.data_dir or Path("var") / "edge" / hospital
    asyncio.run(_serve(profile, config, data_dir, reset, _observability(args)))
    return 0


def _profile(path: Path) -> Profile:
    from frontend_server.profile import ConfigError, load_profile
    from frontend_server.services import dialect_settings

    try:
        profile = load_profile(path)
        # Map the profile onto its HIS adapter now, so a bad mapping is a one-line error
        # naming the parameter, file and line, not a failure once the edge is running.
        dialect_settings(profile)
    except ConfigError as err:
        raise CliError(str(err)) from None
    return profile


def _stop_on_signals() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _observability(args: argparse.Namespace) -> ObservabilityConfig:
    from mesh.observability import ObservabilityConfig

    try:
        return ObservabilityConfig(
            metrics_listen=args.metrics_listen,
            metrics_token_file=args.metrics_token_file,
            otlp_endpoint=args.otlp_endpoint,
        )
    except ValueError as err:
        raise CliError(str(err)) from None


async def _serve(
    profile: Profile,
    config: DialerConfig,
    data_dir: Path,
    reset: frozenset[str],
    observability: ObservabilityConfig,
) -> None:
    from frontend_server.app import EdgeApp, EdgeConfig, StoreRefused

    try:
        app = EdgeApp(
            EdgeConfig(
                profile=profile,
                data_dir=data_dir,
                dialer=config,
                reset_stores=reset,
                observability=observability,
            )
        )
    except (ValueError, OSError) as err:
        raise CliError(f"cannot start the edge: {err}") from None
    try:
        await app.start()
    except StoreRefused as err:
        raise CliError(
            err.describe(f"start with --reset-{err.store}"), exit_code=EXIT_STORE_REFUSED
        ) from None
    except OSError as err:
        raise CliError(f"cannot start the edge: {err}") from None
    stop = _stop_on_signals()
    his = profile.his
    print(
        f"hplus edge {config.edge_id} for hospital {profile.hospital_id}: profile "
        f"{profile.profile_id} v{profile.version} ({profile.digest[:19]}), HIS {his.dialect} at "
        f"{his.endpoints[0].url}, data in {data_dir}; dialing {', '.join(config.gateways)} "
        f"({config.slots} tunnel(s))"
    )
    sys.stdout.flush()
    async with app:
        await stop.wait()
        log.info("signal received: draining tunnels and the task queue")


async def _serve_admin_only(config: DialerConfig, observability: ObservabilityConfig) -> None:
    from frontend_server.app import EdgeApp, EdgeConfig

    app = EdgeApp(
        EdgeConfig(
            profile=None,
            hospital_id=config.hospital_id,
            dialer=config,
            observability=observability,
        )
    )
    stop = _stop_on_signals()
    print(
        f"hplus edge {config.edge_id} for hospital {config.hospital_id}: dialing "
        f"{', '.join(config.gateways)} ({config.slots} tunnel(s))"
    )
    sys.stdout.flush()
    async with app:
        await stop.wait()
        log.info("signal received: draining tunnels")

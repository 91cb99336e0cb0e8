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

from tools.cli._base import EXIT_FAILED, EXIT_STORE_REFUSED, CliError, Parser

if TYPE_CHECKING:
    from frontend_server.app import EdgeApp
    from frontend_server.dialer import DialerConfig
    from frontend_server.profile import Profile
    from frontend_server.slots import Slots
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
    run.add_argument(
        "--upgrade-root",
        type=Path,
        action="append",
        default=[],
        metavar="root.pub",
        help="a root public key upgrade packages must be certified under (repeatable); with "
        "it the edge asks the cloud for upgrades and installs them into its slots (run it "
        "with --supervise so that it can switch)",
    )
    run.add_argument(
        "--supervise",
        action="store_true",
        help="run the edge under its supervisor: from its active install slot, restarted "
        "into a new slot after an upgrade and rolled back when the new version fails its "
        "health gate (slots under DATA_DIR/slots; needs --profile)",
    )
    run.set_defaults(func=_run, reset=None)

    install = esub.add_parser(
        "install",
        help="install a signed package into the idle slot and switch to it (health-gated)",
        description="Verify PACKAGE against the trusted root key(s) (signature, certificate, "
        "files, newer than the running version), install it into the idle slot, back up the "
        "stores, and ask the running supervisor (hplus edge run --supervise) to restart the "
        "edge into it; the new version must pass its health gate or the supervisor returns "
        "to the old slot. For hospitals that receive packages by hand; the cloud's rollouts "
        "do the same through the edge's own connection.",
    )
    install.add_argument("package", type=Path, metavar="PACKAGE")
    install.add_argument(
        "--root",
        type=Path,
        action="append",
        required=True,
        metavar="root.pub",
        help="a trusted root public key (repeatable)",
    )
    install.add_argument("--data-dir", type=Path, metavar="DIR", help="the edge's data directory")
    install.add_argument("--hospital", help="the hospital (data directory var/edge/<hospital>)")
    install.add_argument(
        "--health-gate",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long the new version has to become healthy (default: 120)",
    )
    install.set_defaults(func=_install)

    slots = esub.add_parser("slots", help="the install slots: which runs, what each holds, history")
    slots.add_argument("--data-dir", type=Path, metavar="DIR", help="the edge's data directory")
    slots.add_argument("--hospital", help="the hospital (data directory var/edge/<hospital>)")
    slots.add_argument("--format", choices=["text", "json"], default="text")
    slots.set_defaults(func=_slots)


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
    if args.supervise:
        return _supervise(data_dir, getattr(args, "argv", None) or sys.argv[1:])
    for root in args.upgrade_root:
        _read(root, "upgrade root key")
    asyncio.run(
        _serve(profile, config, data_dir, reset, _observability(args), tuple(args.upgrade_root))
    )
    return 0


def _edge_data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        data_dir: Path = args.data_dir
        return data_dir
    if args.hospital:
        return Path("var") / "edge" / str(args.hospital)
    raise CliError("--data-dir or --hospital is required")


def _open_slots(data_dir: Path) -> Slots:
    from frontend_server.slots import SlotError, Slots
    from mesh.version import SOFTWARE_VERSION

    if not data_dir.is_dir():
        raise CliError(f"{data_dir}: no such edge data directory")
    try:
        return Slots(data_dir, base_version=SOFTWARE_VERSION)
    except (OSError, SlotError) as err:
        raise CliError(f"{data_dir}: cannot open the slots: {err}") from None


def _install(args: argparse.Namespace) -> int:
    from frontend_server.slots import SlotError
    from mesh.packages import PackageError, TrustRoot, verify_package

    if not args.health_gate > 0:
        raise CliError("--health-gate must be > 0")
    slots = _open_slots(_edge_data_dir(args))
    current = slots.active()
    try:
        trust = TrustRoot.load(args.root)
        verified = verify_package(args.package, trust, installed_version=current.version)
    except PackageError as err:
        code = 2 if err.reason in {"BAD_KEY", "UNREADABLE"} else EXIT_FAILED
        raise CliError(f"{args.package}: refused: {err}", exit_code=code) from None
    try:
        info = slots.install(args.package, verified)
        slots.request_switch(args.health_gate)
    except SlotError as err:
        raise CliError(f"{args.package}: {err}", exit_code=EXIT_FAILED) from None
    print(
        f"{verified.manifest.version} installed into slot {info.name} (running: "
        f"{current.version} in slot {current.name}); stores backed up; switch requested with "
        f"a {args.health_gate:g} s health gate"
    )
    pid = slots.notify_supervisor()
    if pid is None:
        print(
            "no supervisor is running: the switch happens at the next `hplus edge run --supervise`"
        )
        return 0
    print(f"asked the supervisor (pid {pid}) to switch; `hplus edge slots` shows the outcome")
    return 0


def _slots(args: argparse.Namespace) -> int:
    import json

    from frontend_server.slots import SlotError

    slots = _open_slots(_edge_data_dir(args))
    active = slots.active()
    pending = slots.pending()
    names = ["base", "a", "b"]
    held: dict[str, str | None] = {}
    for name in names:
        try:
            held[name] = slots.slot(name).version
        except SlotError:
            held[name] = None
    if args.format == "json":
        json.dump(
            {
                "active": active.name,
                "versions": held,
                "pending": None if pending is None else pending.__dict__,
                "history": slots.history(),
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return 0
    for name in names:
        mark = "*" if name == active.name else (">" if pending and pending.slot == name else " ")
        print(f"{mark} {name:<5} {held[name] or '(empty)'}")
    for event in slots.history()[-10:]:
        reason = f": {event['reason']}" if event.get("reason") else ""
        print(f"  {event['at']}  {event['event']:<16} {event['slot']} {event['version']}{reason}")
    return 0


def _supervise(data_dir: Path, argv: list[str]) -> int:
    """Run ``hplus edge run`` (these arguments but --supervise) under the slot supervisor."""
    from frontend_server.slots import SlotError, Slots, Supervisor
    from mesh.version import SOFTWARE_VERSION

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        slots = Slots(data_dir, base_version=SOFTWARE_VERSION)
        active = slots.active()
    except (OSError, SlotError) as err:
        raise CliError(f"cannot start the supervisor: {err}") from None
    # -P: the working directory is not put first on sys.path, so the slot's code (first on
    # PYTHONPATH) runs, not whatever hplus sources lie in the directory it was started from.
    command = [sys.executable, "-P", "-m", "tools.cli", *(a for a in argv if a != "--supervise")]
    supervisor = Supervisor(slots, command)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.stop)
        loop.add_signal_handler(signal.SIGUSR1, supervisor.switch)
        return await supervisor.run()

    print(f"hplus edge supervisor: slot {active.name} ({active.version}), slots in {slots.root}")
    sys.stdout.flush()
    return asyncio.run(run())


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
    upgrade_roots: tuple[Path, ...] = (),
) -> None:
    from frontend_server.app import EdgeApp, EdgeConfig, StoreRefused
    from frontend_server.slots import SlotError
    from mesh.packages import PackageError

    try:
        app = EdgeApp(
            EdgeConfig(
                profile=profile,
                data_dir=data_dir,
                dialer=config,
                reset_stores=reset,
                upgrade_roots=upgrade_roots,
                observability=observability,
            )
        )
    except (PackageError, SlotError) as err:
        raise CliError(f"cannot start the edge: {err}") from None
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
        gate = asyncio.create_task(_report_healthy(app), name="edge-health-gate")
        await stop.wait()
        gate.cancel()
        log.info("signal received: draining tunnels and the task queue")


async def _report_healthy(app: EdgeApp) -> None:
    """Under a supervisor: say so once the tunnel is up and every component serves."""
    from frontend_server.slots import HEALTH_FILE_ENV, report_healthy
    from hplus.hospital.v1 import admin_pb2
    from mesh.version import SOFTWARE_VERSION

    if not os.environ.get(HEALTH_FILE_ENV) or app.dialer is None:
        return
    await app.dialer.connected.wait()
    # Components come up on their own schedule (the HIS check runs after the tunnel is up):
    # look until all serve; the supervisor's deadline bounds the wait, not this loop.
    waiting: list[str] = []
    while True:
        failing = [c.name for c in app.components() if c.state != admin_pb2.COMPONENT_STATE_SERVING]
        if not failing:
            break
        if failing != waiting:
            log.warning("health gate: waiting for %s to serve", ", ".join(failing))
            waiting = failing
        await asyncio.sleep(0.5)
    report_healthy(SOFTWARE_VERSION)
    log.info("health gate: tunnel up and every component serving; reported healthy")


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

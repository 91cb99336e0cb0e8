"""``python -m tools.fleet_sim``: N simulated edges in one process, dialling a cloud node."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from tools.fleet_sim._his import DirectoryShape

__all__ = ["main"]

log = logging.getLogger("tools.fleet_sim")


class UsageError(Exception):
    """Bad input the user can fix; printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(
        prog="python -m tools.fleet_sim",
        description="Run N simulated hospital edges in one process, each a real tunnel with "
        "its own credential, serving an in-memory HIS; faults on command.",
    )
    p.add_argument("--hospitals", type=int, required=True, help="how many (1 to 20000)")
    p.add_argument(
        "--cloud",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="a gateway node (repeatable); with TLS use the certificate's name (localhost)",
    )
    p.add_argument("--ca", type=Path, help="CA certificate (PEM) to trust for the cloud")
    p.add_argument("--insecure", action="store_true", help="dial without TLS (development)")
    p.add_argument(
        "--credentials-dir",
        type=Path,
        help="read <hospital id>.credential files here (and keep issued ones here)",
    )
    p.add_argument(
        "--node-data-dir",
        type=Path,
        help="the node's data directory: issue missing credentials through its fleet "
        "database (and trust its dev CA unless --ca is given)",
    )
    p.add_argument("--node-config", type=Path, help="the node's TOML config (with --node-data-dir)")
    p.add_argument("--doctors", type=int, default=5, help="doctors per hospital (default 5)")
    p.add_argument("--days", type=int, default=7, help="days of sessions (default 7)")
    p.add_argument("--slots", type=int, default=10, help="slots per session (default 10)")
    p.add_argument("--capacity", type=int, default=3, help="places per slot (default 3)")
    p.add_argument(
        "--change-rate",
        type=float,
        default=0.05,
        help="directory changes per hospital per second (default 0.05)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of names, data and changes")
    p.add_argument("--id-prefix", default="sim-", help="hospital id prefix (default sim-)")
    p.add_argument(
        "--control",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="the control API's address (default 127.0.0.1:0: a free port, printed)",
    )
    p.add_argument(
        "--hospitals-toml",
        type=Path,
        help="write the hospitals' master data here ([[hospital]] id, name, region_code)",
    )
    p.add_argument("--wave", type=int, default=100, help="edges that dial together (100)")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise UsageError(f"{path}: cannot read {what}: {err.strerror}") from None


async def _credentials(args: argparse.Namespace, hospitals: Sequence[object]) -> dict[str, str]:
    from cloud.config import NodeConfig
    from cloud.db import DatabaseError
    from mesh.config import ConfigError
    from tools.cli import CliError
    from tools.fleet_sim._credentials import issue_credentials, read_credentials
    from tools.fleet_sim._hospitals import SimHospital

    fleet = [h for h in hospitals if isinstance(h, SimHospital)]
    found = read_credentials(args.credentials_dir, fleet) if args.credentials_dir else {}
    missing = [h for h in fleet if h.hospital_id not in found]
    if not missing:
        return found
    if args.node_data_dir is None and args.node_config is None:
        raise UsageError(
            f"no credential for {len(missing)} hospital(s), e.g. {missing[0].hospital_id}: "
            "give --credentials-dir with <id>.credential files, or --node-data-dir to issue "
            "them through the node's fleet database"
        )
    try:
        config = NodeConfig.load(
            path=args.node_config, env=os.environ, overrides={"data_dir": args.node_data_dir}
        )
        issued = await issue_credentials(config.fleet_url, missing, directory=args.credentials_dir)
    except (ConfigError, DatabaseError, CliError) as err:
        raise UsageError(str(err)) from None
    print(f"fleet_sim: issued {len(issued)} credential(s) in {config.fleet_url}", flush=True)
    return {**found, **issued}


async def _run(args: argparse.Namespace) -> int:
    from mesh.net import parse_hostport
    from tools.fleet_sim._control import control_app
    from tools.fleet_sim._fleet import Fleet, FleetConfig
    from tools.fleet_sim._hospitals import fleet_hospitals, write_hospitals_toml

    if not 1 <= args.hospitals <= 20_000:
        raise UsageError("--hospitals must be in [1, 20000]")
    try:
        shape = DirectoryShape(
            doctors=args.doctors, days=args.days, slots=args.slots, capacity=args.capacity
        )
        hospitals = fleet_hospitals(args.hospitals, seed=args.seed, prefix=args.id_prefix)
        for gateway in args.cloud:
            parse_hostport(gateway)
        control_host, control_port = parse_hostport(args.control)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.hospitals_toml is not None:
        write_hospitals_toml(args.hospitals_toml, hospitals, seed=args.seed)
        print(f"fleet_sim: hospitals written to {args.hospitals_toml}", flush=True)
    credentials = await _credentials(args, hospitals)
    ca = None
    if args.ca is not None:
        ca = _read(args.ca, "CA certificate")
    elif args.node_data_dir is not None and not args.insecure:
        dev_ca = args.node_data_dir / "tls" / "ca.pem"
        if dev_ca.exists():
            ca = _read(dev_ca, "CA certificate")
    try:
        config = FleetConfig(
            gateways=tuple(args.cloud),
            ca_cert=ca,
            tls=not args.insecure,
            shape=shape,
            change_rate=args.change_rate,
            seed=args.seed,
            wave=args.wave,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    fleet = Fleet(config, hospitals, credentials)
    runner = web.AppRunner(control_app(fleet), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, control_host, control_port)
    await site.start()
    bound = runner.addresses[0]
    print(f"fleet_sim: control API at http://{bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    changes = asyncio.create_task(fleet.run(), name="fleet-changes")
    try:
        started = time.monotonic()
        dialing = asyncio.create_task(fleet.start(), name="fleet-start")
        stopping = asyncio.create_task(stop.wait(), name="fleet-stop")
        await asyncio.wait({dialing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if dialing.done():
            connected = dialing.result()
            status = fleet.status()
            print(
                f"fleet_sim: ready: {connected} of {args.hospitals} edges connected to "
                f"{', '.join(args.cloud)} in {time.monotonic() - started:.1f} s; RSS "
                f"{int(status['rss_kib']) // 1024} MiB ({status['kib_per_edge']} KiB per edge)",
                flush=True,
            )
        await stopping
        dialing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dialing
    finally:
        await fleet.shutdown()
        changes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await changes
        await runner.cleanup()
    print("fleet_sim: stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the fleet until SIGINT or SIGTERM.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code (2 for bad input, with one line on stderr).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return asyncio.run(_run(args))
    except UsageError as err:
        print(f"fleet_sim: error: {err}", file=sys.stderr)
        return 2

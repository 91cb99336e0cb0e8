"""``hplus fleet publish|upgrade|status|pause|resume|abort``: edge upgrades in waves.

They work on the fleet database (like ``hplus cloud credentials``), so they run beside a
live node: the node serves what is published and follows the rollouts' state; edges'
reports advance the waves. Every refusal is one line with its reason code, exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_FAILED, EXIT_OK, CliError, Parser
from tools.cli._node import config_flags, load_node_config

if TYPE_CHECKING:
    from cloud.config import NodeConfig
    from cloud.upgrades import PackageStore, Rollouts

__all__ = ["register"]

T = TypeVar("T")


def register(fsub: argparse._SubParsersAction[Parser]) -> None:
    """Add the rollout commands to the ``fleet`` group."""
    publish = fsub.add_parser(
        "publish",
        help="accept a signed package for rollouts (verified with [upgrades] trusted_roots)",
    )
    publish.add_argument("package", type=Path, metavar="PKG")
    config_flags(publish)
    publish.set_defaults(func=_publish)

    upgrade = fsub.add_parser("upgrade", help="start a rollout of a published version in waves")
    upgrade.add_argument("--to", required=True, metavar="VERSION", help="a published version")
    upgrade.add_argument(
        "--waves",
        default="1,10%,50%,100%",
        help="cumulative hospitals per wave, counts or percentages; the first is the canary "
        "(default: 1,10%%,50%%,100%%)",
    )
    upgrade.add_argument(
        "--max-failures",
        type=int,
        default=0,
        metavar="N",
        help="failed hospitals tolerated before the rollout stops itself (default 0; a "
        "failed canary always stops it)",
    )
    upgrade.add_argument(
        "--outdated-first",
        action="store_true",
        help="hospitals whose edges run a contract release outside the compat window go first",
    )
    upgrade.add_argument("--window", metavar="HH:MM-HH:MM", help="maintenance window (local)")
    upgrade.add_argument(
        "--hospital",
        action="append",
        default=[],
        metavar="ID",
        help="only these hospitals (repeatable; default: every hospital with a credential)",
    )
    config_flags(upgrade)
    upgrade.set_defaults(func=_upgrade)

    status = fsub.add_parser("status", help="a rollout and every hospital in it")
    status.add_argument("--rollout", metavar="ID", help="default: the live one, else the newest")
    status.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(status)
    status.set_defaults(func=_status)

    for name, text in (
        ("pause", "stop offering the rollout's version (downloads in progress may finish)"),
        ("resume", "offer it again (a stopped rollout too)"),
        ("abort", "end the rollout for good"),
    ):
        cmd = fsub.add_parser(name, help=text)
        cmd.add_argument("rollout", metavar="ROLLOUT")
        config_flags(cmd)
        cmd.set_defaults(func=_change, change=name)


def _with(config: NodeConfig, action: Callable[[PackageStore, Rollouts], Awaitable[T]]) -> T:
    from cloud.db import DatabaseError, create_engine
    from cloud.upgrades import PackageStore, Rollouts, migrate_upgrades
    from mesh import errors
    from mesh.packages import PackageError, TrustRoot

    async def go() -> T:
        engine = create_engine(config.fleet_url)
        try:
            await migrate_upgrades(engine)
            up = config.upgrades
            trust = TrustRoot.load(up.trusted_roots) if up.trusted_roots else None
            store = PackageStore(
                engine,
                config.data_dir / "upgrades",
                trust=trust,
                max_delta_bases=up.max_delta_bases,
            )
            return await action(store, Rollouts(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except DatabaseError as err:
        raise CliError(str(err)) from None
    except PackageError as err:
        raise CliError(f"[upgrades] trusted_roots: {err}") from None
    except errors.StatusError as err:
        reason = f" [{err.reason}]" if err.reason else ""
        lines = [f"{err.message}{reason}"]
        lines += [f"  {v.field}: {v.description}" for v in err.field_violations]
        raise CliError("\n".join(lines), exit_code=EXIT_FAILED) from None


def _publish(args: argparse.Namespace) -> int:
    config = load_node_config(args)
    if not args.package.is_file():
        raise CliError(f"{args.package}: no such file")

    async def publish(store: PackageStore, rollouts: Rollouts) -> tuple[Any, list[Any]]:
        stored = await store.publish(args.package.resolve())
        await store.ensure_deltas(stored.version, keep=await rollouts.live_targets())
        return stored, [p for p in await store.packages() if p.version == stored.version]

    stored, related = _with(config, publish)
    print(
        f"published {stored.package_id}: version {stored.version}, contracts "
        f"{stored.contract_release}, {stored.size} bytes, signed by {stored.signing_key_id}"
    )
    for p in related:
        if p.kind == "DELTA":
            print(f"  delta from {p.base_version}: {p.size} bytes ({p.size / stored.size:.1%})")
    return EXIT_OK


def _upgrade(args: argparse.Namespace) -> int:
    from cloud.upgrades import parse_window
    from mesh import errors

    config = load_node_config(args)
    try:
        window = parse_window(args.window) if args.window else None
    except errors.InvalidArgument as err:
        raise CliError(f"--window: {err.field_violations[0].description}") from None

    async def create(store: PackageStore, rollouts: Rollouts) -> Any:
        target = await store.full(args.to)
        hospitals = args.hospital or await _hospitals(config)
        outdated = await _outdated(config, rollouts) if args.outdated_first else set()
        await store.ensure_deltas(target.version, keep=await rollouts.live_targets())
        return await rollouts.create(
            target_version=target.version,
            waves=args.waves,
            max_failures=args.max_failures,
            hospitals=hospitals,
            outdated=outdated,
            outdated_first=args.outdated_first,
            window=window,
        )

    info = _with(config, create)
    print(
        f"rollout {info.rollout_id}: {info.target_version} to {info.waves[-1]} hospitals in "
        f"waves of {', '.join(map(str, info.waves))} (canary first), max failures "
        f"{info.max_failures}"
    )
    print(f"  follow it: hplus fleet status --rollout {info.rollout_id}")
    return EXIT_OK


async def _hospitals(config: NodeConfig) -> list[str]:
    from cloud.db import create_engine
    from cloud.fleet import CredentialStore, migrate_fleet

    engine = create_engine(config.fleet_url)
    try:
        await migrate_fleet(engine)
        creds = await CredentialStore(engine).list()
    finally:
        await engine.dispose()
    return sorted({c.hospital_id for c in creds if c.revoked_at is None})


async def _outdated(config: NodeConfig, rollouts: Rollouts) -> set[str]:
    """Hospitals with an edge on a contract release outside the registry's compat window."""
    from cloud.db import create_engine
    from cloud.registry import ReleaseResolver, migrate_registry

    engine = create_engine(config.registry_url)
    try:
        await migrate_registry(engine)
        resolver = ReleaseResolver(engine)
        if not await resolver.has_releases():
            return set()
        out: set[str] = set()
        for hospital, releases in (await rollouts.edge_releases()).items():
            for release in releases:
                if not await resolver.in_window(release):
                    out.add(hospital)
        return out
    finally:
        await engine.dispose()


def _status(args: argparse.Namespace) -> int:
    config = load_node_config(args)

    async def read(_: PackageStore, rollouts: Rollouts) -> tuple[Any, list[Any]]:
        info = await rollouts.get(args.rollout) if args.rollout else await rollouts.latest()
        if info is None:
            return None, []
        return info, await rollouts.hospitals(info.rollout_id)

    info, hospitals = _with(config, read)
    if info is None:
        if args.format == "json":
            print(json.dumps({"rollout": None, "hospitals": []}))
        else:
            print("no rollout yet (hplus fleet upgrade --to VERSION)")
        return EXIT_OK
    if args.format == "json":
        json.dump(
            {"rollout": info.to_json(), "hospitals": [h.to_json() for h in hospitals]},
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return EXIT_OK
    counts = ", ".join(f"{k} {v}" for k, v in sorted(info.counts.items()))
    print(
        f"rollout {info.rollout_id}: {info.target_version} {info.state}, wave "
        f"{info.current_wave + 1} of {len(info.waves)} ({counts}), max failures "
        f"{info.max_failures}" + (f", window {'-'.join(info.window)}" if info.window else "")
    )
    if info.stop_reason:
        print(f"  stopped: {info.stop_reason}")
    print(f"{'HOSPITAL':<24} {'WAVE':>4} {'STATE':<10} {'VERSION':<12} {'LAST REPORT':<20} REASON")
    for h in hospitals:
        last = h.last_report.strftime("%Y-%m-%d %H:%M:%S") if h.last_report else "-"
        flag = " (outdated)" if h.outdated else ""
        print(
            f"{h.hospital_id:<24} {h.wave + 1:>4} {h.state:<10} {h.version or '-':<12} "
            f"{last:<20} {h.reason}{flag}"
        )
    return EXIT_OK


def _change(args: argparse.Namespace) -> int:
    config = load_node_config(args)

    async def change(_: PackageStore, rollouts: Rollouts) -> Any:
        method = getattr(rollouts, args.change)
        return await method(args.rollout)

    info = _with(config, change)
    print(f"rollout {info.rollout_id}: {info.state}")
    return EXIT_OK

"""``hplus cloud apps …`` and ``hplus cloud accounts …``: patient apps' keys, sessions."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from tools.cli._base import EXIT_FAILED, CliError, Parser, write_secret_file
from tools.cli._node import config_flags
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.accounts import AppStore
    from cloud.config import NodeConfig
    from cloud.partitions import PartitionSet

T = TypeVar("T")

CHANNELS = ("mini-program", "hospital-app", "web")
DEFAULT_RATE = "200/1s"


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add ``apps`` and ``accounts`` to the ``cloud`` command group."""
    apps = sub.add_parser("apps", help="patient apps: issue, list and revoke app keys")
    asub = apps.add_subparsers(dest="apps_cmd", metavar="COMMAND", parser_class=Parser)
    asub.required = True
    issue = asub.add_parser(
        "issue",
        help="issue an app key for a patient app (shown once; only its hash is stored)",
        description="Issue a key for one app on one channel. Every patient-facing call sends "
        "it in the x-hplus-app-key metadata: it names the app (attribution) and counts "
        "against the app's rate limit.",
    )
    issue.add_argument("name", metavar="NAME")
    issue.add_argument("--channel", required=True, choices=CHANNELS)
    issue.add_argument(
        "--rate",
        default=DEFAULT_RATE,
        metavar="N/DURATION",
        help=f"the app's calls, over all its users (default {DEFAULT_RATE}: 200 at once, "
        "200 a second)",
    )
    issue.add_argument("--out", type=Path, help="write the key to this file (mode 0600)")
    config_flags(issue)
    issue.set_defaults(func=_issue)
    ls = asub.add_parser("list", help="list apps (ids, names, channels, limits; never keys)")
    config_flags(ls)
    ls.set_defaults(func=_list)
    revoke = asub.add_parser(
        "revoke", help="revoke an app's key: refused on every node within a second"
    )
    revoke.add_argument("app_id", metavar="APP_ID")
    config_flags(revoke)
    revoke.set_defaults(func=_revoke)

    accounts = sub.add_parser("accounts", help="patient accounts: revoke sessions")
    csub = accounts.add_subparsers(dest="accounts_cmd", metavar="COMMAND", parser_class=Parser)
    csub.required = True
    out = csub.add_parser(
        "revoke",
        help="revoke every session of an account, or one session (--token-id)",
        description="Revoke access tokens in the account's partition. Live sessions are "
        "refused within a second on every node (TOKEN_REVOKED); the app signs in again.",
    )
    out.add_argument("account_id", metavar="ACCOUNT", nargs="?")
    out.add_argument("--token-id", metavar="ID", help="one session's id (the token's id)")
    config_flags(out)
    out.set_defaults(func=_revoke_sessions)


def _with_apps(config: NodeConfig, action: Callable[[AppStore], Awaitable[T]]) -> T:
    from cloud.accounts import AppError, AppStore, migrate_apps
    from cloud.db import DatabaseError
    from cloud.partitions import open_partition_engine

    async def go() -> T:
        engine = open_partition_engine(config.partitions_url)
        try:
            await migrate_apps(engine)
            return await action(AppStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except (DatabaseError, AppError) as err:
        raise CliError(str(err)) from None


def _issue(args: argparse.Namespace) -> int:
    from cloud.accounts import Channel, IssuedApp, Rate

    try:
        rate = Rate.parse(args.rate)
    except ValueError as err:
        raise CliError(f"--rate: {err}") from None
    if args.out is not None and args.out.exists():
        raise CliError(f"{args.out} exists; refusing to overwrite a key file")

    async def issue(store: AppStore) -> IssuedApp:
        return await store.issue(args.name, Channel(args.channel), rate)

    issued = _with_apps(_load(args), issue)
    app = issued.app
    what = f"app {app.name} ({app.channel.value}), id {app.app_id}, rate {args.rate}"
    if args.out is not None:
        write_secret_file(args.out, issued.key)
        print(f"issued {what}: {args.out}")
    else:
        print(f"issued {what}")
        print("key (shown once; the app sends it as x-hplus-app-key):")
        print(issued.key)
    return 0


def _list(args: argparse.Namespace) -> int:
    from cloud.accounts import App

    async def ls(store: AppStore) -> list[App]:
        return await store.list()

    rows = _with_apps(_load(args), ls)
    print(f"{'APP':<18} {'NAME':<24} {'CHANNEL':<13} {'RATE':<14} {'ISSUED':<26} STATE")
    for a in rows:
        state = "revoked" if a.revoked_at else "valid"
        issued = a.created_at.isoformat(timespec="seconds")
        print(
            f"{a.app_id:<18} {a.name:<24} {a.channel.value:<13} {a.rate!s:<14} {issued:<26} {state}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from cloud.accounts import App

    async def revoke(store: AppStore) -> App:
        return await store.revoke(args.app_id)

    app = _with_apps(_load(args), revoke)
    print(f"revoked app {app.app_id} ({app.name}); nodes refuse its key within a second")
    return 0


def _with_partitions(config: NodeConfig, action: Callable[[PartitionSet], Awaitable[T]]) -> T:
    from cloud.db import DatabaseError
    from cloud.partitioned import SCHEMAS
    from cloud.partitions import PartitionError, PartitionSet

    async def go() -> T:
        parts = await PartitionSet.open(
            config.partitions_url, first_urls=config.first_partition_urls, schemas=SCHEMAS
        )
        try:
            return await action(parts)
        finally:
            await parts.close()

    try:
        return asyncio.run(go())
    except (DatabaseError, PartitionError) as err:
        raise CliError(str(err)) from None


def _revoke_sessions(args: argparse.Namespace) -> int:
    from cloud.accounts import Sessions

    if bool(args.account_id) == bool(args.token_id):
        raise CliError("give an ACCOUNT or --token-id ID (one of them)")

    async def revoke(parts: PartitionSet) -> int:
        sessions = Sessions(parts)
        if args.token_id:
            return await sessions.revoke(session_id=args.token_id)
        return await sessions.revoke(account_id=args.account_id)

    try:
        count = _with_partitions(_load(args), revoke)
    except ValueError as err:
        raise CliError(str(err)) from None
    what = f"session {args.token_id}" if args.token_id else f"account {args.account_id}"
    if count == 0:
        print(f"{what}: no valid session to revoke (unknown, expired or revoked already)")
        return EXIT_FAILED
    print(f"revoked {count} session(s) of {what}; live sessions are refused within a second")
    return 0

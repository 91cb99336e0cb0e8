"""``hplus contracts …``: work with the contract tree in this repository."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.cli._base import CliError, Parser
from tools.releases import PROTO_ROOT, RELEASES_DIR, ReleaseError, freeze, list_releases


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``contracts`` command group."""
    p = sub.add_parser("contracts", help="freeze and list contract releases")
    csub = p.add_subparsers(dest="contracts_cmd", metavar="COMMAND", parser_class=Parser)
    csub.required = True

    f = csub.add_parser(
        "freeze",
        help="freeze the contract tree as a release image (never overwrites one)",
        description="Compile proto/ with protoc and write releases/<VERSION>.binpb and "
        "its sha256. Refuses a version that is frozen already or not newer than the latest.",
    )
    f.add_argument("version", metavar="VERSION", help="semantic version, e.g. 1.1.0")
    f.add_argument("--proto", type=Path, default=PROTO_ROOT, help="contract tree (default: proto)")
    f.add_argument(
        "--releases",
        type=Path,
        default=RELEASES_DIR,
        help="releases folder (default: proto/releases)",
    )
    f.set_defaults(func=_freeze)

    ls = csub.add_parser("list", help="list frozen releases with their digests")
    ls.add_argument("--releases", type=Path, default=RELEASES_DIR)
    ls.set_defaults(func=_list)


def _freeze(args: argparse.Namespace) -> int:
    try:
        rel = freeze(args.version, proto_root=args.proto, releases_dir=args.releases)
    except ReleaseError as err:
        raise CliError(str(err)) from None
    print(f"froze {rel.version}: {rel.image} sha256:{rel.digest}")
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        releases = list_releases(args.releases)
    except ReleaseError as err:
        raise CliError(str(err)) from None
    for rel in releases:
        print(f"{rel.version}\t{rel.image}\tsha256:{rel.digest}")
    return 0

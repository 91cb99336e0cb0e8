"""``hplus compat …``: compare contract releases and gate a candidate on the last N releases.

Inputs (``OLD``, ``NEW``, ``CANDIDATE``) are a directory of ``.proto`` files, a frozen image
file, ``release:<version>`` (looked up in ``--releases-dir``) or ``git:<ref>``.

Exit codes:

* ``0`` — compatible (nothing at or above ``--fail-on``);
* ``1`` — breaking changes found (or, with ``--fail-on warn|info``, such changes);
* ``2`` — bad input: unreadable or uncompilable input, unknown release, bad flag. The one-line
  message names the file, line and column, or the input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import compat
from tools.cli._base import CliError, Parser

__all__ = ["EXIT_BREAKING", "EXIT_COMPATIBLE", "register"]

EXIT_COMPATIBLE = 0
"""No breaking change (at or above ``--fail-on``)."""
EXIT_BREAKING = 1
"""Breaking changes were found."""

_DEFAULT_RELEASES = Path("proto/releases")


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``compat`` command group."""
    p = sub.add_parser(
        "compat",
        help="diff contract releases; gate a candidate on the last N releases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="compat_cmd", metavar="COMMAND", parser_class=Parser)
    csub.required = True

    d = csub.add_parser(
        "diff",
        help="list every change between two inputs and the breaking ones",
        description="Compare OLD with NEW: rule findings (buf's rule IDs) and the "
        "parameter-change list per service, RPC, request/response and parameter path.",
    )
    d.add_argument(
        "old", metavar="OLD", help="older input (dir, image, release:V, git:REF, registry:V)"
    )
    d.add_argument("new", metavar="NEW", help="newer input")
    _common(d)
    _registry_flags(d)
    d.add_argument(
        "--fail-on",
        default="error",
        choices=["error", "warn", "info", "never"],
        help="exit 1 on unapproved breaking findings (error, the default), also on parameter "
        "changes judged warn/info, or never",
    )
    d.set_defaults(func=_diff)

    w = csub.add_parser(
        "window",
        help="check a candidate against each of the last N frozen releases",
        description="Check CANDIDATE against each of the last N frozen releases in both "
        "directions (what the newer cloud sends to older edges and apps, and what they send "
        "back) and print a matrix plus the findings per pair. Exit 1 if any pair fails.",
    )
    w.add_argument("candidate", metavar="CANDIDATE", help="the candidate (usually proto)")
    w.add_argument("--releases", type=int, default=5, metavar="N", help="window size (default: 5)")
    _common(w)
    _registry_flags(w)
    w.set_defaults(func=_window)

    r = csub.add_parser("rules", help="list the rules, their categories and purposes")
    r.set_defaults(func=_rules)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format", default="text", choices=["text", "json", "markdown"], help="output format"
    )
    default = ", ".join(c.value for c in compat.DEFAULT_CATEGORIES)
    p.add_argument(
        "--category",
        action="append",
        metavar="CAT",
        help=f"rule category: WIRE, WIRE_JSON, PACKAGE, FILE (= SOURCE); repeatable "
        f"(default: {default}, as make breaking and registry push)",
    )
    p.add_argument(
        "--releases-dir",
        type=Path,
        default=_DEFAULT_RELEASES,
        help="where release:<version> images live (default: proto/releases)",
    )
    p.add_argument("--approvals", type=Path, help="file of approved finding fingerprints")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="ELEMENT",
        help="ignore an element (pkg.Msg, pkg.Msg#3, pkg.Svc/Rpc), a file or dir/; prefix "
        "RULE_ID: to ignore one rule only; repeatable",
    )
    p.add_argument(
        "--ignore-unstable",
        action="store_true",
        help="ignore packages whose version is unstable (v1alpha1, v1beta1, v1test)",
    )


def _categories(args: argparse.Namespace) -> list[compat.Category]:
    if not args.category:
        return list(compat.DEFAULT_CATEGORIES)
    try:
        return [compat.Category.parse(c) for c in args.category]
    except ValueError as err:
        raise CliError(str(err)) from None


def _suppressions(args: argparse.Namespace) -> compat.Suppressions:
    approvals: frozenset[str] = frozenset()
    if args.approvals is not None:
        approvals = compat.load_approvals(args.approvals)
    return compat.Suppressions(
        ignore_unstable_packages=args.ignore_unstable,
        approvals=approvals,
        ignore=tuple(args.ignore),
    )


def _registry_flags(p: argparse.ArgumentParser) -> None:
    # Only `registry:V` inputs use these: the release is fetched from a node's registry.
    from tools.cli._registry import _client_flags

    _client_flags(p)


def _load(
    ref: str, releases_dir: Path, args: argparse.Namespace | None = None
) -> compat.LoadedInput:
    if ref.startswith("registry:") and args is not None:
        from tools.cli._registry import _get, _loaded

        release = ref.removeprefix("registry:")
        if not release:
            raise compat.CompatInputError("expected registry:VERSION (or label:NAME)", path=ref)
        loaded: compat.LoadedInput = _loaded(_get(args, release, full=True))
        return loaded
    return compat.load_input(ref, releases_dir=releases_dir)


def _load_all(
    refs: list[str], releases_dir: Path, args: argparse.Namespace | None = None
) -> list[compat.LoadedInput]:
    # One after the other: two protoc runs side by side measured slower on 2 cores.
    return [_load(r, releases_dir, args) for r in refs]


def _diff(args: argparse.Namespace) -> int:
    cats = _categories(args)
    try:
        sup = _suppressions(args)
        old, new = _load_all([args.old, args.new], args.releases_dir, args)
    except compat.CompatInputError as err:
        raise CliError(str(err)) from None
    result = compat.diff(
        old.schema, new.schema, old=old.label, new=new.label, categories=cats, suppressions=sup
    )
    print(result.render(args.format))
    fail_on = None if args.fail_on == "never" else compat.Severity.parse(args.fail_on)
    return EXIT_BREAKING if result.failed(fail_on) else EXIT_COMPATIBLE


def _window(args: argparse.Namespace) -> int:
    if args.releases < 1:
        raise CliError("--releases must be at least 1")
    cats = _categories(args)
    started = time.perf_counter()
    try:
        sup = _suppressions(args)
        versions = compat.list_release_versions(args.releases_dir)
        if not versions:
            raise CliError(f"no frozen releases in {args.releases_dir}")
        refs = [args.candidate, *(f"release:{v}" for v in versions[-args.releases :])]
        candidate, *releases = _load_all(refs, args.releases_dir, args)
    except compat.CompatInputError as err:
        raise CliError(str(err)) from None
    report = compat.window(candidate, releases, categories=cats, suppressions=sup)
    print(report.render(args.format))
    if args.format == "text":
        print(f"\nchecked {len(releases)} release(s) in {time.perf_counter() - started:.2f}s")
    return EXIT_COMPATIBLE if report.passed else EXIT_BREAKING


def _rules(args: argparse.Namespace) -> int:
    for spec in compat.RULES.values():
        cats = ",".join(c.value for c in compat.Category if c in spec.categories)
        print(f"{spec.id:<48} {cats:<30} {spec.purpose}")
    return EXIT_COMPATIBLE

"""``hplus fleet …``: edge packages (keys, build, sign, verify, deltas), rollouts, live config.

The trust model (an offline root key certifies short-lived signing keys) is described in
``mesh.packages``; these commands are the release manager's side of it. Every refusal is one
line ending in its reason code (``[BAD_SIGNATURE]``), exit 1; unreadable input exit 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

from tools.cli._base import EXIT_FAILED, EXIT_OK, CliError, Parser

__all__ = ["register"]

_DURATION = re.compile(r"^(\d+)([dh])$")
# Reasons that mean "the file is not what it must be" (exit 1) rather than "cannot read".
_INPUT_REASONS = {"BAD_KEY", "KEY_EXISTS", "UNREADABLE"}


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``fleet`` command group."""
    p = sub.add_parser(
        "fleet",
        help="edge releases (signing keys, packages, deltas, rollouts) and live configuration",
        description="Edge packages are signed tar archives of the wheels an edge runs. An "
        "offline root key certifies signing keys; edges trust only the root's public key.",
    )
    fsub = p.add_subparsers(dest="fleet_cmd", metavar="COMMAND", parser_class=Parser)
    fsub.required = True

    keys = fsub.add_parser("keys", help="make the root key and certify signing keys")
    ksub = keys.add_subparsers(dest="keys_cmd", metavar="COMMAND", parser_class=Parser)
    ksub.required = True
    root = ksub.add_parser(
        "root",
        help="make a root key pair (keep root.key offline; edges trust root.pub)",
    )
    root.add_argument("--out", type=Path, required=True, metavar="DIR")
    root.set_defaults(func=_keys_root)
    signing = ksub.add_parser(
        "signing",
        help="make a signing key and certify it with the root key for a period",
    )
    signing.add_argument("--root-key", type=Path, required=True, metavar="FILE")
    signing.add_argument("--out", type=Path, required=True, metavar="DIR")
    signing.add_argument(
        "--valid-for",
        default="90d",
        metavar="N{d|h}",
        help="how long the certificate is valid (default: 90d)",
    )
    signing.set_defaults(func=_keys_signing)

    package = fsub.add_parser("package", help="build, sign, verify and diff packages")
    psub = package.add_subparsers(dest="package_cmd", metavar="COMMAND", parser_class=Parser)
    psub.required = True
    build = psub.add_parser("build", help="an unsigned package of the given files (wheels)")
    build.add_argument("files", nargs="+", type=Path, metavar="FILE")
    build.add_argument("--version", required=True, help="the edge version (semver)")
    build.add_argument("--contract-release", required=True, help="the contract release it speaks")
    build.add_argument(
        "--profile-schema", type=int, default=1, help="profile schema version (default: 1)"
    )
    build.add_argument("--out", type=Path, required=True, metavar="PACKAGE")
    build.set_defaults(func=_build)

    sign = psub.add_parser("sign", help="sign a package with a certified signing key")
    sign.add_argument("package", type=Path, metavar="PACKAGE")
    sign.add_argument("--key", type=Path, required=True, metavar="signing.key")
    sign.add_argument("--cert", type=Path, required=True, metavar="signing.cert.json")
    sign.add_argument("--out", type=Path, metavar="FILE", help="default: sign in place")
    sign.set_defaults(func=_sign)

    verify = psub.add_parser(
        "verify", help="verify a package as an edge would (exit 1 with the reason if refused)"
    )
    verify.add_argument("package", type=Path, metavar="PACKAGE")
    verify.add_argument(
        "--root",
        type=Path,
        action="append",
        required=True,
        metavar="root.pub",
        help="a trusted root public key (repeatable)",
    )
    verify.add_argument("--installed-version", help="refuse a package that is not newer (rollback)")
    verify.add_argument("--sha256", help="the digest the download must have")
    verify.add_argument("--format", choices=["text", "json"], default="text")
    verify.set_defaults(func=_verify)

    delta = psub.add_parser("delta", help="a binary delta from OLD to NEW (bsdiff4)")
    delta.add_argument("old", type=Path, metavar="OLD")
    delta.add_argument("new", type=Path, metavar="NEW")
    delta.add_argument("--out", type=Path, required=True, metavar="DELTA")
    delta.set_defaults(func=_delta)

    patch = psub.add_parser("apply-delta", help="rebuild NEW from OLD and a delta, checked")
    patch.add_argument("old", type=Path, metavar="OLD")
    patch.add_argument("delta", type=Path, metavar="DELTA")
    patch.add_argument("--out", type=Path, required=True, metavar="PACKAGE")
    patch.set_defaults(func=_apply_delta)

    from tools.cli import _fleet_config, _upgrades

    _upgrades.register(fsub)
    _fleet_config.register_config(fsub)


def _fail(err: Exception) -> CliError:
    from mesh.packages import PackageError

    assert isinstance(err, PackageError)
    code = 2 if err.reason in _INPUT_REASONS else EXIT_FAILED
    return CliError(str(err), exit_code=code)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CliError(f"{path}: cannot read: {err.strerror}") from None


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as err:
        raise CliError(f"{path}: cannot write: {err.strerror}") from None


def _keys_root(args: argparse.Namespace) -> int:
    from mesh.packages import PackageError, generate_key, key_id, public_pem, write_private_key

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    try:
        write_private_key(out / "root.key", key)
    except PackageError as err:
        raise _fail(err) from None
    _write(out / "root.pub", public_pem(key.public_key()))
    print(
        f"root key {key_id(key.public_key())}: {out / 'root.key'} (mode 0600, keep offline), "
        f"{out / 'root.pub'} (give to edges)"
    )
    return EXIT_OK


def _duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text)
    if not match or int(match.group(1)) == 0:
        raise CliError(f"--valid-for: expected a positive N followed by d or h, got {text!r}")
    n = int(match.group(1))
    return dt.timedelta(days=n) if match.group(2) == "d" else dt.timedelta(hours=n)


def _keys_signing(args: argparse.Namespace) -> int:
    from mesh.packages import (
        PackageError,
        certify_signing_key,
        generate_key,
        load_private_key,
        write_private_key,
    )

    valid_for = _duration(args.valid_for)
    out: Path = args.out
    try:
        root = load_private_key(args.root_key)
        out.mkdir(parents=True, exist_ok=True)
        key = generate_key()
        write_private_key(out / "signing.key", key)
    except PackageError as err:
        raise _fail(err) from None
    cert = certify_signing_key(root, key.public_key(), valid_for=valid_for)
    _write(out / "signing.cert.json", cert.to_bytes())
    print(
        f"signing key {cert.key_id} certified by root {cert.root_key_id} until "
        f"{cert.not_after:%Y-%m-%d %H:%M}Z: {out / 'signing.key'}, {out / 'signing.cert.json'}"
    )
    return EXIT_OK


def _build(args: argparse.Namespace) -> int:
    from mesh.packages import PackageError, build_package, files_from_paths

    try:
        data = build_package(
            files_from_paths(args.files),
            version=args.version,
            contract_release=args.contract_release,
            profile_schema_version=args.profile_schema,
        )
    except PackageError as err:
        raise CliError(str(err)) from None
    _write(args.out, data)
    print(
        f"{args.out}: unsigned package {args.version}, {len(args.files)} files, {len(data)} bytes"
    )
    return EXIT_OK


def _sign(args: argparse.Namespace) -> int:
    from mesh.packages import PackageError, SigningCertificate, load_private_key, sign_package

    try:
        key = load_private_key(args.key)
        cert = SigningCertificate.load(args.cert)
        data = sign_package(_read(args.package), key, cert)
    except PackageError as err:
        raise _fail(err) from None
    out = args.out or args.package
    _write(out, data)
    print(f"{out}: signed by key {cert.key_id} (root {cert.root_key_id})")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from mesh.packages import PackageError, TrustRoot, verify_package

    try:
        trust = TrustRoot.load(args.root)
        verified = verify_package(
            args.package,
            trust,
            installed_version=args.installed_version,
            expected_sha256=args.sha256,
        )
    except PackageError as err:
        if args.format == "json":
            json.dump({"ok": False, "reason": err.reason, "message": err.message}, sys.stdout)
            sys.stdout.write("\n")
            return EXIT_FAILED
        raise _fail(err) from None
    m = verified.manifest
    if args.format == "json":
        json.dump(
            {
                "ok": True,
                "version": m.version,
                "contract_release": m.contract_release,
                "profile_schema_version": m.profile_schema_version,
                "signing_key_id": verified.signing_key_id,
                "sha256": verified.sha256,
                "size": verified.size,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in m.files],
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        print(
            f"{args.package}: OK — version {m.version}, contracts {m.contract_release}, "
            f"{len(m.files)} files, signed by {verified.signing_key_id}, sha256 {verified.sha256}"
        )
    return EXIT_OK


def _delta(args: argparse.Namespace) -> int:
    from mesh.packages import PackageError, make_delta

    old, new = _read(args.old), _read(args.new)
    try:
        data = make_delta(old, new)
    except PackageError as err:
        raise _fail(err) from None
    _write(args.out, data)
    print(f"{args.out}: {len(data)} bytes ({len(data) / max(len(new), 1):.1%} of {len(new)})")
    return EXIT_OK


def _apply_delta(args: argparse.Namespace) -> int:
    from mesh.packages import PackageError, apply_delta

    try:
        data = apply_delta(_read(args.old), _read(args.delta))
    except PackageError as err:
        raise _fail(err) from None
    _write(args.out, data)
    print(f"{args.out}: rebuilt, {len(data)} bytes (verify it before installing)")
    return EXIT_OK

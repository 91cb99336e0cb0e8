"""``hplus registry …``: publish, inspect, label and retire contract releases.

Release commands talk gRPC to a running cloud node (``--registry HOST:PORT``, default the
node's registry endpoint from the config), so pushes go through the node's push policy, auth
and audit log; the node's TLS CA is read from the data directory as ``hplus cloud tunnels``
does. The token comes from ``--token-file`` or ``HPLUS_REGISTRY_TOKEN``.

``hplus registry token …`` writes the registry database directly (``--database-url``,
``HPLUS_REGISTRY_DATABASE_URL`` or ``<data dir>/registry.db``): it is how the first
release-manager token is made, before anyone holds a token to ask the node with.

Exit codes: 0 done; 1 the push was refused for breaking changes; 2 bad input or a failed
call; 3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_BAD_INPUT, CliError, Parser, write_secret_file
from tools.cli._node import (
    channel_credentials,
    config_flags,
    failure,
    precondition_lines,
    run_on_node,
)
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.registry import TokenStore
    from hplus.cloud.v1 import registry_pb2, registry_pb2_grpc
    from mesh.errors import StatusError

    Stub = registry_pb2_grpc.RegistryServiceAsyncStub
    Md = tuple[tuple[str, str]]

__all__ = ["EXIT_BREAKING", "generate_stubs", "register"]

EXIT_BREAKING = 1
"""The push was refused: unapproved breaking changes against the compat window."""

_TIMEOUT = 60.0
_TOKEN_ENV = "HPLUS_REGISTRY_TOKEN"
_DB_ENV = "HPLUS_REGISTRY_DATABASE_URL"
T = TypeVar("T")


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``registry`` command group."""
    p = sub.add_parser(
        "registry",
        help="publish, inspect, label and retire contract releases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rs = p.add_subparsers(dest="registry_cmd", metavar="COMMAND", parser_class=Parser)
    rs.required = True

    push = rs.add_parser(
        "push",
        help="publish a proto directory or descriptor image as a release",
        description="Compile SOURCE (a directory of .proto files, or an image file) and push "
        "it under --version. A breaking change against the compat window is refused (exit 1) "
        "and its fingerprints printed; approve them with --approve FILE to push anyway.",
    )
    push.add_argument("source", metavar="DIR|IMAGE")
    push.add_argument("--version", required=True, help="semantic version, e.g. 1.4.0")
    push.add_argument("--label", action="append", default=[], help="label to point at it")
    push.add_argument(
        "--approve",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="approvals file: one fingerprint per line (# comments allowed)",
    )
    push.add_argument("--notes", default="", help="release notes (Markdown)")
    push.add_argument("--window", type=int, default=0, help="window size (default: policy)")
    push.add_argument("--dry-run", action="store_true", help="check only; store nothing")
    _client_flags(push)
    push.set_defaults(func=_push)

    ls = rs.add_parser("list", help="list releases, highest version first")
    ls.add_argument("--lifecycle", choices=["active", "deprecated", "retired"], action="append")
    ls.add_argument("--label", help="only the release this label points at")
    ls.add_argument("--major", type=int, help="only this major version")
    _client_flags(ls)
    ls.set_defaults(func=_list)

    show = rs.add_parser("show", help="show one release (version, label:NAME or sha256:HEX)")
    show.add_argument("release", metavar="RELEASE")
    _client_flags(show)
    show.set_defaults(func=_show)

    diff = rs.add_parser(
        "diff",
        help="the parameter-change list between two stored releases",
        description="Fetch both releases and compare them with the compat engine; the "
        "formats are those of `hplus compat diff`.",
    )
    diff.add_argument("old", metavar="V1")
    diff.add_argument("new", metavar="V2")
    diff.add_argument("--format", default="text", choices=["text", "json", "markdown"])
    diff.add_argument(
        "--category",
        action="append",
        metavar="CAT",
        help="rule category; repeatable (default: the categories every gate runs, as "
        "hplus compat diff and registry push)",
    )
    _client_flags(diff)
    diff.set_defaults(func=_diff)

    census = rs.add_parser(
        "census",
        help="the field census: which fields each RPC really carries, per edge release",
        description="Show what the gateways counted in sampled tunnel traffic: for each RPC, "
        "direction and edge contract release, how many sampled messages carried each field.",
    )
    census.add_argument("--rpc", default="", help="only this RPC (/package.Service/Method)")
    census.add_argument("--release", default="", help="only edges on this contract release")
    census.add_argument("--field", default="", help="only this field path and those below it")
    _client_flags(census)
    census.set_defaults(func=_census)

    label = rs.add_parser("label", help="point a label at a release, or delete it")
    label.add_argument("name", metavar="LABEL")
    label.add_argument("release", metavar="RELEASE", nargs="?", help="omit with --delete")
    label.add_argument("--delete", action="store_true", help="remove the label")
    label.add_argument("--expect", metavar="RELEASE", help="only if the label is there now")
    label.add_argument("--create-only", action="store_true", help="fail if the label exists")
    _client_flags(label)
    label.set_defaults(func=_label)

    for name, state, text in (
        ("deprecate", "deprecated", "mark a release deprecated (still in the window)"),
        ("activate", "active", "undo a deprecation"),
        ("retire", "retired", "retire a release for good (leaves the window)"),
    ):
        lc = rs.add_parser(name, help=text)
        lc.add_argument("version", metavar="VERSION")
        lc.add_argument("--reason", default="", help="recorded in the audit log")
        _client_flags(lc)
        lc.set_defaults(func=_lifecycle, state=state)

    gen = rs.add_parser(
        "gen",
        help="write importable Python stubs for a stored release",
        description="Fetch RELEASE's image and run protoc (grpcio-tools) on it: *_pb2.py, "
        "*_pb2.pyi and *_pb2_grpc.py for every file of the release, under --out.",
    )
    gen.add_argument("release", metavar="RELEASE")
    gen.add_argument("--out", type=Path, required=True, help="output directory")
    _client_flags(gen)
    gen.set_defaults(func=_gen)

    imp = rs.add_parser(
        "import",
        help="push the repository's frozen releases (proto/releases) in version order",
    )
    imp.add_argument("--releases-dir", type=Path, default=Path("proto/releases"))
    imp.add_argument("--approve", action="append", default=[], type=Path, metavar="FILE")
    _client_flags(imp)
    imp.set_defaults(func=_import)

    tok = rs.add_parser("token", help="issue, revoke and list registry tokens (database)")
    ts = tok.add_subparsers(dest="token_cmd", metavar="COMMAND", parser_class=Parser)
    ts.required = True
    issue = ts.add_parser("issue", help="issue a token (shown once)")
    issue.add_argument("name", metavar="NAME", help="who holds it, e.g. alice or ci-release")
    issue.add_argument("--role", required=True, choices=["release-manager", "service"])
    issue.add_argument("--out", type=Path, help="write the token to this file (mode 0600)")
    _db_flags(issue)
    issue.set_defaults(func=_token_issue)
    revoke = ts.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    _db_flags(revoke)
    revoke.set_defaults(func=_token_revoke)
    tls = ts.add_parser("list", help="list tokens (never secrets)")
    _db_flags(tls)
    tls.set_defaults(func=_token_list)


def _client_flags(p: argparse.ArgumentParser) -> None:
    config_flags(p)
    p.add_argument("--registry", metavar="HOST:PORT", help="registry endpoint (default: config)")
    p.add_argument("--token-file", type=Path, help=f"token file (default: ${_TOKEN_ENV})")
    p.add_argument("--plaintext", action="store_true", help="no TLS (a node run with --tls off)")


def _db_flags(p: argparse.ArgumentParser) -> None:
    config_flags(p)
    p.add_argument("--database-url", help=f"registry database (default ${_DB_ENV} or data dir)")


# --- gRPC client ----------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            return str(args.token_file.read_text().strip())
        except OSError as err:
            raise CliError(f"{args.token_file}: cannot read token: {err.strerror}") from None
    token = os.environ.get(_TOKEN_ENV, "").strip()
    if not token:
        raise CliError(f"no registry token: pass --token-file or set {_TOKEN_ENV}")
    return token


_REGISTRY_HINT = "is a cloud node running there? (hplus cloud run; --registry HOST:PORT)"


def _call(
    args: argparse.Namespace,
    action: Callable[[Stub, Md], Awaitable[T]],
) -> T:
    """Run ``action`` against the registry with the caller's token; map call errors."""
    from cloud.registry import MAX_MESSAGE_BYTES
    from hplus.cloud.v1 import registry_pb2_grpc
    from mesh import errors

    config = _load(args)
    target = args.registry or config.registry_address
    metadata = (("authorization", f"Bearer {_token(args)}"),)
    creds = channel_credentials(config, plaintext=args.plaintext)
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]

    async def go(channel: Any) -> T:
        return await action(errors.wrap(registry_pb2_grpc.RegistryServiceStub(channel)), metadata)

    try:
        return run_on_node(target, creds, go, hint=_REGISTRY_HINT, options=options)
    except errors.StatusError as err:
        raise _rpc_error(target, err) from None


def _rpc_error(target: str, err: StatusError) -> CliError:
    if err.reason != "UNAPPROVED_BREAKING_CHANGES":
        return failure(f"registry {target}", err, exit_code=EXIT_BAD_INPUT)
    lines = [f"registry {target}: {err}", *precondition_lines(err)]
    lines.append("approve intended breaks by listing their fingerprints in --approve FILE")
    return CliError("\n".join(lines), exit_code=EXIT_BREAKING)


def _selector(text: str) -> registry_pb2.ReleaseSelector:
    from hplus.cloud.v1 import common_pb2, registry_pb2

    if text.startswith("label:"):
        return registry_pb2.ReleaseSelector(label=text.removeprefix("label:"))
    if text.startswith("sha256:"):
        try:
            value = bytes.fromhex(text.removeprefix("sha256:"))
        except ValueError:
            raise CliError(f"{text!r}: a digest is sha256:<64 hex digits>") from None
        return registry_pb2.ReleaseSelector(
            digest=common_pb2.Digest(algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=value)
        )
    return registry_pb2.ReleaseSelector(version=text)


def _approvals(files: Sequence[Path]) -> list[str]:
    import compat

    out: set[str] = set()
    for path in files:
        try:
            out |= compat.load_approvals(path)
        except compat.CompatInputError as err:
            raise CliError(str(err)) from None
    return sorted(out)


def _image_bytes(source: str) -> bytes:
    """The canonical image of a proto directory or image file."""
    import compat
    from cloud.registry import InvalidArgument, canonical_image

    try:
        loaded = compat.load_input(source)
        return canonical_image(loaded.image)
    except compat.CompatInputError as err:
        raise CliError(str(err)) from None
    except InvalidArgument as err:
        raise CliError(f"{source}: {err.description}") from None


def _push_request(version: str, image: bytes, **kw: Any) -> registry_pb2.PushReleaseRequest:
    import uuid

    from hplus.cloud.v1 import common_pb2, registry_pb2

    return registry_pb2.PushReleaseRequest(
        request_id=str(uuid.uuid4()),
        version=version,
        image=image,
        expected_digest=common_pb2.Digest(
            algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=hashlib.sha256(image).digest()
        ),
        **kw,
    )


def _push(args: argparse.Namespace) -> int:
    image = _image_bytes(args.source)
    request = _push_request(
        args.version,
        image,
        labels=args.label,
        approvals=_approvals(args.approve),
        notes=args.notes,
        window_size=args.window,
        validate_only=args.dry_run,
    )

    async def push(
        stub: registry_pb2_grpc.RegistryServiceAsyncStub, md: tuple[tuple[str, str]]
    ) -> registry_pb2.PushReleaseResponse:
        return await stub.PushRelease(request, metadata=md, timeout=_TIMEOUT)

    reply = _call(args, push)
    rel = reply.release
    verb = "would push" if args.dry_run else ("pushed" if reply.created else "unchanged")
    print(f"{verb} {rel.version} sha256:{rel.digest.value.hex()} ({rel.image_size_bytes} bytes)")
    for row in reply.check.rows:
        cells = ", ".join(
            f"{_name(c.direction, 'CHECK_DIRECTION_')} {_name(c.verdict, 'CHECK_VERDICT_')}"
            for c in row.results
        )
        print(f"  checked against {row.release.version}: {cells}")
    return 0


def _name(value: int, prefix: str) -> str:
    from hplus.cloud.v1 import registry_pb2

    for enum in (
        registry_pb2.CheckDirection,
        registry_pb2.CheckVerdict,
        registry_pb2.ReleaseLifecycle,
    ):
        for name, number in enum.items():
            if number == value and name.startswith(prefix):
                return name.removeprefix(prefix).lower()
    return str(value)


def _list(args: argparse.Namespace) -> int:
    from hplus.cloud.v1 import registry_pb2

    states = [
        registry_pb2.ReleaseLifecycle.Value(f"RELEASE_LIFECYCLE_{s.upper()}")
        for s in args.lifecycle or ()
    ]

    async def ls(
        stub: registry_pb2_grpc.RegistryServiceAsyncStub, md: tuple[tuple[str, str]]
    ) -> list[registry_pb2.Release]:
        out: list[registry_pb2.Release] = []
        token = ""
        while True:
            request = registry_pb2.ListReleasesRequest(
                lifecycles=states, label=args.label or "", page_size=500, page_token=token
            )
            if args.major is not None:
                request.major_version = args.major
            reply = await stub.ListReleases(request, metadata=md, timeout=_TIMEOUT)
            out.extend(reply.releases)
            token = reply.next_page_token
            if not token:
                return out

    releases = _call(args, ls)
    print(f"{'VERSION':<14} {'LIFECYCLE':<11} {'CREATED':<21} {'BY':<16} {'DIGEST':<20} LABELS")
    for r in releases:
        created = r.create_time.ToDatetime().isoformat(timespec="seconds") + "Z"
        print(
            f"{r.version:<14} {_name(r.lifecycle, 'RELEASE_LIFECYCLE_'):<11} {created:<21} "
            f"{r.push_actor:<16} {r.digest.value.hex()[:19]:<20} {','.join(r.labels)}"
        )
    return 0


def _get(args: argparse.Namespace, release: str, *, full: bool) -> registry_pb2.Release:
    from hplus.cloud.v1 import registry_pb2

    view = registry_pb2.RELEASE_VIEW_FULL if full else registry_pb2.RELEASE_VIEW_BASIC

    async def get(
        stub: registry_pb2_grpc.RegistryServiceAsyncStub, md: tuple[tuple[str, str]]
    ) -> registry_pb2.Release:
        reply = await stub.GetRelease(
            registry_pb2.GetReleaseRequest(release=_selector(release), view=view),
            metadata=md,
            timeout=_TIMEOUT,
        )
        return reply.release

    return _call(args, get)


def _show(args: argparse.Namespace) -> int:
    r = _get(args, args.release, full=False)
    print(f"version:    {r.version}")
    print(f"digest:     sha256:{r.digest.value.hex()}")
    print(f"size:       {r.image_size_bytes} bytes")
    print(
        f"lifecycle:  {_name(r.lifecycle, 'RELEASE_LIFECYCLE_')} (since "
        f"{r.lifecycle_change_time.ToDatetime().isoformat(timespec='seconds')}Z)"
    )
    print(f"labels:     {', '.join(r.labels) or '-'}")
    print(
        f"pushed:     {r.create_time.ToDatetime().isoformat(timespec='seconds')}Z by {r.push_actor}"
    )
    print(f"approved:   {', '.join(r.approved_fingerprints) or '-'}")
    print(f"services:   {', '.join(r.services)}")
    print(f"files:      {len(r.files)}")
    for f in r.files:
        print(f"  {f}")
    if r.notes:
        print()
        print(r.notes)
    return 0


def _loaded(release: registry_pb2.Release) -> Any:
    """A fetched release, indexed for the compat engine."""
    from cloud.registry import InvalidArgument, load_image

    try:
        return load_image(release.image, label=release.version).loaded
    except InvalidArgument as err:
        raise CliError(f"release {release.version}: {err.description}") from None


def _diff(args: argparse.Namespace) -> int:
    import compat

    try:
        categories = [compat.Category.parse(c) for c in args.category or ()]
    except ValueError as err:
        raise CliError(f"--category: {err}") from None
    old = _get(args, args.old, full=True)
    new = _get(args, args.new, full=True)
    result = compat.diff(
        _loaded(old).schema,
        _loaded(new).schema,
        old=old.version,
        new=new.version,
        categories=categories or compat.DEFAULT_CATEGORIES,
        suppressions=compat.Suppressions(approvals=frozenset(new.approved_fingerprints)),
    )
    entries = _census_entries(args)
    notes = _census_notes(result, entries)
    if args.format == "json":
        data = json.loads(result.render("json"))
        data["census"] = notes
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    print(result.render(args.format))
    if notes:
        heading = "## Field census" if args.format == "markdown" else "Field census"
        print(f"\n{heading}: removed or changed parameters that edges still carry\n")
        for n in notes:
            releases = ", ".join(f"{r} ({m} of {t})" for r, m, t in n["releases"])
            bullet = "- " if args.format == "markdown" else "  "
            print(
                f"{bullet}{n['rpc']} {n['direction']} `{n['parameter']}` ({n['change']}): "
                f"present in sampled messages from edges on {releases}"
            )
    return 0


_CENSUS_KINDS = {"removed", "retyped", "renumbered", "relabeled", "renamed", "oneof"}


def _census_entries(args: argparse.Namespace) -> list[registry_pb2.CensusEntry]:
    """Every census entry, or none when the node runs no census (UNIMPLEMENTED)."""
    from hplus.cloud.v1 import registry_pb2

    async def get(stub: Stub, md: Md) -> list[registry_pb2.CensusEntry]:
        from mesh import errors

        try:
            reply = await stub.GetFieldCensus(
                registry_pb2.GetFieldCensusRequest(), metadata=md, timeout=30
            )
        except errors.Unimplemented:
            return []
        return list(reply.entries)

    return _call(args, get)


def _census_notes(result: Any, entries: Sequence[registry_pb2.CensusEntry]) -> list[dict[str, Any]]:
    """Census evidence for each removed or changed parameter of the diff."""
    from hplus.cloud.v1 import registry_pb2

    by_key: dict[tuple[str, str, str], list[registry_pb2.CensusEntry]] = {}
    names = {
        registry_pb2.CENSUS_DIRECTION_REQUEST: "request",
        registry_pb2.CENSUS_DIRECTION_RESPONSE: "response",
    }
    for e in entries:
        by_key.setdefault((e.rpc, names.get(e.direction, ""), e.field_path), []).append(e)
    notes = []
    for p in result.report.parameters:
        if p.direction is None or p.change.kind.value not in _CENSUS_KINDS:
            continue
        rpc = f"/{p.service}/{p.rpc}"
        seen = by_key.get((rpc, str(p.direction), p.parameter), [])
        if not seen:
            continue
        notes.append(
            {
                "rpc": rpc,
                "direction": str(p.direction),
                "parameter": p.parameter,
                "change": p.change.kind.value,
                "releases": sorted((e.contract_release, e.messages, e.sampled) for e in seen),
            }
        )
    return notes


def _census(args: argparse.Namespace) -> int:
    from hplus.cloud.v1 import registry_pb2

    request = registry_pb2.GetFieldCensusRequest(
        rpc=args.rpc, contract_release=args.release, field_path=args.field
    )

    async def get(stub: Stub, md: Md) -> registry_pb2.GetFieldCensusResponse:
        reply: registry_pb2.GetFieldCensusResponse = await stub.GetFieldCensus(
            request, metadata=md, timeout=30
        )
        return reply

    reply = _call(args, get)
    names = {
        registry_pb2.CENSUS_DIRECTION_REQUEST: "request",
        registry_pb2.CENSUS_DIRECTION_RESPONSE: "response",
    }
    since = (
        reply.since_time.ToDatetime().isoformat(timespec="seconds") + "Z"
        if (reply.HasField("since_time"))
        else "-"
    )
    print(f"sample rate {reply.sample_rate:g}, counting since {since}")
    print(f"{'RPC':<52} {'DIR':<8} {'RELEASE':<9} {'FIELD':<36} {'PRESENT':>14}")
    for e in reply.entries:
        share = f"{e.messages}/{e.sampled}"
        print(
            f"{e.rpc:<52} {names.get(e.direction, '?'):<8} {e.contract_release:<9} "
            f"{e.field_path:<36} {share:>14}"
        )
    print(f"{len(reply.entries)} row(s)")
    return 0


def _label(args: argparse.Namespace) -> int:
    from hplus.cloud.v1 import registry_pb2

    expected = None
    if args.expect is not None:
        expected = _get(args, args.expect, full=False).digest

    async def act(
        stub: registry_pb2_grpc.RegistryServiceAsyncStub, md: tuple[tuple[str, str]]
    ) -> str:
        import uuid

        if args.delete:
            d = registry_pb2.DeleteLabelRequest(request_id=str(uuid.uuid4()), label=args.name)
            if expected is not None:
                d.expected_digest.CopyFrom(expected)
            gone = await stub.DeleteLabel(d, metadata=md, timeout=_TIMEOUT)
            return f"deleted label {gone.label.name} (was at {gone.label.version})"
        if args.release is None:
            raise CliError("RELEASE is required unless --delete is given")
        s = registry_pb2.SetLabelRequest(
            request_id=str(uuid.uuid4()),
            label=args.name,
            release=_selector(args.release),
            create_only=args.create_only,
        )
        if expected is not None:
            s.expected_digest.CopyFrom(expected)
        reply = await stub.SetLabel(s, metadata=md, timeout=_TIMEOUT)
        was = f" (was {reply.previous_version})" if reply.previous_version else ""
        return f"label {reply.label.name} -> {reply.label.version}{was}"

    print(_call(args, act))
    return 0


def _lifecycle(args: argparse.Namespace) -> int:
    import uuid

    from hplus.cloud.v1 import registry_pb2

    state = registry_pb2.ReleaseLifecycle.Value(f"RELEASE_LIFECYCLE_{args.state.upper()}")

    async def move(
        stub: registry_pb2_grpc.RegistryServiceAsyncStub, md: tuple[tuple[str, str]]
    ) -> registry_pb2.Release:
        reply = await stub.SetLifecycle(
            registry_pb2.SetLifecycleRequest(
                request_id=str(uuid.uuid4()),
                version=args.version,
                lifecycle=state,
                reason=args.reason,
            ),
            metadata=md,
            timeout=_TIMEOUT,
        )
        return reply.release

    r = _call(args, move)
    print(f"{r.version} is {_name(r.lifecycle, 'RELEASE_LIFECYCLE_')}")
    return 0


def generate_stubs(image: bytes, files: Sequence[str], out: Path) -> list[Path]:
    """Run protoc on a descriptor image: Python messages, type stubs and gRPC stubs.

    Args:
        image: a serialized, self-contained ``FileDescriptorSet``.
        files: the release's own files to generate (imports are only read).
        out: output directory (created).

    Returns:
        The generated files.

    Raises:
        CliError: protoc failed.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hplus-gen-") as tmp:
        set_in = Path(tmp) / "image.binpb"
        set_in.write_bytes(image)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--descriptor_set_in={set_in}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                *files,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise CliError(f"protoc failed: {proc.stderr.strip() or proc.returncode}")
    return sorted(p for p in out.rglob("*") if p.is_file())


def _gen(args: argparse.Namespace) -> int:
    release = _get(args, args.release, full=True)
    written = generate_stubs(release.image, list(release.files), args.out)
    print(f"generated {len(written)} file(s) for {release.version} under {args.out}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from tools.releases import ReleaseError, list_releases

    try:
        frozen = list_releases(args.releases_dir)
    except ReleaseError as err:
        raise CliError(str(err)) from None
    if not frozen:
        raise CliError(f"no frozen release in {args.releases_dir}")
    approvals = _approvals(args.approve)
    requests = [
        _push_request(str(r.version), _image_bytes(str(r.image)), approvals=approvals)
        for r in frozen
    ]

    async def push_all(
        stub: registry_pb2_grpc.RegistryServiceAsyncStub, md: tuple[tuple[str, str]]
    ) -> list[registry_pb2.PushReleaseResponse]:
        # In version order, so each release is checked against the ones before it.
        return [await stub.PushRelease(r, metadata=md, timeout=_TIMEOUT) for r in requests]

    for reply in _call(args, push_all):
        verb = "imported" if reply.created else "already there:"
        print(f"{verb} {reply.release.version} sha256:{reply.release.digest.value.hex()}")
    return 0


# --- database (tokens) ----------------------------------------------------------------------


def _with_tokens(args: argparse.Namespace, action: Callable[[TokenStore], Awaitable[T]]) -> T:
    from cloud.db import DatabaseError, create_engine
    from cloud.registry import RegistryError, TokenStore, migrate_registry

    # The node's own resolution: --database-url, else [databases] registry or
    # HPLUS_REGISTRY_DATABASE_URL, else the data directory's registry.db.
    url = args.database_url or _load(args).registry_url

    async def go() -> T:
        engine = create_engine(url)
        try:
            await migrate_registry(engine)
            return await action(TokenStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except DatabaseError as err:
        raise CliError(str(err)) from None
    except RegistryError as err:
        raise CliError(err.message) from None


def _operator() -> str:
    try:
        return os.getlogin()
    except OSError:
        return os.environ.get("USER", "cli")


def _token_issue(args: argparse.Namespace) -> int:
    from cloud.registry import IssuedToken, Role

    if args.out is not None and args.out.exists():
        raise CliError(f"{args.out} exists; refusing to overwrite a token file")

    async def issue(store: TokenStore) -> IssuedToken:
        return await store.issue(args.name, Role(args.role), actor=f"cli:{_operator()}")

    issued = _with_tokens(args, issue)
    if args.out is not None:
        write_secret_file(args.out, issued.token)
        print(f"issued {issued.role.value} token {issued.token_id} for {issued.name}: {args.out}")
    else:
        print(f"issued {issued.role.value} token {issued.token_id} for {issued.name}")
        print("token (shown once):")
        print(issued.token)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:

    async def revoke(store: TokenStore) -> None:
        await store.revoke(args.token_id, actor=f"cli:{_operator()}")

    _with_tokens(args, revoke)
    print(f"revoked token {args.token_id}")
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from cloud.registry import TokenInfo

    async def ls(store: TokenStore) -> list[TokenInfo]:
        return await store.list()

    rows = _with_tokens(args, ls)
    print(f"{'TOKEN':<18} {'ROLE':<16} {'ISSUED':<26} {'STATE':<8} NAME")
    for t in rows:
        state = "revoked" if t.revoked_at else "valid"
        issued = t.created_at.isoformat(timespec="seconds")
        print(f"{t.token_id:<18} {t.role.value:<16} {issued:<26} {state:<8} {t.name}")
    return 0

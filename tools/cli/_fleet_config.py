"""``hplus fleet config …``: review and change a hospital's profile live, through its tunnel.

Every command reaches the hospital's edge the way ``hplus cloud call`` does: through a node's
internal endpoint (with the cluster secret), which forwards to whichever node holds the
hospital's tunnel. ``diff`` and ``apply`` compare the edge's active profile (GetConfig) with
a profile file, validated first by the same loader the edge uses; ``apply`` and ``rollback``
show the parameter change list before they change anything and are guarded by the active
profile's digest (someone else's change in between is refused, not overwritten).
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_BAD_INPUT, CliError, Parser
from tools.cli._cloud import _NODE_HINT, _internal
from tools.cli._node import config_flags, failure, run_on_node

if TYPE_CHECKING:
    from frontend_server.profile import ParameterChange, Profile
    from hplus.hospital.v1 import admin_pb2

__all__ = ["register_config"]

T = TypeVar("T")


def register_config(fleet: argparse._SubParsersAction[Parser]) -> None:
    """Adds ``config diff|apply|rollback|history`` under the ``fleet`` command group."""
    p = fleet.add_parser(
        "config",
        help="review and change a hospital's profile live (diff, apply, rollback, history)",
        description="Review and change a hospital's configuration profile live, through its "
        "tunnel: the parameter change list first, then an apply guarded by the active "
        "profile's digest, validated, health-gated and rolled back by the edge on failure.",
    )
    sub = p.add_subparsers(dest="config_cmd", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    diff = sub.add_parser(
        "diff",
        help="the parameter change list from the hospital's active profile to a file",
        description="Fetch the hospital's active profile (GetConfig) and list every parameter "
        "the profile FILE adds, removes or changes, with old and new values (secrets as "
        "references) and a risk judgement, riskiest first. The file is validated first.",
    )
    diff.add_argument("hospital_id", metavar="HOSPITAL")
    diff.add_argument("--to", dest="file", required=True, type=Path, metavar="FILE")
    _common(diff)
    diff.set_defaults(func=_diff)

    apply = sub.add_parser(
        "apply",
        help="show the change list, then apply a profile file live",
        description="Show the change list from the active profile to FILE, then apply FILE "
        "live (ApplyConfig with the active digest). Without --yes it asks; when stdin is not "
        "a terminal it refuses. Exit 1 when the edge refuses or rolls the change back.",
    )
    apply.add_argument("hospital_id", metavar="HOSPITAL")
    apply.add_argument("file", type=Path, metavar="FILE")
    apply.add_argument("--yes", action="store_true", help="apply without asking")
    apply.add_argument(
        "--key",
        help="idempotency key (default: a new one, printed); re-run with the same key to "
        "get the original result of an apply whose answer was lost",
    )
    _common(apply, formats=False)
    apply.set_defaults(func=_apply)

    rollback = sub.add_parser(
        "rollback",
        help="make an earlier profile from the edge's history active again",
        description="Show the change list from the active profile to revision REVISION of the "
        "edge's history (default: the one active before), then restore it (RollbackConfig, "
        "same guard and health gate as apply).",
    )
    rollback.add_argument("hospital_id", metavar="HOSPITAL")
    rollback.add_argument(
        "--to", dest="revision", type=int, default=0, metavar="REVISION", help="see history"
    )
    rollback.add_argument("--yes", action="store_true", help="roll back without asking")
    rollback.add_argument("--key", help="idempotency key (default: a new one, printed)")
    _common(rollback)
    rollback.set_defaults(func=_rollback)

    history = sub.add_parser(
        "history",
        help="the profiles the edge made active, newest first",
        description="The edge's history of profiles: revision, when, how (start, apply, "
        "rollback), profile id and version, digest, who asked, the idempotency key, and "
        "whether the health gate rolled it back.",
    )
    history.add_argument("hospital_id", metavar="HOSPITAL")
    _common(history)
    history.set_defaults(func=_history)


def _common(p: argparse.ArgumentParser, *, formats: bool = True) -> None:
    p.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline of each call (s)")
    if formats:
        p.add_argument("--format", choices=["text", "json"], default="text")
    config_flags(p)


def _on_edge(
    args: argparse.Namespace,
    what: str,
    action: Callable[[Any, tuple[tuple[str, str], ...]], Awaitable[T]],
) -> T:
    """Runs ``action(stub, metadata)`` against the hospital's edge admin service."""
    from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY
    from hplus.hospital.v1 import admin_pb2_grpc
    from mesh import errors

    target, creds, secret = _internal(args)
    metadata = ((ROUTE_KEY, args.hospital_id), (INTERNAL_AUTH_KEY, secret))

    async def invoke(channel: Any) -> T:
        stub = errors.wrap(admin_pb2_grpc.EdgeAdminServiceStub(channel))
        return await action(stub, metadata)

    try:
        return run_on_node(target, creds, invoke, hint=_NODE_HINT)
    except errors.StatusError as err:
        raise failure(f"{what} on {args.hospital_id} via {target}", err) from None


def _active(args: argparse.Namespace, revision: int = 0) -> admin_pb2.ConfigProfile:
    from hplus.hospital.v1 import admin_pb2

    async def get(stub: Any, metadata: Any) -> admin_pb2.ConfigProfile:
        reply = await stub.GetConfig(
            admin_pb2.GetConfigRequest(revision=revision), metadata=metadata, timeout=args.timeout
        )
        profile: admin_pb2.ConfigProfile = reply.profile
        return profile

    return _on_edge(args, "GetConfig", get)


def _content(profile: admin_pb2.ConfigProfile) -> dict[str, Any]:
    from google.protobuf import json_format

    content: dict[str, Any] = json_format.MessageToDict(profile.content)
    return content


def _load(path: Path) -> Profile:
    from frontend_server.profile import ConfigError, load_profile

    try:
        return load_profile(path)
    except ConfigError as err:
        raise CliError(str(err)) from None


def _show(changes: list[ParameterChange], fmt: str = "text") -> None:
    from frontend_server.profile import format_changes

    if fmt == "json":
        print(json.dumps([c.to_json() for c in changes], indent=2, ensure_ascii=False))
    else:
        print(format_changes(changes))


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            "not applied: stdin is not a terminal to confirm on; review the change list "
            "above, then run again with --yes",
            exit_code=EXIT_BAD_INPUT,
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CliError("not applied: not confirmed", exit_code=EXIT_BAD_INPUT)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:128]


def _key(args: argparse.Namespace) -> str:
    key: str = args.key or f"cli-{uuid.uuid4().hex}"
    if len(key) > 128 or not key.isascii() or not key.isprintable():
        raise CliError("--key: at most 128 printable ASCII characters")
    return key


def _diff(args: argparse.Namespace) -> int:
    from frontend_server.profile import diff_profiles

    candidate = _load(args.file)
    active = _active(args)
    _show(diff_profiles(_content(active), candidate.content), args.format)
    return 0


def _apply(args: argparse.Namespace) -> int:
    from google.protobuf import struct_pb2

    from frontend_server.profile import canonical_json, diff_profiles
    from hplus.hospital.v1 import admin_pb2

    candidate = _load(args.file)
    key = _key(args)
    active = _active(args)
    changes = diff_profiles(_content(active), candidate.content)
    _show(changes)
    if not changes:
        print(f"{args.hospital_id}: the active profile is {active.info.digest}; nothing to apply")
        return 0
    _confirm(args, f"apply these {len(changes)} change(s) to {args.hospital_id}?")
    content = struct_pb2.Struct()
    content.update(json.loads(canonical_json(candidate.content)))
    request = admin_pb2.ApplyConfigRequest(
        idempotency_key=key,
        expected_digest=active.info.digest,
        content=content,
        requested_by=_who(),
    )
    print(f"applying (idempotency key {key}) ...", flush=True)

    async def call(stub: Any, metadata: Any) -> admin_pb2.ApplyConfigResponse:
        reply: admin_pb2.ApplyConfigResponse = await stub.ApplyConfig(
            request, metadata=metadata, timeout=args.timeout
        )
        return reply

    reply = _on_edge(args, "ApplyConfig", call)
    _report(args.hospital_id, reply.profile, reply.applied, reply.reloaded_components)
    return 0


def _report(hospital: str, info: Any, applied: bool, reloaded: Any) -> None:
    if not applied:
        print(f"{hospital}: unchanged, revision {info.revision} ({info.digest}) stays active")
        return
    print(
        f"{hospital}: revision {info.revision} active ({info.digest}, profile "
        f"{info.profile_id} version {info.version}); reloaded: {', '.join(reloaded) or '-'}"
    )


def _revisions(args: argparse.Namespace) -> admin_pb2.ListConfigRevisionsResponse:
    from hplus.hospital.v1 import admin_pb2

    async def ls(stub: Any, metadata: Any) -> admin_pb2.ListConfigRevisionsResponse:
        reply: admin_pb2.ListConfigRevisionsResponse = await stub.ListConfigRevisions(
            admin_pb2.ListConfigRevisionsRequest(), metadata=metadata, timeout=args.timeout
        )
        return reply

    return _on_edge(args, "ListConfigRevisions", ls)


def _rollback(args: argparse.Namespace) -> int:
    from frontend_server.profile import diff_profiles
    from hplus.hospital.v1 import admin_pb2

    if args.revision < 0:
        raise CliError("--to: a revision number from 'hplus fleet config history' (>= 1)")
    key = _key(args)
    history = _revisions(args).revisions
    current = next((r for r in history if r.active), None)
    if current is None:
        raise CliError(f"{args.hospital_id}: the edge reports no active revision", exit_code=1)
    target = args.revision
    if not target:
        older = [
            r.info.revision
            for r in history
            if not r.rolled_back and r.info.revision < current.info.revision
        ]
        if not older:
            raise CliError(
                f"{args.hospital_id}: no earlier revision in the edge's history "
                "(see 'hplus fleet config history')",
                exit_code=1,
            )
        target = older[0]
    active = _active(args)
    wanted = _active(args, target)
    changes = diff_profiles(_content(active), _content(wanted))
    print(f"roll back {args.hospital_id} to revision {target}:")
    _show(changes, args.format)
    _confirm(args, f"restore revision {target} on {args.hospital_id}?")
    request = admin_pb2.RollbackConfigRequest(
        idempotency_key=key,
        expected_digest=active.info.digest,
        revision=target,
        requested_by=_who(),
    )
    print(f"rolling back (idempotency key {key}) ...", flush=True)

    async def call(stub: Any, metadata: Any) -> admin_pb2.RollbackConfigResponse:
        reply: admin_pb2.RollbackConfigResponse = await stub.RollbackConfig(
            request, metadata=metadata, timeout=args.timeout
        )
        return reply

    reply = _on_edge(args, "RollbackConfig", call)
    _report(args.hospital_id, reply.profile, reply.applied, reply.reloaded_components)
    return 0


_SOURCE_NAMES = {1: "start", 2: "apply", 3: "rollback"}


def _history(args: argparse.Namespace) -> int:
    reply = _revisions(args)
    rows: list[dict[str, Any]] = []
    for r in reply.revisions:
        note = ""
        if r.restored_revision:
            note = f"restored r{r.restored_revision}"
        if r.rolled_back:
            note = f"ROLLED BACK: {r.rollback_reason}"
        rows.append(
            {
                "revision": r.info.revision,
                "active": r.active,
                "applied_at": r.info.apply_time.ToDatetime().isoformat(timespec="seconds") + "Z",
                "source": _SOURCE_NAMES.get(r.source, "?"),
                "profile_id": r.info.profile_id,
                "version": r.info.version,
                "digest": r.info.digest,
                "requested_by": r.requested_by,
                "idempotency_key": r.idempotency_key,
                "rolled_back": r.rolled_back,
                "rollback_reason": r.rollback_reason,
                "restored_revision": r.restored_revision,
                "note": note,
            }
        )
    if args.format == "json":
        print(json.dumps({"history_limit": reply.history_limit, "revisions": rows}, indent=2))
        return 0
    print(
        f"{'REV':>5}  {'APPLIED AT':<20}  {'SOURCE':<8}  {'PROFILE':<12}  {'VER':>4}  "
        f"{'DIGEST':<19}  {'BY':<20}  {'KEY':<20}  NOTE"
    )
    for row in rows:
        mark = "*" if row["active"] else " "
        print(
            f"{mark}{row['revision']:>4}  {row['applied_at']:<20}  {row['source']:<8}  "
            f"{row['profile_id']:<12}  {row['version']:>4}  {row['digest'][:19]:<19}  "
            f"{row['requested_by'] or '-':<20}  {row['idempotency_key'] or '-':<20}  "
            f"{row['note']}"
        )
    print(f"(* active; the edge keeps the last {reply.history_limit} revisions)")
    return 0

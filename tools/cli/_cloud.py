"""``hplus cloud …``: run and operate cloud nodes."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_FAILED, CliError, Parser, write_secret_file
from tools.cli._node import channel_credentials, config_flags, failure, run_on_node
from tools.cli._node import load_node_config as _load

if TYPE_CHECKING:
    from cloud.config import NodeConfig

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``cloud`` command group."""
    p = sub.add_parser("cloud", help="run and operate cloud nodes")
    csub = p.add_subparsers(dest="cloud_cmd", metavar="COMMAND", parser_class=Parser)
    csub.required = True

    run = csub.add_parser(
        "run",
        help="run a cloud node (gRPC health checking and reflection; Ctrl-C drains and stops)",
        description="Run a cloud node. Settings come from --config (TOML), then HPLUS_* "
        "environment variables, then flags.",
    )
    config_flags(run)
    run.add_argument(
        "--listen", metavar="HOST:PORT", help="public address (default 127.0.0.1:50051)"
    )
    run.add_argument(
        "--internal-listen",
        metavar="HOST:PORT",
        help="node-to-node address (default 127.0.0.1:50061)",
    )
    run.add_argument(
        "--registry-listen",
        metavar="HOST:PORT",
        help="registry address (default: the public host, next port)",
    )
    run.add_argument(
        "--dashboard-listen",
        metavar="HOST:PORT",
        help="serve the operators' dashboard there ([dashboard] listen; default: not served)",
    )
    run.add_argument("--node-id", help="this node's name (default: the host name)")
    run.add_argument("--redis-url", help="Redis for presence shared by several nodes")
    run.add_argument(
        "--tls",
        choices=["dev", "files", "off"],
        help="dev: development CA under DATA_DIR/tls (default); files: [tls] cert/key/ca; "
        "off: plaintext",
    )
    run.set_defaults(func=_run)

    tun = csub.add_parser(
        "tunnels",
        help="list connected hospitals: edge version, contract release, since, RTT, calls",
        description="Ask a node's internal endpoint (with the cluster secret) which hospitals "
        "are connected, with which credential, and which tunnels were refused because a live "
        "tunnel held their edge id. With Redis presence this covers every node.",
    )
    config_flags(tun)
    tun.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    tun.add_argument("--hospital", help="only this hospital")
    tun.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table (default) or json: {tunnels: [...], conflicts: [...]} with rtt_ms",
    )
    tun.set_defaults(func=_tunnels)

    call = csub.add_parser(
        "call",
        help="call any hospital RPC through the tunnel and print the JSON reply",
        description="Invoke SERVICE/METHOD of a hospital's front-end server through a node's "
        "internal endpoint (which forwards to whichever node holds the hospital's tunnel). "
        "SERVICE may be short (AppointmentService) or full (hplus.hospital.v1.Appointment"
        "Service). The request is proto3 JSON; server-streaming replies print one per line.",
    )
    call.add_argument("hospital_id", metavar="HOSPITAL")
    call.add_argument("method", metavar="SERVICE/METHOD")
    call.add_argument("request", metavar="JSON", nargs="?", default="{}")
    call.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    call.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    config_flags(call)
    call.set_defaults(func=_call)

    cred = csub.add_parser("credentials", help="issue, revoke and list hospital credentials")
    cs = cred.add_subparsers(dest="cred_cmd", metavar="COMMAND", parser_class=Parser)
    cs.required = True
    issue = cs.add_parser(
        "issue",
        help="issue a credential for a hospital's front-end server (shown once)",
        description="Issue a new credential. The token is printed once (or written to --out "
        "with mode 0600); only its hash is stored.",
    )
    issue.add_argument("hospital_id", metavar="HOSPITAL_ID")
    issue.add_argument("--label", default="", help="free text, e.g. which server it is for")
    issue.add_argument("--out", type=Path, help="write the token to this file (mode 0600)")
    config_flags(issue)
    issue.set_defaults(func=_issue)
    revoke = cs.add_parser(
        "revoke",
        help="revoke a credential and close its live tunnels on every node",
        description="Revoke a credential in the fleet database, then ask a node's internal "
        "endpoint to close every live tunnel of it on every node and report how many it "
        "closed. Exit 1 when revoked but not every node confirmed.",
    )
    revoke.add_argument("credential_id", metavar="CREDENTIAL_ID")
    revoke.add_argument("--node", metavar="HOST:PORT", help="internal endpoint (default: config)")
    revoke.add_argument(
        "--wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for every node to confirm (default 5)",
    )
    config_flags(revoke)
    revoke.set_defaults(func=_revoke)
    ls = cs.add_parser("list", help="list credentials (ids, hospitals, state; never secrets)")
    ls.add_argument("--hospital", help="only this hospital's")
    config_flags(ls)
    ls.set_defaults(func=_list)

    from tools.cli import _accounts, _errors, _monitoring, _readstore

    _readstore.register(csub)
    _accounts.register(csub)
    _monitoring.register(csub)
    _errors.register(csub)


def _with_fleet(config: NodeConfig, action: Callable[..., Awaitable[T]]) -> T:
    from cloud.db import DatabaseError, create_engine
    from cloud.fleet import CredentialError, CredentialStore, migrate_fleet

    async def go() -> T:
        engine = create_engine(config.fleet_url)
        try:
            await migrate_fleet(engine)
            return await action(CredentialStore(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except (DatabaseError, CredentialError) as err:
        raise CliError(str(err)) from None


def _issue(args: argparse.Namespace) -> int:
    from cloud.fleet import CredentialStore, IssuedCredential

    config = _load(args)

    async def issue(store: CredentialStore) -> IssuedCredential:
        return await store.issue(args.hospital_id, label=args.label)

    if args.out is not None and args.out.exists():
        raise CliError(f"{args.out} exists; refusing to overwrite a credential file")
    issued = _with_fleet(config, issue)
    if args.out is not None:
        write_secret_file(args.out, issued.token)
        print(f"issued credential {issued.credential_id} for {issued.hospital_id}: {args.out}")
    else:
        print(f"issued credential {issued.credential_id} for {issued.hospital_id}")
        print("token (shown once; give it to the hospital's front-end server):")
        print(issued.token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from google.protobuf import duration_pb2

    from cloud.fleet import CredentialInfo, CredentialStore
    from cloud.gateway import INTERNAL_AUTH_KEY
    from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
    from mesh import errors

    if not 0 <= args.wait <= 60:
        raise CliError(f"--wait: must be within 0..60 seconds, got {args.wait}")

    async def revoke(store: CredentialStore) -> CredentialInfo:
        return await store.revoke(args.credential_id)

    info = _with_fleet(_load(args), revoke)
    print(f"revoked credential {info.credential_id} of {info.hospital_id} at {info.revoked_at}")
    sys.stdout.flush()
    unconfirmed = (
        "revoked in the fleet database, but no node confirmed that its live tunnels are "
        "closed; every running node closes them within its revocation poll (1 s): run this "
        "command again to check"
    )
    try:
        target, creds, secret = _internal(args)
    except CliError as err:
        raise CliError(f"{unconfirmed} ({err.message})", exit_code=EXIT_FAILED) from None

    async def close(channel: Any) -> operations_pb2.CloseCredentialTunnelsResponse:
        wait = duration_pb2.Duration()
        wait.FromNanoseconds(int(args.wait * 1e9))
        stub = errors.wrap(operations_pb2_grpc.OperationsServiceStub(channel))
        reply: operations_pb2.CloseCredentialTunnelsResponse = await stub.CloseCredentialTunnels(
            operations_pb2.CloseCredentialTunnelsRequest(
                credential_id=info.credential_id, wait=wait
            ),
            metadata=((INTERNAL_AUTH_KEY, secret),),
            timeout=args.wait + 10,
        )
        return reply

    try:
        reply = run_on_node(target, creds, close, hint=_NODE_HINT)
    except errors.StatusError as err:
        raise failure(f"{unconfirmed}: node {target}", err) from None
    except CliError as err:
        raise CliError(f"{unconfirmed} ({err.message})", exit_code=EXIT_FAILED) from None
    by_node = ", ".join(f"{n} {c}" for n, c in sorted(reply.closed_by_node.items()))
    print(
        f"closed {reply.closed_tunnels} live tunnel(s) of credential {reply.credential_id}"
        + (f": {by_node}" if by_node else "")
    )
    if reply.remaining:
        left = ", ".join(f"{c.gateway_node} (session {c.session_id})" for c in reply.remaining)
        raise CliError(
            f"{len(reply.remaining)} tunnel(s) of credential {reply.credential_id} still "
            f"listed after {args.wait:g}s on {left}: a node that is down keeps its records "
            "until its presence expires; run this command again to check",
            exit_code=EXIT_FAILED,
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    from cloud.fleet import CredentialInfo, CredentialStore

    async def ls(store: CredentialStore) -> list[CredentialInfo]:
        return await store.list(args.hospital)

    rows = _with_fleet(_load(args), ls)
    print(f"{'CREDENTIAL':<18} {'HOSPITAL':<20} {'ISSUED':<26} {'STATE':<8} LABEL")
    for c in rows:
        state = "revoked" if c.revoked_at else "valid"
        issued = c.created_at.isoformat(timespec="seconds")
        print(f"{c.credential_id:<18} {c.hospital_id:<20} {issued:<26} {state:<8} {c.label}")
    return 0


def _run(args: argparse.Namespace) -> int:
    # Heavy imports (grpc, cryptography) load only for this command.
    from cloud.config import TlsMode
    from cloud.db import DatabaseError
    from cloud.node import CloudNode, serve
    from cloud.payments import PaymentKeyError
    from mesh.tls import TlsError

    config = _load(
        args,
        listen=args.listen,
        internal_listen=args.internal_listen,
        registry_listen=args.registry_listen,
        dashboard_listen=args.dashboard_listen,
        node_id=args.node_id,
        redis_url=args.redis_url,
        tls_mode=TlsMode(args.tls) if args.tls else None,
    )

    def ready(node: CloudNode) -> None:
        host = config.listen.rpartition(":")[0]
        scheme = "plaintext" if node.tls is None else f"TLS, CA {node.tls.ca_cert}"
        print(f"hplus cloud node {config.node_id} listening on {host}:{node.port} ({scheme})")
        print(f"  services: {', '.join(node.service_names)}")
        internal_host = config.internal_listen.rpartition(":")[0]
        print(f"  internal endpoint: {internal_host}:{node.internal_port}")
        registry_host = config.registry_address.rpartition(":")[0]
        print(f"  registry endpoint: {registry_host}:{node.registry_port}")
        if node.dashboard is not None:
            board = node.dashboard
            dash_host = (config.dashboard_listen or "").rpartition(":")[0]
            print(
                f"  dashboard: {board.scheme}://{dash_host}:{board.port}/ "
                f"(password in {board.password_file})"
            )
        if node.payment_notify is not None and node.payments is not None:
            print(f"  payment notifications: {getattr(node.payments, 'notify_url', '')}")
        print("  stop with Ctrl-C (SIGINT) or SIGTERM: in-flight calls drain first")
        sys.stdout.flush()

    try:
        asyncio.run(serve(config, on_ready=ready))
    except (OSError, TlsError, DatabaseError, PaymentKeyError) as err:
        raise CliError(f"cannot start node: {err}") from None
    return 0


_NODE_HINT = "is a cloud node running there? (hplus cloud run; --node HOST:PORT, --data-dir DIR)"


def _internal(args: argparse.Namespace) -> tuple[str, Any, str]:
    """A node's internal endpoint: its address, TLS credentials, and the cluster secret."""
    config = _load(args)
    secret = config.cluster_secret
    secret_file = config.data_dir / "cluster-secret"
    if not secret:
        if not secret_file.exists():
            raise CliError(
                f"no cluster secret: set HPLUS_CLUSTER_SECRET or point --data-dir at the "
                f"node's data directory ({secret_file} does not exist)"
            )
        secret = secret_file.read_text().strip()
    target = args.node or config.internal_listen
    return target, channel_credentials(config), secret


def _tunnels(args: argparse.Namespace) -> int:
    from cloud.gateway import INTERNAL_AUTH_KEY
    from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc
    from mesh import errors

    target, creds, secret = _internal(args)

    async def fetch(
        channel: Any,
    ) -> tuple[list[operations_pb2.HospitalConnection], list[operations_pb2.EdgeConflict]]:
        rows: list[operations_pb2.HospitalConnection] = []
        metadata = ((INTERNAL_AUTH_KEY, secret),)
        stub = errors.wrap(operations_pb2_grpc.OperationsServiceStub(channel))
        token = ""
        while True:
            reply = await stub.ListConnectedHospitals(
                operations_pb2.ListConnectedHospitalsRequest(
                    hospital_id=args.hospital or "", page_size=500, page_token=token
                ),
                metadata=metadata,
                timeout=10,
            )
            rows.extend(reply.connections)
            token = reply.next_page_token
            if not token:
                break
        conflicts = await stub.ListEdgeConflicts(
            operations_pb2.ListEdgeConflictsRequest(hospital_id=args.hospital or ""),
            metadata=metadata,
            timeout=10,
        )
        return rows, list(conflicts.conflicts)

    try:
        rows, conflicts = run_on_node(target, creds, fetch, hint=_NODE_HINT)
    except errors.StatusError as err:
        raise failure(f"node {target}", err) from None
    if args.format == "json":
        _print_tunnels_json(rows, conflicts)
        return 0
    header = (
        "HOSPITAL", "EDGE", "VERSION", "CONTRACT", "NODE", "CONNECTED SINCE", "RTT", "CALLS",
        "CREDENTIAL",
    )  # fmt: skip
    print("{:<16} {:<22} {:<12} {:<9} {:<12} {:<26} {:>9} {:>5}  {}".format(*header))
    for c in rows:
        rtt = f"{c.rtt.ToMicroseconds() / 1000:.1f}ms" if c.HasField("rtt") else "-"
        since = c.connect_time.ToDatetime().isoformat(timespec="seconds") + "Z"
        edge = c.edge_id if c.connection_index == 0 else f"{c.edge_id}#{c.connection_index}"
        print(
            f"{c.hospital_id:<16} {edge:<22} {c.edge_version:<12} {c.contract_release:<9} "
            f"{c.gateway_node:<12} {since:<26} {rtt:>9} {c.in_flight_calls:>5}  "
            f"{c.credential_id or '-'}"
        )
        for warning in c.warnings:
            print(f"  ! {warning}")
    print(f"{len(rows)} tunnel(s), {len({c.hospital_id for c in rows})} hospital(s)")
    for x in conflicts:
        last = x.last_time.ToDatetime().isoformat(timespec="seconds") + "Z"
        held = x.holder_connect_time.ToDatetime().isoformat(timespec="seconds") + "Z"
        print(
            f"! {x.hospital_id}: {x.refused_tunnels} tunnel(s) refused as duplicates of a live "
            f"edge id; last {last}: edge {x.edge_id} connection {x.connection_index} from "
            f"{x.peer} (credential {x.credential_id or '-'}, refused by {x.refused_by_node}), "
            f"held by session {x.holder_session_id} on {x.holder_node} from {x.holder_peer} "
            f"since {held}"
        )
    return 0


def _print_tunnels_json(rows: Sequence[Any], conflicts: Sequence[Any]) -> None:
    from google.protobuf import json_format

    def row(c: Any) -> dict[str, Any]:
        out: dict[str, Any] = json_format.MessageToDict(c, preserving_proto_field_name=True)
        out["rtt_ms"] = round(c.rtt.ToMicroseconds() / 1000, 3) if c.HasField("rtt") else None
        return out

    print(
        json.dumps(
            {
                "tunnels": [row(c) for c in rows],
                "conflicts": [
                    json_format.MessageToDict(x, preserving_proto_field_name=True)
                    for x in conflicts
                ],
            },
            indent=2,
            ensure_ascii=False,
        )
    )


_HOSPITAL_PACKAGE = "hplus.hospital.v1"


def _find_method(name: str) -> Any:
    """The MethodDescriptor of a hospital RPC named ``Service/Method`` (short or full).

    Raises:
        CliError: not ``SERVICE/METHOD``; a service of another package (``hplus.cloud.v1``
            services are the cloud's own, not reachable through a hospital's tunnel); an
            unknown service (the known ones are listed) or method.
    """
    import importlib
    import pkgutil

    from google.protobuf import descriptor_pool

    import hplus.hospital.v1 as hospital

    modules = [
        importlib.import_module(f"{_HOSPITAL_PACKAGE}.{mod.name}")
        for mod in pkgutil.iter_modules(hospital.__path__)
        if mod.name.endswith("_pb2")
    ]
    known = sorted(s for m in modules for s in m.DESCRIPTOR.services_by_name)
    service, sep, method = name.strip("/").partition("/")
    if not sep or not service or not method:
        raise CliError(
            f"method {name!r}: expected SERVICE/METHOD, e.g. EdgeAdminService/GetEdgeInfo"
        )
    pool = descriptor_pool.Default()
    package, _, short = service.rpartition(".")
    if package and package != _HOSPITAL_PACKAGE:
        raise CliError(
            f"{service} is not a hospital service: `hplus cloud call` calls a hospital's "
            f"front-end server through its tunnel ({_HOSPITAL_PACKAGE}: {', '.join(known)})"
        )
    full = f"{_HOSPITAL_PACKAGE}.{short}"
    try:
        svc = pool.FindServiceByName(full)
    except KeyError:
        raise CliError(
            f"unknown service {full!r}; hospital services are: {', '.join(known)}"
        ) from None
    found = svc.methods_by_name.get(method)
    if found is None:
        methods = ", ".join(sorted(svc.methods_by_name))
        raise CliError(f"service {full} has no method {method!r} (it has: {methods})")
    return found


def _request(text: str, request_cls: Any, type_name: str) -> Any:
    """The request message from the command line's JSON (an object, proto3 JSON names)."""
    import json

    from google.protobuf import json_format

    try:
        data = json.loads(text)
    except ValueError as err:
        raise CliError(f"request JSON for {type_name}: {err}") from None
    if not isinstance(data, dict):
        raise CliError(
            f"request JSON for {type_name}: expected an object ({{...}}), got {_json_kind(data)}"
        )
    try:
        return json_format.ParseDict(data, request_cls())
    except json_format.ParseError as err:
        raise CliError(f"request JSON for {type_name}: {err}") from None


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "null"


def _call(args: argparse.Namespace) -> int:
    from google.protobuf import json_format, message_factory

    from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY
    from mesh import errors

    method = _find_method(args.method)
    if method.client_streaming:
        raise CliError(f"{method.full_name} is client-streaming: not callable from the CLI")
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    request = _request(args.request, request_cls, method.input_type.full_name)
    target, creds, secret = _internal(args)
    path = f"/{method.containing_service.full_name}/{method.name}"
    # An operator's call is traced whole (sampled): `hplus trace` shows it afterwards.
    trace_id = secrets.token_hex(16)
    metadata = (
        (ROUTE_KEY, args.hospital_id),
        (INTERNAL_AUTH_KEY, secret),
        ("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),
    )

    def show(message: Any) -> None:
        print(
            json_format.MessageToJson(
                message, indent=2, preserving_proto_field_name=True, ensure_ascii=False
            )
        )

    async def invoke(channel: Any) -> None:
        if method.server_streaming:
            stream = errors.wrap(
                channel.unary_stream(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )
            )
            async for reply in stream(request, metadata=metadata, timeout=args.timeout):
                show(reply)
        else:
            unary = errors.wrap(
                channel.unary_unary(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )
            )
            show(await unary(request, metadata=metadata, timeout=args.timeout))

    try:
        run_on_node(target, creds, invoke, hint=_NODE_HINT)
    except errors.StatusError as err:
        found = failure(f"{method.full_name} on {args.hospital_id} via {target}", err)
        found.message += f"\n  request id: {trace_id} (hplus trace {trace_id})"
        raise found from None
    print(f"request id: {trace_id} (hplus trace {trace_id})", file=sys.stderr)
    return 0

"""``hplus cloud …``: run and operate cloud nodes."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from tools.cli._base import CliError, Parser


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``cloud`` command group."""
    p = sub.add_parser("cloud", help="run and operate cloud nodes")
    csub = p.add_subparsers(dest="cloud_cmd", metavar="COMMAND", parser_class=Parser)
    csub.required = True

    run = csub.add_parser(
        "run",
        help="run a cloud node (gRPC health checking and reflection; Ctrl-C drains and stops)",
        description="Run a cloud node. Settings come from --config (TOML with [node] and "
        "[tls] tables), then HPLUS_LISTEN / HPLUS_DATA_DIR / HPLUS_NODE_ID, then flags.",
    )
    run.add_argument("--config", type=Path, help="TOML config file")
    run.add_argument(
        "--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:50051)"
    )
    run.add_argument("--data-dir", type=Path, help="embedded state directory (default var)")
    run.add_argument("--node-id", help="this node's name (default: the host name)")
    run.add_argument(
        "--tls",
        choices=["dev", "files", "off"],
        help="dev: development CA under DATA_DIR/tls (default); files: [tls] cert/key/ca; "
        "off: plaintext",
    )
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # Heavy imports (grpc, cryptography) load only for this command.
    from cloud.config import NodeConfig, TlsMode
    from cloud.node import CloudNode, serve
    from mesh.config import ConfigError
    from mesh.tls import TlsError

    try:
        config = NodeConfig.load(
            path=args.config,
            env=os.environ,
            overrides={
                "listen": args.listen,
                "data_dir": args.data_dir,
                "node_id": args.node_id,
                "tls_mode": TlsMode(args.tls) if args.tls else None,
            },
        )
    except ConfigError as err:
        raise CliError(str(err)) from None

    def ready(node: CloudNode) -> None:
        host = config.listen.rpartition(":")[0]
        scheme = "plaintext" if node.tls is None else f"TLS, CA {node.tls.ca_cert}"
        print(f"hplus cloud node {config.node_id} listening on {host}:{node.port} ({scheme})")
        print(f"  services: {', '.join(node.service_names)}")
        print("  stop with Ctrl-C (SIGINT) or SIGTERM: in-flight calls drain first")
        sys.stdout.flush()

    try:
        asyncio.run(serve(config, on_ready=ready))
    except (OSError, TlsError) as err:
        raise CliError(f"cannot start node: {err}") from None
    return 0

"""What every command that talks to a cloud node needs: its config, and TLS to reach it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.cli._base import CliError

if TYPE_CHECKING:
    import grpc

    from cloud.config import NodeConfig

__all__ = ["channel_credentials", "config_flags", "load_node_config", "open_channel"]


def config_flags(p: argparse.ArgumentParser) -> None:
    """Add ``--config`` and ``--data-dir``, resolved like ``hplus cloud run`` resolves them."""
    p.add_argument("--config", type=Path, help="TOML config file")
    p.add_argument("--data-dir", type=Path, help="node state directory (default var)")


def load_node_config(args: argparse.Namespace, **overrides: object) -> NodeConfig:
    """The node's configuration from ``--config``, ``HPLUS_*`` and flags.

    Raises:
        CliError: the configuration is invalid (one line naming file, line and key).
    """
    from cloud.config import NodeConfig
    from mesh.config import ConfigError

    try:
        return NodeConfig.load(
            path=args.config, env=os.environ, overrides={"data_dir": args.data_dir, **overrides}
        )
    except ConfigError as err:
        raise CliError(str(err)) from None


def channel_credentials(
    config: NodeConfig, *, plaintext: bool = False
) -> grpc.ChannelCredentials | None:
    """TLS credentials trusting the node's CA; ``None`` for a plaintext node.

    Raises:
        CliError: the CA certificate cannot be read.
    """
    import grpc

    from cloud.config import TlsMode

    if plaintext or config.tls_mode is TlsMode.OFF:
        return None
    ca = config.tls_ca or config.data_dir / "tls" / "ca.pem"
    try:
        return grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    except OSError as err:
        raise CliError(f"{ca}: cannot read CA certificate: {err.strerror}") from None


def open_channel(
    target: str,
    creds: grpc.ChannelCredentials | None,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """A ``grpc.aio`` channel to ``target``, secure when ``creds`` is given."""
    import grpc

    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=options)
    return grpc.aio.insecure_channel(target, options=options)

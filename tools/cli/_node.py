"""What every command that talks to a cloud node needs.

Its config, TLS to reach it, and one way to run calls on it and report their failures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tools.cli._base import EXIT_FAILED, EXIT_UNREACHABLE, CliError

if TYPE_CHECKING:
    import grpc

    from cloud.config import NodeConfig
    from mesh.errors import StatusError

__all__ = [
    "channel_credentials",
    "config_flags",
    "describe",
    "failure",
    "load_node_config",
    "open_channel",
    "precondition_lines",
    "run_on_node",
]

T = TypeVar("T")


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


def run_on_node(
    target: str,
    creds: grpc.ChannelCredentials | None,
    action: Callable[[grpc.aio.Channel], Awaitable[T]],
    *,
    hint: str,
    options: list[tuple[str, Any]] | None = None,
) -> T:
    """Runs ``action(channel)`` on a channel to the node at ``target``.

    ``action`` makes its calls through ``mesh.errors.wrap``-ped stubs, so a failed call
    raises the ``mesh.errors`` tree.

    Args:
        target: the node's address.
        creds: TLS credentials, or ``None`` for plaintext.
        action: what to do with the channel.
        hint: what to check when the node cannot be reached (which flag names it).
        options: channel options.

    Returns:
        What ``action`` returned.

    Raises:
        CliError: the node could not be reached (:data:`EXIT_UNREACHABLE`): the call failed
            UNAVAILABLE or DEADLINE_EXCEEDED before the channel ever connected.
        mesh.errors.StatusError: the node (or the hospital behind it) answered with an
            error status; the caller reports it (see `describe`).
    """
    import grpc

    from mesh import errors

    async def go() -> T:
        async with open_channel(target, creds, options) as channel:
            try:
                return await action(channel)
            except (errors.Unavailable, errors.DeadlineExceeded) as err:
                if channel.get_state() is grpc.ChannelConnectivity.READY:
                    raise  # the node answered: UNAVAILABLE is its verdict, not ours
                raise CliError(
                    f"node {target} is not reachable: {err.message}\n  {hint}",
                    exit_code=EXIT_UNREACHABLE,
                ) from None

    return asyncio.run(go())


def describe(err: StatusError) -> list[str]:
    """The details of a failed call, one indented line each, for people.

    Field violations, the reason with its domain and metadata, precondition violations,
    the resource and the retry delay, in that order.

    Args:
        err: the failure.

    Returns:
        Lines without a trailing newline (empty when the status had no details).
    """
    lines = [f"  {v.field}: {v.description}" for v in err.field_violations]
    if err.reason:
        lines.append(f"  reason: {err.reason}" + (f" ({err.domain})" if err.domain else ""))
        lines.extend(f"  {key}: {value}" for key, value in sorted(err.metadata.items()))
    lines.extend(precondition_lines(err))
    if err.resource is not None:
        what = f"{err.resource.resource_type} {err.resource.resource_name}".strip()
        more = f" ({err.resource.description})" if err.resource.description else ""
        lines.append(f"  resource: {what}{more}")
    if err.retry_delay is not None:
        lines.append(f"  retry after: {err.retry_delay:g}s")
    return lines


def precondition_lines(err: StatusError) -> list[str]:
    """One line per precondition violation: ``  SUBJECT  TYPE: description``.

    The subject comes first so it can be cut out (a push's fingerprints to approve).
    """
    return [f"  {v.subject}  {v.type}: {v.description}" for v in err.precondition_violations]


def failure(where: str, err: StatusError, *, exit_code: int = EXIT_FAILED) -> CliError:
    """The error a command reports for a failed call.

    ``where: CODE: message``, then the details, one per line (`describe`).

    Args:
        where: what was called where, e.g. ``node 127.0.0.1:50061``.
        err: the failure.
        exit_code: the command's exit code for it.

    Returns:
        The error to raise.
    """
    return CliError("\n".join([f"{where}: {err}", *describe(err)]), exit_code=exit_code)

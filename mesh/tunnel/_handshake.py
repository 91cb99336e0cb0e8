"""The handshake of a tunnel: hello and welcome, checked, and what both sides agreed on.

The edge sends ``hello``; the cloud checks every field's size before any other work, picks
the highest common revision, asks its ``accept_hello`` and answers ``welcome`` (or refuses
with ``go_away``). Received messages are copied (`detached`) before they are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import google.rpc.status_pb2 as status_pb2
import grpc
from google.protobuf.message import Message

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._config import DEFAULT_PEER_MAX_CONCURRENT_STREAMS, TunnelConfig
from mesh.tunnel._errors import EndSession, ProtocolViolation, make_status
from mesh.tunnel._limits import clip, hello_problem, welcome_problem
from mesh.tunnel._transport import Transport, TransportError

__all__ = ["Agreement", "HelloCheck", "Refused", "cloud_handshake", "detached", "edge_handshake"]

_log = logging.getLogger("mesh.tunnel")
_M = TypeVar("_M", bound=Message)

HelloCheck = Callable[
    [tunnel_pb2.Hello], Awaitable[status_pb2.Status | None] | status_pb2.Status | None
]
"""Checks an edge's hello; returns a refusal status, or ``None`` to accept it."""


def detached(message: _M) -> _M:
    """A copy of a received message that owns its memory.

    A message parsed from an outer message shares that outer message's memory: keeping a
    reference to one frame would keep the whole outer message (up to its limit) alive.
    """
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


@dataclasses.dataclass
class Agreement:
    """What the handshake settled."""

    revision: int
    peer_window: int
    """Credit per stream the peer grants us."""
    peer_max_message: int
    peer_max_streams: int
    """Streams we may have open toward the peer at once."""
    hello: tunnel_pb2.Hello
    welcome: tunnel_pb2.Welcome
    leftover: list[tunnel_pb2.Frame]
    """Frames that came in the same outer message after the hello/welcome."""


class Refused(EndSession):
    """The cloud refused the tunnel with ``go_away`` (kept for its ``reconnect_after``)."""

    def __init__(self, status: status_pb2.Status, go_away: tunnel_pb2.GoAway) -> None:
        super().__init__(status)
        self.go_away = go_away


def _go_away(status: status_pb2.Status) -> tunnel_pb2.Frame:
    return tunnel_pb2.Frame(stream_id=0, go_away=tunnel_pb2.GoAway(status=status))


async def send_quietly(transport: Transport, frames: list[tunnel_pb2.Frame]) -> None:
    """Sends ``frames`` as one outer message, best effort (the tunnel is ending)."""
    with contextlib.suppress(TransportError, TimeoutError):
        await asyncio.wait_for(transport.send(frames), timeout=2.0)


async def edge_handshake(
    transport: Transport, config: TunnelConfig, hello: tunnel_pb2.Hello
) -> Agreement:
    """Sends ``hello`` (limits filled in from ``config``) and takes the cloud's welcome.

    Raises:
        Refused: The cloud answered with ``go_away``.
        EndSession: The cloud ended the stream.
        ProtocolViolation: The answer breaks the protocol or a welcome field its limit.
    """
    del hello.revisions[:]
    hello.revisions.extend(config.revisions)
    hello.initial_window_bytes = config.initial_window_bytes
    hello.max_message_bytes = config.max_message_bytes
    hello.max_concurrent_streams = config.max_concurrent_streams
    if not hello.capabilities:
        hello.capabilities.extend(config.capabilities)
    await transport.send([tunnel_pb2.Frame(stream_id=0, hello=hello)])
    frames = await transport.recv()
    if frames is None:
        raise EndSession(make_status(grpc.StatusCode.UNAVAILABLE, "cloud closed the handshake"))
    if not frames:
        raise ProtocolViolation("empty outer message")
    first = frames[0]
    kind = first.WhichOneof("kind")
    if first.stream_id != 0 or kind not in ("welcome", "go_away"):
        raise ProtocolViolation(f"expected welcome, got {kind or 'an empty frame'}")
    if kind == "go_away":
        go_away = detached(first.go_away)
        status = status_pb2.Status(
            code=go_away.status.code or grpc.StatusCode.UNAVAILABLE.value[0],
            message=clip(go_away.status.message, config.max_text_bytes),
        )
        raise Refused(status, go_away)
    welcome = first.welcome
    if welcome.revision not in config.revisions:
        raise ProtocolViolation(f"welcome picked revision {welcome.revision}")
    problem = welcome_problem(welcome, config)
    if problem is not None:
        raise ProtocolViolation(problem)
    return Agreement(
        revision=welcome.revision,
        peer_window=welcome.initial_window_bytes,
        peer_max_message=welcome.max_message_bytes,
        peer_max_streams=welcome.max_concurrent_streams or DEFAULT_PEER_MAX_CONCURRENT_STREAMS,
        hello=hello,
        welcome=detached(welcome),
        leftover=list(frames[1:]),
    )


async def cloud_handshake(
    transport: Transport,
    config: TunnelConfig,
    welcome: tunnel_pb2.Welcome,
    accept_hello: HelloCheck | None,
    name: str,
) -> Agreement:
    """Takes the edge's hello, checks it, and sends ``welcome`` (limits filled in).

    Raises:
        EndSession: The hello was refused (``go_away`` sent) or the edge ended the stream.
        ProtocolViolation: The first frame is not a hello.
    """
    frames = await transport.recv()
    if frames is None:
        raise EndSession(make_status(grpc.StatusCode.UNAVAILABLE, "edge closed before hello"))
    if not frames:
        raise ProtocolViolation("empty outer message")
    first = frames[0]
    kind = first.WhichOneof("kind")
    if first.stream_id != 0 or kind != "hello":
        raise ProtocolViolation(f"expected hello, got {kind or 'an empty frame'}")
    hello = first.hello
    # Sizes first, before any work is done with the hello (it reaches logs, the registry
    # check and presence records shown on every node).
    problem = hello_problem(hello, config)
    if problem is not None:
        _log.warning("%s: refused a hello with INVALID_ARGUMENT: %s", name, problem)
        status = make_status(grpc.StatusCode.INVALID_ARGUMENT, problem)
        await send_quietly(transport, [_go_away(status)])
        raise EndSession(status)
    common = set(hello.revisions) & set(config.revisions)
    if not common:
        status = make_status(grpc.StatusCode.UNAVAILABLE, "unsupported revision")
        await send_quietly(transport, [_go_away(status)])
        raise EndSession(status)
    refusal = accept_hello(hello) if accept_hello is not None else None
    if inspect.isawaitable(refusal):
        refusal = await refusal
    if refusal is not None:
        await send_quietly(transport, [_go_away(refusal)])
        raise EndSession(refusal)
    hello = detached(hello)
    welcome.revision = max(common)
    welcome.initial_window_bytes = config.initial_window_bytes
    welcome.max_message_bytes = config.max_message_bytes
    welcome.max_concurrent_streams = config.max_concurrent_streams
    welcome.ping_interval.FromNanoseconds(int(config.ping_interval * 1e9))
    offered = set(config.capabilities)
    del welcome.capabilities[:]
    welcome.capabilities.extend(c for c in hello.capabilities if c in offered)
    await transport.send([tunnel_pb2.Frame(stream_id=0, welcome=welcome)])
    return Agreement(
        revision=welcome.revision,
        peer_window=hello.initial_window_bytes,
        peer_max_message=hello.max_message_bytes,
        peer_max_streams=hello.max_concurrent_streams or DEFAULT_PEER_MAX_CONCURRENT_STREAMS,
        hello=hello,
        welcome=welcome,
        leftover=list(frames[1:]),
    )

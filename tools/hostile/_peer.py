"""A scripted peer that speaks the tunnel's wire contract, from either end of the outer stream.

`Peer` wraps one ``TunnelService.Connect`` stream as raw bytes both ways, so an attack can send
anything (garbage, oversized messages, frames a correct peer never sends) and see exactly what
the target answers. `dial` makes it a hostile edge against a cloud node; `HostileGateway`
serves ``Connect`` and hands each incoming edge to a callback as a `Peer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tls import TlsFiles, load_server_credentials

__all__ = ["HostileGateway", "Peer", "code_name", "dial", "hello", "welcome"]

Frame = tunnel_pb2.Frame
_SERVICE = "hplus.tunnel.v1.TunnelService"
_CONNECT = f"/{_SERVICE}/Connect"
_LIMIT = 64 * 1024 * 1024
"""gRPC message limit of the hostile side: it must be able to send (and take) anything."""


def code_name(value: int) -> str:
    """The name of a numeric gRPC status code (``"UNKNOWN"`` for values gRPC does not have)."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == value), "UNKNOWN")


def hello(hospital_id: str, **fields: Any) -> Frame:
    """A hello as a correct edge sends it, with ``fields`` overriding."""
    values: dict[str, Any] = {
        "revisions": [1, 2],
        "hospital_id": hospital_id,
        "edge_id": "hostile-edge",
        "software_version": "0.0.0",
        "contract_release": "0.0.0",
        "initial_window_bytes": 256 * 1024,
        "max_message_bytes": 4 * 1024 * 1024,
        "services": ["hplus.hospital.v1.EdgeAdminService"],
    }
    values.update(fields)
    return Frame(stream_id=0, hello=tunnel_pb2.Hello(**values))


def welcome(ping_interval: float = 0.5, **fields: Any) -> Frame:
    """A welcome as a correct cloud sends it, with ``fields`` overriding."""
    values: dict[str, Any] = {
        "revision": 2,
        "session_id": "hostile",
        "node_id": "hostile-gateway",
        "epoch": 1,
        "initial_window_bytes": 256 * 1024,
        "max_message_bytes": 4 * 1024 * 1024,
    }
    values.update(fields)
    frame = Frame(stream_id=0, welcome=tunnel_pb2.Welcome(**values))
    if "ping_interval" not in fields:
        frame.welcome.ping_interval.FromNanoseconds(int(ping_interval * 1e9))
    return frame


class Peer:
    """One outer stream seen from the hostile side.

    Reading runs in a background task once `start_reading` is called (an attack that never
    reads simply does not call it): frames go to `frames`, the first ``go_away`` is kept, and
    `closed` is set when the target ends the stream, with `code` and `details` of how.

    Args:
        write: Sends one outer message (raw bytes).
        read: Returns the next outer message (raw bytes), or ``None`` at the end.
        role: ``"edge"`` (we dialled a node) or ``"gateway"`` (an edge dialled us).
        outcome: Returns ``(code, details)`` of the outer call once it has ended.
    """

    def __init__(
        self,
        write: Callable[[bytes], Awaitable[None]],
        read: Callable[[], Awaitable[bytes | None]],
        *,
        role: str,
        outcome: Callable[[], Awaitable[tuple[str, str]]],
    ) -> None:
        self._write = write
        self._read = read
        self._outcome = outcome
        self.role = role
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.go_away: tunnel_pb2.GoAway | None = None
        """The first ``go_away`` the target sent."""
        self.closed = asyncio.Event()
        """Set when the target ended the stream (or the outer call failed)."""
        self.closed_at: float | None = None
        """``time.monotonic()`` when `closed` was set."""
        self.code = ""
        """How the outer call ended (gRPC status code name), once `closed`."""
        self.details = ""
        self.frames_sent = 0
        self.bytes_sent = 0
        self.window_updates: dict[int, int] = {}
        """Credit the target returned, per stream."""
        self.their_window = 0
        """The per-stream credit the target announced in its hello/welcome."""
        self.keepalive = 0.0
        """Seconds between the pings that keep the target from declaring us dead (0: none)."""
        self._reader: asyncio.Task[None] | None = None
        self._noticing: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()  # gRPC takes one write at a time

    # -- sending -----------------------------------------------------------------------------

    async def send(self, frames: Sequence[Frame]) -> bool:
        """Sends ``frames`` as one outer message; False once the stream is gone."""
        if self.role == "edge":
            data = tunnel_pb2.ConnectRequest(frames=frames).SerializeToString()
        else:
            data = tunnel_pb2.ConnectResponse(frames=frames).SerializeToString()
        if await self.send_raw(data):
            self.frames_sent += len(frames)
            return True
        return False

    async def send_raw(self, data: bytes) -> bool:
        """Sends raw bytes as one outer message; False once the stream is gone."""
        if self.closed.is_set():
            return False
        try:
            async with self._write_lock:
                await self._write(data)
        except Exception:  # grpc raises several types once the call is over
            await self._mark_closed()
            return False
        self.bytes_sent += len(data)
        return True

    # -- reading -----------------------------------------------------------------------------

    @property
    def reading(self) -> bool:
        """True once `start_reading` was called."""
        return self._reader is not None

    def start_reading(self) -> None:
        """Reads the target's outer messages in the background from now on."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read_all())

    async def _read_all(self) -> None:
        message_type = (
            tunnel_pb2.ConnectResponse if self.role == "edge" else tunnel_pb2.ConnectRequest
        )
        try:
            while True:
                data = await self._read()
                if data is None:
                    break
                try:
                    frames = message_type.FromString(data).frames
                except DecodeError:
                    continue
                for frame in frames:
                    kind = frame.WhichOneof("kind")
                    if kind == "go_away" and self.go_away is None:
                        self.go_away = frame.go_away
                    elif kind == "window_update":
                        credit = self.window_updates.get(frame.stream_id, 0)
                        self.window_updates[frame.stream_id] = (
                            credit + frame.window_update.increment
                        )
                    self.frames.put_nowait(frame)
        except Exception:  # the outer call failed: its status says how
            pass
        await self._mark_closed()

    def notice_end(self) -> None:
        """The outer call ended (a done callback): record how, in a task the peer owns."""
        task = asyncio.get_running_loop().create_task(self._mark_closed())
        self._noticing.add(task)
        task.add_done_callback(self._noticing.discard)

    async def _mark_closed(self) -> None:
        if self.closed.is_set():
            return
        with contextlib.suppress(Exception):
            self.code, self.details = await asyncio.wait_for(self._outcome(), 10)
        if self.go_away is not None and self.go_away.status.code:
            # A target that sent go_away said why; the outer status may only say CANCELLED.
            self.code = code_name(self.go_away.status.code)
            self.details = self.go_away.status.message
        self.closed_at = time.monotonic()
        self.closed.set()

    async def read_one(self) -> list[Frame] | None:
        """Reads one outer message directly (for attacks that otherwise never read)."""
        data = await self._read()
        if data is None:
            return None
        message_type = (
            tunnel_pb2.ConnectResponse if self.role == "edge" else tunnel_pb2.ConnectRequest
        )
        return list(message_type.FromString(data).frames)

    async def next_frame(self, kind: str, timeout: float = 10.0) -> Frame:  # noqa: ASYNC109
        """The next frame of ``kind`` the target sent (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                getter = asyncio.ensure_future(self.frames.get())
                closed = asyncio.ensure_future(self.closed.wait())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    closed.cancel()
                    frame = getter.result()
                    if frame.WhichOneof("kind") == kind:
                        return frame
                    continue
                getter.cancel()
                if not self.frames.empty():
                    continue
                raise EOFError(f"the target closed the stream ({self.code}) before a {kind}")

    async def wait_closed(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Waits until the target ends the stream; False if it did not within ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        return self.closed.is_set()

    async def stop(self) -> None:
        """Stops reading."""
        tasks = [*self._noticing, *([self._reader] if self._reader is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def dial(
    target: str,
    *,
    credential: str,
    ca: bytes | None,
    timeout: float | None = None,  # noqa: ASYNC109
) -> tuple[Peer, grpc.aio.Channel]:
    """Opens a raw ``Connect`` stream to a node, as an edge would (TLS unless ``ca`` is None).

    Args:
        target: The node's public endpoint, ``HOST:PORT``.
        credential: The hospital credential.
        ca: PEM of the CA to trust (``None``: plaintext).
        timeout: The outer call's deadline.

    Returns:
        The peer and its channel (close it when done).
    """
    options = [
        ("grpc.max_send_message_length", _LIMIT),
        ("grpc.max_receive_message_length", _LIMIT),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    if ca is None:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
        channel = grpc.aio.secure_channel(target, creds, options=options)
    method: grpc.aio.StreamStreamMultiCallable[Any, Any] = channel.stream_stream(
        _CONNECT, request_serializer=None, response_deserializer=None
    )
    call = method(metadata=(("authorization", f"Bearer {credential}"),), timeout=timeout)

    async def read() -> bytes | None:
        message: Any = await call.read()
        return None if message is grpc.aio.EOF else bytes(message)

    async def outcome() -> tuple[str, str]:
        return (await call.code()).name, await call.details() or ""

    peer = Peer(call.write, read, role="edge", outcome=outcome)
    # The call's end is noticed even by an attack that never reads.
    call.add_done_callback(lambda _: peer.notice_end())
    return peer, channel


class HostileGateway:
    """A ``TunnelService`` that hands every edge that connects to ``on_edge`` as a `Peer`.

    Args:
        on_edge: Runs the attack on one connected edge; the stream ends when it returns.
        tls: Server certificate and key (``None``: plaintext).
    """

    def __init__(
        self, on_edge: Callable[[Peer], Awaitable[None]], *, tls: TlsFiles | None = None
    ) -> None:
        self._on_edge = on_edge
        self._tls = tls
        self._server: grpc.aio.Server | None = None
        self.connections = 0
        """Edges that connected so far."""
        self.connected_at: list[float] = []
        """``time.monotonic()`` of each connection."""
        self.connected = asyncio.Event()
        self._attacks: set[asyncio.Task[None]] = set()

    async def start(self, listen: str = "127.0.0.1:0") -> int:
        """Starts listening; returns the port."""
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_send_message_length", _LIMIT),
                ("grpc.max_receive_message_length", _LIMIT),
                # Keep HTTP/2 windows small: an edge we never read from must feel it soon.
                ("grpc.http2.bdp_probe", 0),
            ]
        )
        handler: grpc.RpcMethodHandler[Any, Any] = grpc.stream_stream_rpc_method_handler(
            self._connect
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(_SERVICE, {"Connect": handler})]
        )
        if self._tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, load_server_credentials(self._tls))
        await server.start()
        self._server = server
        return port

    async def _connect(self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.connections += 1
        self.connected_at.append(time.monotonic())
        self.connected.set()
        ended = asyncio.Event()

        async def read() -> bytes | None:
            message = await context.read()
            return None if message is grpc.aio.EOF else bytes(message)

        async def outcome() -> tuple[str, str]:
            return ("CANCELLED", "the edge ended the stream") if ended.is_set() else ("OK", "")

        peer = Peer(context.write, read, role="gateway", outcome=outcome)

        def done(_: Any) -> None:
            ended.set()
            peer.notice_end()  # noticed even by an attack that never reads

        context.add_done_callback(done)  # type: ignore[arg-type]  # the stub wants a class
        # grpc cancels this handler when the edge ends the call; the attack must outlive
        # that to see (and report) how it ended, so it runs in a task of its own.
        task = asyncio.get_running_loop().create_task(self._attack(peer))
        self._attacks.add(task)
        task.add_done_callback(self._attacks.discard)
        await asyncio.shield(task)

    async def _attack(self, peer: Peer) -> None:
        try:
            await self._on_edge(peer)
        finally:
            await peer.stop()

    async def stop(self) -> None:
        """Stops serving and the attacks still running."""
        if self._server is not None:
            await self._server.stop(0)
        for task in list(self._attacks):
            task.cancel()
        await asyncio.gather(*self._attacks, return_exceptions=True)

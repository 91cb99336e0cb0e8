"""The seam between the session engine and the outer stream, and its three adapters.

A transport moves batches of frames: one ``send`` is one outer message, one ``recv`` returns
the frames of one outer message (``None`` once the peer has finished sending).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError

from hplus.tunnel.v1 import tunnel_pb2
from mesh.tunnel._errors import ProtocolViolation

__all__ = [
    "CloudGrpcTransport",
    "EdgeGrpcTransport",
    "MemoryTransport",
    "Transport",
    "TransportError",
    "connect_raw",
    "memory_transport_pair",
]

CONNECT_METHOD = "/hplus.tunnel.v1.TunnelService/Connect"


class TransportError(Exception):
    """The outer stream failed; ``code`` and ``details`` come from the outer call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class Transport(Protocol):
    """What the session engine needs from an outer stream."""

    async def send(self, frames: Sequence[tunnel_pb2.Frame]) -> None:
        """Sends the frames as one outer message.

        Raises:
            TransportError: The outer stream is gone.
        """

    async def recv(self) -> Sequence[tunnel_pb2.Frame] | None:
        """Returns the frames of the next outer message, or ``None`` at the end of the stream.

        Raises:
            TransportError: The outer stream failed.
            ProtocolViolation: The outer message does not decode.
        """

    async def close(self) -> None:
        """Finishes the sending direction (best effort, never raises)."""


_ConnectCall = grpc.aio.StreamStreamCall[tunnel_pb2.ConnectRequest, Any]


def connect_raw(
    channel: grpc.aio.Channel, metadata: Sequence[tuple[str, str]], timeout: float | None = None
) -> _ConnectCall:
    """Opens ``TunnelService.Connect`` with typed requests and raw (undecoded) responses.

    Args:
        channel: The channel to the gateway.
        metadata: Call metadata (the credential).
        timeout: The call's deadline, if any.

    Returns:
        The call, for `EdgeGrpcTransport`.
    """
    method: grpc.aio.StreamStreamMultiCallable[tunnel_pb2.ConnectRequest, Any]
    method = channel.stream_stream(
        CONNECT_METHOD,
        request_serializer=tunnel_pb2.ConnectRequest.SerializeToString,
        response_deserializer=None,
    )
    return method(metadata=tuple(metadata), timeout=timeout)


class EdgeGrpcTransport:
    """Edge side: drives a ``TunnelService.Connect`` call opened on a ``grpc.aio`` channel.

    Open the call without a response deserializer (raw bytes, see `connect_raw`): the
    transport decodes each outer message itself, so bytes that do not decode are a protocol
    violation (INVALID_ARGUMENT) rather than the ``None`` and error log that ``grpc.aio``
    produces for a failed deserializer.

    Args:
        call: The call, or a function that opens it on first use (so the transport can be
            built before the event loop runs).
    """

    def __init__(self, call: _ConnectCall | Callable[[], _ConnectCall]) -> None:
        self._factory = None if isinstance(call, grpc.aio.Call) else call
        self._opened: _ConnectCall | None = call if isinstance(call, grpc.aio.Call) else None

    @property
    def _call(self) -> _ConnectCall:
        if self._opened is None:
            assert self._factory is not None
            self._opened = self._factory()
        return self._opened

    async def send(self, frames: Sequence[tunnel_pb2.Frame]) -> None:
        """See `Transport.send`."""
        try:
            await self._call.write(tunnel_pb2.ConnectRequest(frames=frames))
        except grpc.aio.AioRpcError as err:
            raise TransportError(err.code(), err.details() or "") from err
        except asyncio.CancelledError:
            self._raise_if_call_cancelled()
            raise
        except (grpc.aio.UsageError, asyncio.InvalidStateError) as err:
            raise TransportError(grpc.StatusCode.UNAVAILABLE, "outer call ended") from err

    async def recv(self) -> Sequence[tunnel_pb2.Frame] | None:
        """See `Transport.recv`."""
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as err:
            raise TransportError(err.code(), err.details() or "") from err
        except asyncio.CancelledError:
            self._raise_if_call_cancelled()
            raise
        if message is grpc.aio.EOF:
            return None
        if isinstance(message, bytes):
            try:
                message = tunnel_pb2.ConnectResponse.FromString(message)
            except DecodeError:
                raise ProtocolViolation("an outer message does not decode") from None
        if not isinstance(message, tunnel_pb2.ConnectResponse):
            # grpc.aio hands over None when a typed call's deserializer failed.
            raise ProtocolViolation("an outer message does not decode")
        return message.frames

    def _raise_if_call_cancelled(self) -> None:
        # grpc.aio raises CancelledError from read/write of a locally cancelled call; that
        # is the end of the outer stream, not a cancellation of the task using it.
        task = asyncio.current_task()
        if self._call.cancelled() and (task is None or not task.cancelling()):
            raise TransportError(grpc.StatusCode.CANCELLED, "outer call cancelled") from None

    async def close(self) -> None:
        """See `Transport.close`."""
        with contextlib.suppress(Exception):  # best effort: the call may be over already
            await self._call.done_writing()

    def cancel(self) -> None:
        """Cancels the outer call (ends both directions at once), if it was opened."""
        if self._opened is not None:
            self._opened.cancel()


class CloudGrpcTransport:
    """Cloud side: reads and writes through the context of a ``Connect`` handler."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext[tunnel_pb2.ConnectRequest, tunnel_pb2.ConnectResponse],
    ) -> None:
        self._context = context

    async def send(self, frames: Sequence[tunnel_pb2.Frame]) -> None:
        """See `Transport.send`."""
        try:
            await self._context.write(tunnel_pb2.ConnectResponse(frames=frames))
        except Exception as err:  # grpc raises several private types once the call is gone
            raise TransportError(grpc.StatusCode.UNAVAILABLE, f"outer stream: {err!r}") from err

    async def recv(self) -> Sequence[tunnel_pb2.Frame] | None:
        """See `Transport.recv`."""
        try:
            message: Any = await self._context.read()
        except DecodeError:
            # grpc.aio raises the deserializer's error from read(): the edge sent bytes
            # that are not a ConnectRequest, which is the edge's fault, not the network's.
            raise ProtocolViolation("an outer message does not decode") from None
        except Exception as err:  # a cancelled or broken call
            raise TransportError(grpc.StatusCode.UNAVAILABLE, f"outer stream: {err!r}") from err
        if message is grpc.aio.EOF:
            return None
        assert isinstance(message, tunnel_pb2.ConnectRequest)
        return message.frames

    async def close(self) -> None:
        """See `Transport.close`; the handler's return ends the cloud direction."""


class MemoryTransport:
    """One end of an in-memory transport pair, for unit tests of the engine."""

    def __init__(
        self,
        inbox: asyncio.Queue[list[tunnel_pb2.Frame] | None],
        outbox: asyncio.Queue[list[tunnel_pb2.Frame] | None],
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False
        self.sent_messages = 0
        """Outer messages sent so far (tests count them to check coalescing)."""

    async def send(self, frames: Sequence[tunnel_pb2.Frame]) -> None:
        """See `Transport.send`."""
        if self._closed:
            raise TransportError(grpc.StatusCode.UNAVAILABLE, "memory transport closed")
        self.sent_messages += 1
        copies = []
        for frame in frames:
            copy = tunnel_pb2.Frame()
            copy.CopyFrom(frame)
            copies.append(copy)
        self._outbox.put_nowait(copies)

    async def recv(self) -> Sequence[tunnel_pb2.Frame] | None:
        """See `Transport.recv`."""
        return await self._inbox.get()

    async def close(self) -> None:
        """See `Transport.close`."""
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(None)


def memory_transport_pair() -> tuple[MemoryTransport, MemoryTransport]:
    """Returns two connected in-memory transports: ``(edge_end, cloud_end)``."""
    to_cloud: asyncio.Queue[list[tunnel_pb2.Frame] | None] = asyncio.Queue()
    to_edge: asyncio.Queue[list[tunnel_pb2.Frame] | None] = asyncio.Queue()
    return MemoryTransport(to_edge, to_cloud), MemoryTransport(to_cloud, to_edge)

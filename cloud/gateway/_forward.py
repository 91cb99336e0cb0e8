"""The internal endpoint's forwarder: routed calls, passed into a hospital's tunnel.

A call forwarded by a peer node (it carries ``x-hplus-forwarded-by``) is served from this
node's own tunnels with no discovery and no retries: the entry node decided where to send
it, and if the tunnel is not here any more the answer is UNAVAILABLE at once. A call that
enters here (an operator's ``hplus cloud call``) is routed like any other: a local tunnel,
else the peer that holds one. Calls of every kind travel as a raw byte stream, so
streaming, metadata, trailers, status details, the deadline and cancellation all pass
through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from cloud.errors import CLOUD_ERRORS
from cloud.gateway._router import FORWARDED_KEY, ROUTE_KEY, HospitalRouter, HospitalUnavailable
from cloud.gateway._secret import INTERNAL_AUTH_KEY
from mesh import errors
from mesh.tunnel import TunnelGateway

__all__ = ["ForwardHandler"]

_DROP = {ROUTE_KEY, INTERNAL_AUTH_KEY, FORWARDED_KEY, "grpc-timeout", "user-agent"}
_INTERNAL_PREFIXES = ("/grpc.health.", "/grpc.reflection.", "/hplus.cloud.")


class ForwardHandler(grpc.GenericRpcHandler):
    """Generic handler for the internal server that forwards routed calls into tunnels.

    Args:
        gateway: this node's tunnel gateway.
        router: routes calls that enter here (not forwarded by a peer).
    """

    def __init__(self, gateway: TunnelGateway, router: HospitalRouter) -> None:
        self._gateway = gateway
        self._router = router
        # Errors leave through the cloud's one mapping; an upstream status (details and
        # trailers included) is decoded by the client wrapper and sent on unchanged.
        self._guarded = CLOUD_ERRORS.handler(self._forward, name="ForwardHandler")

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        """Handle any method that is not one of this node's own services."""
        method = handler_call_details.method or ""
        if method.startswith(_INTERNAL_PREFIXES):
            return None

        async def forward(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> AsyncIterator[bytes]:
            # An async generator function itself: grpc.aio runs any other callable as a
            # sync handler in its thread pool.
            async for reply in self._guarded(method, requests, context):
                yield reply

        return grpc.stream_stream_rpc_method_handler(forward)

    async def _forward(
        self,
        method: str,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[bytes, bytes],
    ) -> AsyncIterator[bytes]:
        metadata = list(context.invocation_metadata() or ())
        hospital = next((str(v) for k, v in metadata if k == ROUTE_KEY), "")
        if not hospital:
            raise errors.InvalidArgument(f"missing {ROUTE_KEY} metadata: the hospital to call")
        channel: grpc.aio.Channel
        if any(k == FORWARDED_KEY for k, _ in metadata):
            if not any(s.accepting_calls for s in self._gateway.sessions(hospital)):
                raise HospitalUnavailable(hospital, why="no tunnel on this node")
            channel = self._gateway.channel(hospital)
        else:
            channel = await self._router.channel_for(hospital)
        passed: list[tuple[str, Any]] = [(k, v) for k, v in metadata if k not in _DROP]
        forward: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(method)
        call = forward(requests, timeout=context.time_remaining(), metadata=passed)
        try:
            headers = await call.initial_metadata()
            if headers:
                await context.send_initial_metadata(tuple(headers))
            async for reply in call:
                yield reply
        except grpc.aio.AioRpcError as err:
            raise errors.from_call(err) from err
        finally:
            call.cancel()
        trailers = await call.trailing_metadata()
        if trailers:
            context.set_trailing_metadata(tuple(trailers))

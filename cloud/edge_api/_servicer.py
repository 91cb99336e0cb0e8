"""``EdgeService`` on the public endpoint: authentication, bounds, one handler per RPC."""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import message as pb_message

from cloud.edge_api._auth import EdgeAuth, EdgeCaller
from cloud.edgeconfig import EdgeApiConfig
from cloud.errors import CLOUD_ERRORS, ERROR_DOMAIN
from hplus.cloud.v1 import edge_pb2, edge_pb2_grpc
from mesh import errors

__all__ = ["EdgeApiServicer", "EdgeHandlers", "Handler", "StreamHandler"]

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=pb_message.Message)
Resp = TypeVar("Resp", bound=pb_message.Message)

Handler = Callable[[EdgeCaller, Req], Awaitable[Resp]]
"""Serves one unary RPC for an authenticated hospital."""
StreamHandler = Callable[[EdgeCaller, Req], AsyncIterator[Resp]]
"""Serves one server-streaming RPC for an authenticated hospital."""

Ctx = grpc.aio.ServicerContext


@dataclasses.dataclass(frozen=True, kw_only=True)
class EdgeHandlers:
    """What serves each RPC of ``EdgeService``; ``None`` answers UNIMPLEMENTED.

    The servicer has authenticated the hospital, charged its rate, checked the edge id and
    the request's size before a handler runs; a handler raises tree errors.
    """

    report_task_results: (
        Handler[edge_pb2.ReportTaskResultsRequest, edge_pb2.ReportTaskResultsResponse] | None
    ) = None
    """ReportTaskResults (normally `TaskResultsHandler.handle`)."""
    report_health: Handler[edge_pb2.ReportHealthRequest, edge_pb2.ReportHealthResponse] | None = (
        None
    )
    """ReportHealth (normally the node's health monitor)."""
    get_upgrade_manifest: (
        Handler[edge_pb2.GetUpgradeManifestRequest, edge_pb2.GetUpgradeManifestResponse] | None
    ) = None
    """GetUpgradeManifest (the fleet upgrade service, when there is one)."""
    download_upgrade: (
        StreamHandler[edge_pb2.DownloadUpgradeRequest, edge_pb2.DownloadUpgradeResponse] | None
    ) = None
    """DownloadUpgrade (the fleet upgrade service, when there is one)."""


def _unimplemented(method: str) -> errors.Unimplemented:
    return errors.Unimplemented(
        f"EdgeService.{method} is not served by this node yet (fleet upgrades are not "
        "rolled out); the edge keeps its version and asks again later",
        reason="EDGE_METHOD_NOT_SERVED",
        domain=ERROR_DOMAIN,
    )


@CLOUD_ERRORS.servicer
class EdgeApiServicer(edge_pb2_grpc.EdgeServiceServicer):
    """``hplus.cloud.v1.EdgeService`` (see the package docstring).

    Args:
        auth: authenticates calls and charges the hospital's rate.
        handlers: what serves each RPC.
        config: bounds.
    """

    def __init__(self, auth: EdgeAuth, handlers: EdgeHandlers, config: EdgeApiConfig) -> None:
        self._auth = auth
        self._handlers = handlers
        self._config = config
        self._recent: collections.OrderedDict[tuple[str, str, str], bytes] = (
            collections.OrderedDict()
        )

    async def _caller(self, context: Ctx[Req, Resp], request: Req, edge_id: str) -> EdgeCaller:
        metadata = [(k, v) for k, v in context.invocation_metadata() or ()]
        caller = await self._auth.caller(metadata, edge_id)
        size = request.ByteSize()
        if size > self._config.max_request_bytes:
            log.warning(
                "edge api: hospital %s sent a %d-byte %s (limit %d)",
                caller.hospital_id,
                size,
                type(request).__name__,
                self._config.max_request_bytes,
            )
            raise errors.ResourceExhausted(
                f"request of {size} bytes exceeds the limit of "
                f"{self._config.max_request_bytes} bytes",
                reason="EDGE_REQUEST_TOO_LARGE",
                domain=ERROR_DOMAIN,
            )
        return caller

    async def _idempotent(
        self,
        caller: EdgeCaller,
        method: str,
        request_id: str,
        response_type: type[Resp],
        run: Callable[[], Awaitable[Resp]],
    ) -> Resp:
        """Answers a repeated ``request_id`` with the first answer (an LRU per node)."""
        if not request_id:
            return await run()
        if len(request_id) > 64:
            raise errors.InvalidArgument(
                "request_id is too long",
                domain=ERROR_DOMAIN,
                field_violations=[("request_id", "at most 64 characters (a UUID)")],
            )
        key = (caller.hospital_id, method, request_id)
        known = self._recent.get(key)
        if known is not None:
            self._recent.move_to_end(key)
            return response_type.FromString(known)
        response = await run()
        self._recent[key] = response.SerializeToString()
        while len(self._recent) > self._config.recent_requests:
            self._recent.popitem(last=False)
        return response

    async def ReportTaskResults(
        self,
        request: edge_pb2.ReportTaskResultsRequest,
        context: Ctx[edge_pb2.ReportTaskResultsRequest, edge_pb2.ReportTaskResultsResponse],
    ) -> edge_pb2.ReportTaskResultsResponse:
        """Stores pushed task results (see `TaskResultsHandler`)."""
        caller = await self._caller(context, request, request.edge_id)
        handler = self._handlers.report_task_results
        if handler is None:
            raise _unimplemented("ReportTaskResults")
        return await self._idempotent(
            caller,
            "ReportTaskResults",
            request.request_id,
            edge_pb2.ReportTaskResultsResponse,
            lambda: handler(caller, request),
        )

    async def ReportHealth(
        self,
        request: edge_pb2.ReportHealthRequest,
        context: Ctx[edge_pb2.ReportHealthRequest, edge_pb2.ReportHealthResponse],
    ) -> edge_pb2.ReportHealthResponse:
        """Stores an edge's health report and evaluates its alerts."""
        caller = await self._caller(context, request, request.edge_id)
        handler = self._handlers.report_health
        if handler is None:
            raise _unimplemented("ReportHealth")
        return await self._idempotent(
            caller,
            "ReportHealth",
            request.request_id,
            edge_pb2.ReportHealthResponse,
            lambda: handler(caller, request),
        )

    async def GetUpgradeManifest(
        self,
        request: edge_pb2.GetUpgradeManifestRequest,
        context: Ctx[edge_pb2.GetUpgradeManifestRequest, edge_pb2.GetUpgradeManifestResponse],
    ) -> edge_pb2.GetUpgradeManifestResponse:
        """The upgrade an edge should install (served by the fleet upgrade handler)."""
        caller = await self._caller(context, request, request.edge_id)
        handler = self._handlers.get_upgrade_manifest
        if handler is None:
            raise _unimplemented("GetUpgradeManifest")
        return await handler(caller, request)

    async def DownloadUpgrade(
        self,
        request: edge_pb2.DownloadUpgradeRequest,
        context: Ctx[edge_pb2.DownloadUpgradeRequest, edge_pb2.DownloadUpgradeResponse],
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        """An upgrade package's bytes (served by the fleet upgrade handler)."""
        caller = await self._caller(context, request, request.edge_id)
        handler = self._handlers.download_upgrade
        if handler is None:
            raise _unimplemented("DownloadUpgrade")
        async for chunk in handler(caller, request):
            yield chunk

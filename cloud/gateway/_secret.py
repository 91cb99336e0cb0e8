"""The cluster secret and the interceptor that guards the internal endpoint with it."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from cloud.errors import CLOUD_ERRORS
from mesh import errors

__all__ = ["INTERNAL_AUTH_KEY", "InternalAuthInterceptor", "load_or_create_secret"]

INTERNAL_AUTH_KEY = "x-hplus-cluster-auth"
"""Metadata key carrying the cluster secret on node-to-node and operator calls."""


def load_or_create_secret(configured: str | None, data_dir: Path) -> str:
    """The cluster secret: the configured one, or one kept in ``<data_dir>/cluster-secret``.

    A node that shares no data directory with its peers must be given the secret (env
    ``HPLUS_CLUSTER_SECRET``); a development node makes one on first run.
    """
    if configured:
        return configured
    path = data_dir / "cluster-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node on the same data dir won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def _deny(message: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        raise errors.Unauthenticated(message)

    return grpc.unary_unary_rpc_method_handler(
        CLOUD_ERRORS.handler(deny, name="InternalAuthInterceptor")
    )


class InternalAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call to the internal endpoint that lacks the cluster secret.

    Health checks stay open so orchestrators can probe the port.

    Args:
        secret: the cluster secret.
    """

    _OPEN = ("/grpc.health.v1.Health/",)

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Pass the call on when it carries the secret, else answer UNAUTHENTICATED."""
        method = handler_call_details.method or ""
        if method.startswith(self._OPEN):
            return await continuation(handler_call_details)
        presented = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == INTERNAL_AUTH_KEY:
                presented = value.encode() if isinstance(value, str) else value
        if not hmac.compare_digest(presented, self._secret):
            return _deny("internal endpoint: missing or bad cluster credential")
        return await continuation(handler_call_details)

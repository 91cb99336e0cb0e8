"""The ``/metrics`` HTTP endpoint of a process (Prometheus text format).

On a loopback address it is open (the scraper runs on the host); on any other address a
bearer token is required (``Authorization: Bearer <token>``), read from a file the
operator provides (``metrics_token_file``), compared in constant time. Without such a file
a non-loopback ``metrics_listen`` is refused at start, so metrics are never exposed
unauthenticated by accident.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mesh.logs import PeerLimitedLog
from mesh.net import parse_hostport
from mesh.observability._metrics import registry
from mesh.observability_config import is_loopback

__all__ = ["MetricsServer"]

log = logging.getLogger(__name__)


class MetricsServer:
    """Serves ``GET /metrics``; authenticated unless bound to loopback.

    Args:
        listen: ``HOST:PORT`` (port 0: any free port; see `port`).
        token_file: file holding the bearer token (required off loopback).

    Raises:
        ValueError: a non-loopback address without a token file, or an empty token.
    """

    def __init__(self, listen: str, *, token_file: Path | None = None) -> None:
        self.host, self._port = parse_hostport(listen)
        self._token: bytes | None = None
        if token_file is not None:
            token = token_file.read_text(encoding="utf-8").strip()
            if not token:
                raise ValueError(f"metrics_token_file: {token_file} is empty")
            self._token = token.encode()
        elif not is_loopback(self.host):
            raise ValueError(
                f"metrics_listen: {listen} is not a loopback address: set metrics_token_file "
                "(scrapers then send Authorization: Bearer <token>)"
            )
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._refusals = PeerLimitedLog(log)

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._token is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self._token
            ):
                self._refusals.warning(
                    request.remote or "-",
                    "metrics scrape refused from %s: missing or wrong bearer token",
                    request.remote,
                )
                return web.Response(
                    status=401, text="unauthorized\n", headers={"WWW-Authenticate": "Bearer"}
                )
        body = generate_latest(registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        """Binds and serves."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        """Stops serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

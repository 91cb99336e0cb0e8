"""The cloud node's composition root: one ``serve(config)`` builds and runs everything.

Today the node hosts gRPC health checking and server reflection; each later service
(gateway, registry, patient API, operations) is built here from the one ``NodeConfig`` and
registered with its generated ``add_*_to_server``. A service that is not implemented is not
registered, so reflection lists only what really answers.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from types import TracebackType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud.config import NodeConfig, TlsMode, parse_listen
from mesh.tls import TlsFiles, ensure_dev_pki, load_server_credentials

__all__ = ["CloudNode", "serve"]

log = logging.getLogger(__name__)


class CloudNode:
    """A running cloud node: a ``grpc.aio`` server and the services registered on it.

    Use as ``async with CloudNode(config) as node: await node.wait()``; ``shutdown()``
    drains in-flight calls for ``config.grace_seconds``.

    Args:
        config: the node's configuration.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.port: int | None = None
        self.tls: TlsFiles | None = None
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._service_names: list[str] = []
        self._stopped = asyncio.Event()

    @property
    def service_names(self) -> list[str]:
        """Full names of the services this node serves (health and reflection included)."""
        return list(self._service_names)

    async def start(self) -> None:
        """Bind the listening port and start serving.

        Raises:
            OSError: the address cannot be bound.
            mesh.tls.TlsError: TLS material is missing or malformed.
        """
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self._service_names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        self._service_names.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(self._service_names, server)

        host, port = parse_listen(cfg.listen)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if cfg.tls_mode is TlsMode.DEV:
            self.tls = ensure_dev_pki(cfg.data_dir / "tls")
        elif cfg.tls_mode is TlsMode.FILES:
            # NodeConfig has checked that all three are set in this mode.
            assert cfg.tls_cert is not None
            assert cfg.tls_key is not None
            assert cfg.tls_ca is not None
            self.tls = TlsFiles(
                ca_cert=cfg.tls_ca, server_cert=cfg.tls_cert, server_key=cfg.tls_key
            )
        try:
            if self.tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, load_server_credentials(self.tls))
        except RuntimeError as err:  # grpc reports a failed bind as RuntimeError
            raise OSError(f"cannot listen on {cfg.listen}: {err}") from None
        if bound == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        self.port = bound
        await server.start()
        self._server = server
        for name in ["", *self._service_names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("node %s listening on %s:%d", cfg.node_id, host, bound)

    async def shutdown(self) -> None:
        """Stop taking calls, let in-flight ones finish within the grace period, then stop."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await self._health.enter_graceful_shutdown()
        await server.stop(self.config.grace_seconds)
        self._stopped.set()
        log.info("node %s stopped", self.config.node_id)

    async def wait(self) -> None:
        """Return once the node has shut down."""
        await self._stopped.wait()

    async def __aenter__(self) -> CloudNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()


async def serve(config: NodeConfig, *, on_ready: Callable[[CloudNode], None] | None = None) -> None:
    """Run a cloud node until SIGINT or SIGTERM, then shut it down gracefully.

    Args:
        config: the node's configuration.
        on_ready: called once the node listens (the CLI prints where to look).
    """
    loop = asyncio.get_running_loop()
    async with CloudNode(config) as node:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            if on_ready is not None:
                on_ready(node)
            await stop.wait()
            log.info("signal received: draining for up to %.0fs", config.grace_seconds)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

"""Builds the payment channel client and its notification endpoint from ``[payments]``."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from cloud.config import PaymentsConfig
from cloud.payments._channel import WechatPayChannel
from cloud.payments._keys import load_keys
from cloud.payments._notify import NOTIFY_PATH, NotificationVerifier, NotifyServer
from mesh.net import parse_hostport
from mesh.retry import RetryPolicy
from mesh.tls import TlsFiles

__all__ = ["open_payments"]


@contextlib.asynccontextmanager
async def open_payments(
    config: PaymentsConfig, *, tls: TlsFiles | None
) -> AsyncIterator[tuple[WechatPayChannel, NotifyServer]]:
    """The channel client and its running notification endpoint, closed on exit.

    The endpoint serves HTTPS with the node's certificate (``tls``), unless the node's TLS
    is off or ``notify_plaintext`` is set (both allowed on loopback only, checked by the
    config).

    Raises:
        cloud.payments.PaymentKeyError: a key file is missing, too open or malformed.
        OSError: ``notify_listen`` cannot be bound.
    """
    keys = load_keys(config.merchant_key_file, config.platform_public_key_file)  # type: ignore[arg-type]
    context: ssl.SSLContext | None = None
    if tls is not None and not config.notify_plaintext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.server_cert, tls.server_key)
    host, port = parse_hostport(config.notify_listen)
    channel = WechatPayChannel(
        base_url=config.channel_url,
        merchant_id=config.merchant_id,
        app_id=config.app_id,
        keys=keys,
        notify_url=config.notify_url,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        retry=RetryPolicy(initial=0.1, maximum=2.0, deadline=config.retry_deadline),
    )
    server = NotifyServer(
        NotificationVerifier(keys, window=config.notify_window),
        channel.dispatch,
        host=host,
        port=port,
        ssl_context=context,
        max_body=config.notify_max_body,
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(channel.close)
        await server.start()
        stack.push_async_callback(server.close)
        if not config.notify_url:
            shown = f"[{host}]" if ":" in host else host
            channel.notify_url = f"{server.scheme}://{shown}:{server.port}{NOTIFY_PATH}"
        yield channel, server

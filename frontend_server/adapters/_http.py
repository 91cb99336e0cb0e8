"""One HTTP client per adapter (REST and SOAP): deadlines and transport error mapping."""

from __future__ import annotations

import errno
import types
from collections.abc import Mapping
from typing import Any

import aiohttp

from frontend_server.adapters._errors import HisTimeout, HisUnavailable
from frontend_server.adapters._settings import DialectSettings
from mesh.observability import current_traceparent

__all__ = ["HttpAnswer", "HttpTransport"]


class HttpAnswer:
    """Status, content type and body of one HTTP answer."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body


class HttpTransport:
    """Sends one request with a whole-call deadline and maps transport failures.

    The ``aiohttp.ClientSession`` is created on first use (it needs the running loop) and
    closed by :meth:`aclose`.

    Args:
        settings: The adapter's settings.
    """

    def __init__(self, settings: DialectSettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                headers=dict(self._settings.http_headers),
                trace_configs=[_connection_trace()],
            )
        return self._session

    async def aclose(self) -> None:
        """Closes the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        dialect: str,
        write: bool,
        deadline: float,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Sends one request and reads the whole answer within ``deadline`` seconds.

        Args:
            method: HTTP method.
            url: Full URL.
            operation: Operation name, for errors.
            dialect: Dialect, for errors.
            write: Whether the operation changes the HIS.
            deadline: Seconds for the whole call.
            params: Query parameters.
            json: JSON body.
            data: Raw body.
            headers: Extra headers.

        Returns:
            The answer (any status).

        Raises:
            HisUnavailable: The connection could not be made (nothing was sent), or a read
                lost its connection.
            HisTimeout: No complete answer within the deadline, or a write's connection
                dropped after sending (the write may have happened).
        """
        # The call's W3C trace context, so the HIS's own logs can be joined with ours.
        traceparent = current_traceparent()
        if traceparent:
            headers = {**(headers or {}), "traceparent": traceparent}
        timeout = aiohttp.ClientTimeout(
            total=deadline, sock_connect=min(self._settings.connect_timeout_seconds, deadline)
        )
        progress = _Progress()
        try:
            async with self._client().request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers=headers,
                timeout=timeout,
                trace_request_ctx=progress,
            ) as response:
                body = await response.read()
                return HttpAnswer(response.status, response.content_type, body)
        except aiohttp.ConnectionTimeoutError as err:
            raise HisUnavailable(
                f"{operation}: could not connect within {self._settings.connect_timeout_seconds}s",
                operation=operation,
                dialect=dialect,
                cause="connect_timeout",
            ) from err
        except TimeoutError as err:
            if not progress.connected:
                # The whole-call deadline passed before any connection was made (it can
                # end before the connect timeout does): nothing was sent, and the HIS host
                # never answered at TCP level.
                raise HisUnavailable(
                    f"{operation}: could not connect within {deadline}s",
                    operation=operation,
                    dialect=dialect,
                    cause="connect_timeout",
                ) from err
            raise HisTimeout(
                f"{operation}: no answer within {deadline}s"
                + (" (the write may have happened)" if write else ""),
                operation=operation,
                dialect=dialect,
                write=write,
                cause="read_timeout",
            ) from err
        except aiohttp.ClientConnectorError as err:
            raise HisUnavailable(
                f"{operation}: connection failed ({type(err).__name__})",
                operation=operation,
                dialect=dialect,
                cause=connect_cause(err),
            ) from err
        except (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
            aiohttp.ClientPayloadError,
        ) as err:
            if write:
                raise HisTimeout(
                    f"{operation}: connection lost before the answer (the write may have happened)",
                    operation=operation,
                    dialect=dialect,
                    write=True,
                    cause="connection_lost",
                ) from err
            raise HisUnavailable(
                f"{operation}: connection lost ({type(err).__name__})",
                operation=operation,
                dialect=dialect,
                cause="connection_lost",
            ) from err
        except aiohttp.ClientError as err:
            raise HisUnavailable(
                f"{operation}: HTTP client error ({type(err).__name__})",
                operation=operation,
                dialect=dialect,
                cause="connection_lost",
            ) from err


_UNREACHABLE = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
)


def connect_cause(err: aiohttp.ClientConnectorError) -> str:
    """The cause of a failed connect.

    ``refused`` when the HIS host answered with a reset (nothing listens: the HIS is down),
    ``unreachable`` for no route, no name or no answer (the hospital's network).

    Args:
        err: aiohttp's connect error.

    Returns:
        A cause of ``CAUSES``.
    """
    if isinstance(err, aiohttp.ClientConnectorDNSError):
        return "unreachable"
    number = err.os_error.errno if err.os_error is not None else None
    if number == errno.ECONNREFUSED:
        return "refused"
    if number in _UNREACHABLE:
        return "unreachable"
    return "refused" if isinstance(err.os_error, ConnectionRefusedError) else "unreachable"


class _Progress:
    """How far one request got (set by `_connection_trace`)."""

    __slots__ = ("connected",)

    def __init__(self) -> None:
        self.connected = False


def _connection_trace() -> aiohttp.TraceConfig:
    """Marks a request's `_Progress` once it has a connection (new or reused)."""

    async def connected(
        session: aiohttp.ClientSession, context: types.SimpleNamespace, params: object
    ) -> None:
        progress = context.trace_request_ctx
        if isinstance(progress, _Progress):
            progress.connected = True

    config = aiohttp.TraceConfig()
    config.on_connection_create_end.append(connected)
    config.on_connection_reuseconn.append(connected)
    return config

"""Server side: the one place an exception becomes the status a caller sees.

An `ErrorMapping` is made once per side (the edge with its table of HIS, rule, ledger and
queue errors; the cloud, whose domain errors subclass the tree) and wraps every servicer
with `ErrorMapping.servicer`, or a generic handler with `ErrorMapping.handler`. The wrapped
methods work on a ``grpc.aio`` server and on the tunnel's ``TunnelServer`` alike, because
both hand them a ``ServicerContext`` whose ``abort`` ends the call with trailers.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from grpc_status import rpc_status

from mesh.errors._tree import Internal, StatusError

__all__ = ["CORRELATION_KEY", "INTERNAL_REASON", "ErrorMapping", "Translate", "mapping_of"]

Translate = Callable[[Exception], "StatusError | None"]
"""A side's table: a domain exception → the tree error it is reported as, or ``None`` when
the exception is not a domain error (then it is a bug: INTERNAL)."""

CORRELATION_KEY = "correlation_id"
"""``ErrorInfo.metadata`` key of an INTERNAL error's correlation id (also in the log line)."""
INTERNAL_REASON = "INTERNAL_ERROR"
"""``ErrorInfo.reason`` of an INTERNAL error (a bug on the serving side)."""

_MAPPED = "__hplus_error_mapping__"

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=type)


class ErrorMapping:
    """How one side turns exceptions into statuses: its ``ErrorInfo`` domain and its table.

    * a `StatusError` (raised by a servicer, or a domain error that subclasses the tree)
      is sent as it is, with its details;
    * any other exception goes through ``translate``; what the table does not know is a
      bug: logged once, with its traceback and a correlation id, and answered INTERNAL
      with that id in the message and in ``ErrorInfo.metadata["correlation_id"]`` — never
      the exception's text.

    Args:
        domain: ``ErrorInfo.domain`` for errors that do not name their own.
        translate: the side's table of domain errors (see `Translate`).
        logger: where bugs are logged.
    """

    def __init__(
        self,
        *,
        domain: str,
        translate: Translate | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.domain = domain
        self._translate = translate
        self._log = logger or logging.getLogger("mesh.errors")

    def error_of(self, exc: Exception, method: str) -> StatusError:
        """The tree error ``exc`` is reported as (logs it when it is a bug).

        Args:
            exc: what the servicer raised.
            method: the RPC, for the log line.

        Returns:
            The error to send.
        """
        if isinstance(exc, StatusError):
            return exc
        if self._translate is not None:
            found = self._translate(exc)
            if found is not None:
                return found
        correlation = uuid.uuid4().hex[:16]
        self._log.error("%s failed (correlation id %s)", method, correlation, exc_info=exc)
        return Internal(
            f"internal error (correlation id {correlation})",
            reason=INTERNAL_REASON,
            metadata={CORRELATION_KEY: correlation},
        )

    async def abort(
        self, context: grpc.aio.ServicerContext[Any, Any], exc: Exception, method: str
    ) -> NoReturn:
        """Ends the call with the status of ``exc``, details in ``grpc-status-details-bin``.

        Args:
            context: the call.
            exc: what the servicer raised.
            method: the RPC, for the log line of a bug.
        """
        error = self.error_of(exc, method)
        status = rpc_status.to_status(error.to_status(domain=self.domain))
        trailers = (*error.trailers, *status.trailing_metadata)
        # The one place a servicer's exception becomes a status (see the module docstring).
        await context.abort(status.code, status.details, trailers)
        raise AssertionError("unreachable: abort raises")

    def handler(self, fn: F, *, name: str = "") -> F:
        """Wraps one handler (``async def`` or async generator) so its errors leave here.

        The handler is called with ``(request, context)`` or ``(self, request, context)``;
        the context is the last argument.

        Args:
            fn: the handler.
            name: the RPC's name for log lines (default: the function's qualified name).

        Returns:
            The wrapped handler.

        Raises:
            TypeError: ``fn`` is not ``async``: a plain ``def`` runs in grpc's thread pool.
        """
        method = name or fn.__qualname__
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def stream(*args: Any) -> AsyncIterator[Any]:
                try:
                    async for item in fn(*args):
                        yield item
                except Exception as exc:
                    if _finished(args[-1], exc):
                        raise
                    await self.abort(args[-1], exc, method)

            wrapped: Any = stream
        elif inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def unary(*args: Any) -> Any:
                try:
                    return await fn(*args)
                except Exception as exc:
                    if _finished(args[-1], exc):
                        raise
                    await self.abort(args[-1], exc, method)

            wrapped = unary
        else:
            raise TypeError(f"{method}: servicer methods must be async (async def)")
        setattr(wrapped, _MAPPED, self)
        return cast(F, wrapped)

    def servicer(self, cls: S) -> S:
        """Class decorator: wraps every RPC method ``cls`` implements.

        The RPC methods are those of the generated ``*Servicer`` base (a class of a
        ``*_pb2_grpc`` module) that ``cls`` overrides; the base's own methods (which answer
        UNIMPLEMENTED) are left alone.

        Args:
            cls: a servicer class.

        Returns:
            ``cls``, with its RPC methods wrapped.

        Raises:
            TypeError: ``cls`` has no generated servicer base, or an RPC method is not async.
        """
        bases = [b for b in cls.__mro__[1:] if b.__module__.endswith("_pb2_grpc")]
        if not bases:
            raise TypeError(f"{cls.__qualname__} does not derive from a generated servicer")
        for base in bases:
            for name, default in vars(base).items():
                if name.startswith("_") or not callable(default):
                    continue
                impl = getattr(cls, name)
                if impl is default or getattr(impl, _MAPPED, None) is self:
                    continue
                service = base.__name__.removesuffix("Servicer")
                setattr(cls, name, self.handler(impl, name=f"{service}.{name}"))
        setattr(cls, _MAPPED, self)
        return cls


def mapping_of(target: Any) -> ErrorMapping | None:
    """The `ErrorMapping` a servicer class or handler was wrapped with, if any."""
    found = getattr(target, _MAPPED, None)
    return found if isinstance(found, ErrorMapping) else None


def _finished(context: Any, exc: Exception) -> bool:
    """Whether the call already ended or aborted: then ``exc`` is not ours to report.

    ``abort`` raises (grpc's ``AbortError``, the tunnel's subclass of it) and must pass
    through; so must an error raised because the transport already closed the call with a
    status of its own (a response too large to send, a caller that went away).
    """
    if isinstance(exc, grpc.aio.AbortError):
        return True
    try:
        code = context.code()
    except Exception:  # a context that cannot tell: treat the error as ours
        return False
    return bool(context.cancelled()) or code not in (None, grpc.StatusCode.OK)

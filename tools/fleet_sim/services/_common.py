"""What the simulated services share: statuses with details, and offset paging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from frontend_server.services import ERROR_DOMAIN, abort_with

__all__ = ["Ctx", "page", "reject"]

Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


async def reject(
    context: Ctx,
    code: str,
    message: str,
    *,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
) -> NoReturn:
    """Ends the call with ``code`` and the contract's details (ErrorInfo, BadRequest).

    Args:
        context: the call.
        code: ``google.rpc.Code`` name.
        message: the status message (never patient data).
        reason: ``ErrorInfo.reason`` ("" for none).
        violations: ``BadRequest`` field violations.
    """
    details: list[any_pb2.Any] = []
    if reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
        details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        details.append(bad)
    await abort_with(
        context,
        status_pb2.Status(code=code_pb2.Code.Value(code), message=message, details=details),
    )
    raise AssertionError("unreachable: abort raises")


async def page(
    context: Ctx,
    items: Sequence[T],
    *,
    size: int,
    token: str,
    default: int,
    maximum: int,
) -> tuple[list[T], str]:
    """One page of an in-memory listing; the token is the offset.

    Args:
        context: the call (a bad size or token ends it with INVALID_ARGUMENT).
        items: everything, in order.
        size: the request's page size (0: ``default``; capped at ``maximum``).
        token: the request's page token.
        default: default page size.
        maximum: largest page size.

    Returns:
        The page and the next token ("" on the last page).
    """
    if size < 0:
        await reject(context, "INVALID_ARGUMENT", "invalid request: page_size",
                     violations=[("page_size", "must not be negative")])  # fmt: skip
    start = int(token) if token.isdigit() else -1 if token else 0
    if start < 0:
        await reject(context, "INVALID_ARGUMENT", "invalid request: page_token",
                     violations=[("page_token", "malformed")])  # fmt: skip
    count = min(size or default, maximum)
    chunk = list(items[start : start + count])
    end = start + len(chunk)
    return chunk, (str(end) if end < len(items) else "")

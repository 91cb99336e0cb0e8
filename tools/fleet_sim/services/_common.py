"""What the simulated services share: statuses with details, and offset paging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn, TypeVar

import grpc

from mesh import errors

__all__ = ["Ctx", "page", "reject"]

Ctx = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


def reject(
    code: str,
    message: str,
    *,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
) -> NoReturn:
    """Refuses the call with ``code`` and the contract's details (ErrorInfo, BadRequest).

    The simulated servicers are wrapped with the edge's one error mapping
    (``HOSPITAL_ERRORS``), which sends the error exactly as a real edge would.

    Args:
        code: ``google.rpc.Code`` name.
        message: the status message (never patient data).
        reason: ``ErrorInfo.reason`` ("" for none).
        violations: ``BadRequest`` field violations.

    Raises:
        mesh.errors.StatusError: always, of the class of ``code``.
    """
    raise errors.error_for(code)(message, reason=reason, field_violations=violations)


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
        reject("INVALID_ARGUMENT", "invalid request: page_size",
                     violations=[("page_size", "must not be negative")])  # fmt: skip
    start = int(token) if token.isdigit() else -1 if token else 0
    if start < 0:
        reject("INVALID_ARGUMENT", "invalid request: page_token",
                     violations=[("page_token", "malformed")])  # fmt: skip
    count = min(size or default, maximum)
    chunk = list(items[start : start + count])
    end = start + len(chunk)
    return chunk, (str(end) if end < len(items) else "")

"""Assertions on failed calls."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


async def fails(call: Awaitable[Any], code: grpc.StatusCode) -> status_pb2.Status:
    """Await ``call``, expect ``code``, and return the decoded google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() == code, err.details()
    status = rpc_status.from_call(err)  # raises when code or message disagree
    assert status is not None, "no google.rpc.Status in the trailers"
    return status


def detail(status: status_pb2.Status, kind: type[message.Message]) -> Any:
    """The first detail of type ``kind``."""
    for any_ in status.details:
        if any_.Is(kind.DESCRIPTOR):
            out = kind()
            any_.Unpack(out)
            return out
    raise AssertionError(f"no {kind.__name__} in {status}")


def field_violation(status: status_pb2.Status) -> str:
    bad = detail(status, error_details_pb2.BadRequest)
    return str(bad.field_violations[0].field)

"""hplus errors: one exception per gRPC status, mapped once on each side of every call.

The tree (``code`` of each class; details it usually carries)::

    StatusError                      code, message, ErrorInfo{reason, domain, metadata}
    ├── ClientError                  the caller changes the request or waits for the state
    │   ├── Cancelled                CANCELLED
    │   ├── InvalidArgument          INVALID_ARGUMENT     BadRequest field violations
    │   ├── NotFound                 NOT_FOUND            ResourceInfo
    │   ├── AlreadyExists            ALREADY_EXISTS
    │   ├── PermissionDenied         PERMISSION_DENIED
    │   ├── Unauthenticated          UNAUTHENTICATED
    │   ├── FailedPrecondition       FAILED_PRECONDITION  PreconditionFailure, rule metadata
    │   ├── OutOfRange               OUT_OF_RANGE
    │   ├── Aborted                  ABORTED              RetryInfo
    │   └── ResourceExhausted        RESOURCE_EXHAUSTED   RetryInfo
    └── ServerError                  the serving side (or the way there) failed
        ├── Unknown                  UNKNOWN
        ├── Internal                 INTERNAL             ErrorInfo{INTERNAL_ERROR, correlation_id}
        ├── Unimplemented            UNIMPLEMENTED
        ├── Unavailable              UNAVAILABLE          RetryInfo
        ├── DeadlineExceeded         DEADLINE_EXCEEDED
        └── DataLoss                 DATA_LOSS

Server side, one `ErrorMapping` per side wraps every servicer (``grpc.aio`` server or the
tunnel's ``TunnelServer``)::

    EDGE = ErrorMapping(domain="hospital.hplus", translate=edge_table)

    @EDGE.servicer
    class DirectoryServicer(directory_pb2_grpc.DirectoryServiceServicer): ...

A `StatusError` is sent with its details (`StatusError.to_status`); the side's table
translates its domain errors; anything else is a bug: INTERNAL with a correlation id,
logged once with its traceback. Client side, `wrap` a stub (or a multicallable) and catch
the tree; `from_call` decodes one ``AioRpcError``::

    stub = errors.wrap(registry_pb2_grpc.RegistryServiceStub(channel))
    try:
        await stub.GetRelease(request, timeout=10)
    except errors.NotFound as err:
        print(err.resource)
"""

from __future__ import annotations

from mesh.errors._client import from_call, wrap
from mesh.errors._server import (
    CORRELATION_KEY,
    INTERNAL_REASON,
    ErrorMapping,
    Translate,
    mapping_of,
)
from mesh.errors._tree import (
    Aborted,
    AlreadyExists,
    Cancelled,
    ClientError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    Resource,
    ResourceExhausted,
    ServerError,
    StatusError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    error_for,
)

__all__ = [
    "CORRELATION_KEY",
    "INTERNAL_REASON",
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ClientError",
    "DataLoss",
    "DeadlineExceeded",
    "ErrorMapping",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "Resource",
    "ResourceExhausted",
    "ServerError",
    "StatusError",
    "Translate",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_for",
    "from_call",
    "mapping_of",
    "wrap",
]

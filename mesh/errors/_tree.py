"""The error tree: one exception class per gRPC status code, carrying ``google.rpc`` details.

Every class is registered by its code (the first class declared for a code wins, so a
domain's own subclasses never displace the tree's), which is how `error_for` and
`StatusError.from_status` pick the class of a status received from a peer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf import message as pb_message
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "ClientError",
    "DataLoss",
    "DeadlineExceeded",
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
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "error_for",
]

Metadata = Sequence[tuple[str, "str | bytes"]]
"""gRPC metadata pairs (``-bin`` keys carry bytes)."""


class FieldViolation(NamedTuple):
    """One ``google.rpc.BadRequest.FieldViolation``: a request field and what is wrong."""

    field: str
    """Path of the field in the request, e.g. ``patient.card_number`` or ``content.his.url``."""
    description: str
    """What is wrong with it, e.g. ``required``; never quotes patient data."""


class PreconditionViolation(NamedTuple):
    """One ``google.rpc.PreconditionFailure.Violation``."""

    type: str
    """Kind of precondition, e.g. a compat rule id such as ``FIELD_NO_DELETE``."""
    subject: str
    """What failed it, e.g. a finding's fingerprint."""
    description: str
    """How it failed, for people."""


class Resource(NamedTuple):
    """A ``google.rpc.ResourceInfo``: the thing a call was about."""

    resource_type: str
    """E.g. ``release``, ``label``, ``hospital``."""
    resource_name: str
    """How the caller named it."""
    owner: str = ""
    """Who owns it, when that matters."""
    description: str = ""
    """What happened to it."""


_BY_CODE: dict[grpc.StatusCode, type[StatusError]] = {}
_CODES_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


class StatusError(Exception):
    """Base of every error that leaves (or reaches) us as a gRPC status.

    The ``message`` is what the caller sees: one line, never patient data, never an
    internal exception's text. Details become the ``google.rpc.Status`` details that
    travel in ``grpc-status-details-bin``.

    Args:
        message: the status message.
        reason: ``ErrorInfo.reason`` (UPPER_SNAKE_CASE); without it no ErrorInfo is sent.
        domain: ``ErrorInfo.domain``; empty takes the class's, then the server's default.
        metadata: ``ErrorInfo.metadata`` (string values).
        field_violations: ``BadRequest`` field violations, as `FieldViolation` or
            ``(field, description)`` pairs.
        precondition_violations: ``PreconditionFailure`` violations.
        retry_delay: seconds for ``RetryInfo.retry_delay`` (back-pressure).
        resource: ``ResourceInfo``.
        extra_details: further detail messages, sent after the standard ones (an ``Any``
            is sent as it is, so details of unknown types pass through a proxy intact).
        trailers: further trailing metadata to send with the status (a proxy passes the
            upstream call's through).

    Attributes:
        code: the gRPC status code of the class.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    domain: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str = "",
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
        precondition_violations: Iterable[tuple[str, str, str]] = (),
        retry_delay: float | None = None,
        resource: Resource | None = None,
        extra_details: Sequence[pb_message.Message] = (),
        trailers: Metadata = (),
    ) -> None:
        self.field_violations = tuple(FieldViolation(*v) for v in field_violations)
        self.message = message or self._default_message()
        super().__init__(self.message)
        self.reason = reason
        if domain:
            self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.precondition_violations = tuple(
            PreconditionViolation(*v) for v in precondition_violations
        )
        self.retry_delay = retry_delay
        self.resource = resource
        self.extra_details = tuple(extra_details)
        self.trailers = tuple(trailers)

    def _default_message(self) -> str:
        return self.code.name.lower().replace("_", " ")

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def details(self) -> list[pb_message.Message]:
        """Every detail message, decoded, in the order `to_status` sends them."""
        return self._details(self.domain)

    def _details(self, domain: str) -> list[pb_message.Message]:
        out: list[pb_message.Message] = []
        if self.reason:
            out.append(
                error_details_pb2.ErrorInfo(
                    reason=self.reason, domain=self.domain or domain, metadata=self.metadata
                )
            )
        if self.field_violations:
            out.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in self.field_violations
                    ]
                )
            )
        if self.precondition_violations:
            out.append(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in self.precondition_violations
                    ]
                )
            )
        if self.resource is not None:
            out.append(error_details_pb2.ResourceInfo(**self.resource._asdict()))
        if self.retry_delay is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_delay * 1e9))
            out.append(error_details_pb2.RetryInfo(retry_delay=delay))
        out.extend(self.extra_details)
        return out

    def to_status(self, *, domain: str = "") -> status_pb2.Status:
        """The ``google.rpc.Status`` this error is sent as.

        Args:
            domain: ``ErrorInfo.domain`` when neither the error nor its class names one.

        Returns:
            Code, message and the packed details.
        """
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.extend(_pack(detail) for detail in self._details(domain))
        return status

    @staticmethod
    def from_status(status: status_pb2.Status, *, trailers: Metadata = ()) -> StatusError:
        """The error a received ``google.rpc.Status`` stands for, details decoded.

        The first detail of each standard type fills the matching attribute; any other
        detail (a second ErrorInfo, a type we do not know) is kept in ``extra_details``
        as the ``Any`` it came in, so `to_status` sends the same details on.

        Args:
            status: the status (e.g. from ``grpc-status-details-bin``).
            trailers: the call's other trailing metadata, kept in ``trailers``.

        Returns:
            An instance of the class registered for the status code.
        """
        kwargs: dict[str, Any] = {}
        extra: list[pb_message.Message] = []
        for packed in status.details:
            if not _decode(packed, kwargs):
                extra.append(packed)
        return error_for(status.code)(
            status.message, extra_details=extra, trailers=trailers, **kwargs
        )


def _pack(message: pb_message.Message) -> any_pb2.Any:
    if isinstance(message, any_pb2.Any):
        return message
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _decode(packed: any_pb2.Any, kwargs: dict[str, Any]) -> bool:
    """Fills ``kwargs`` from one standard detail; False for any other (kept as is)."""
    # Any.Unpack is False (and leaves the message alone) when the type differs.
    info = error_details_pb2.ErrorInfo()
    if "reason" not in kwargs and packed.Unpack(info):
        kwargs.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
        return True
    bad = error_details_pb2.BadRequest()
    if "field_violations" not in kwargs and packed.Unpack(bad):
        kwargs["field_violations"] = [(v.field, v.description) for v in bad.field_violations]
        return True
    failure = error_details_pb2.PreconditionFailure()
    if "precondition_violations" not in kwargs and packed.Unpack(failure):
        kwargs["precondition_violations"] = [
            (v.type, v.subject, v.description) for v in failure.violations
        ]
        return True
    resource = error_details_pb2.ResourceInfo()
    if "resource" not in kwargs and packed.Unpack(resource):
        kwargs["resource"] = Resource(
            resource.resource_type, resource.resource_name, resource.owner, resource.description
        )
        return True
    retry = error_details_pb2.RetryInfo()
    if "retry_delay" not in kwargs and packed.Unpack(retry):
        kwargs["retry_delay"] = retry.retry_delay.ToNanoseconds() / 1e9
        return True
    return False


def error_for(code: grpc.StatusCode | int | str) -> type[StatusError]:
    """The class registered for a status code (``StatusError`` itself for OK or an unknown).

    Args:
        code: a ``grpc.StatusCode``, its number, or its name (``"NOT_FOUND"``).

    Returns:
        The tree's class for that code.
    """
    if isinstance(code, int):
        found = _CODES_BY_NUMBER.get(code)
        if found is None:
            return StatusError
        code = found
    elif isinstance(code, str):
        if code not in grpc.StatusCode.__members__:
            return StatusError
        code = grpc.StatusCode[code]
    return _BY_CODE.get(code, StatusError)


# -- the two families ----------------------------------------------------------------------


class ClientError(StatusError):
    """The call was refused as asked: the caller changes the request or waits for the state."""


class ServerError(StatusError):
    """The call failed on the serving side or on the way; the request may be fine."""


# -- one class per status code -------------------------------------------------------------


class Cancelled(ClientError):
    """CANCELLED: the caller gave up."""

    code = grpc.StatusCode.CANCELLED


class InvalidArgument(ClientError):
    """INVALID_ARGUMENT: a request field is malformed; names each field (``BadRequest``).

    Without a message, the message lists the violations: ``id_card_number: required``.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def _default_message(self) -> str:
        if self.field_violations:
            return "invalid request: " + "; ".join(
                f"{v.field}: {v.description}" for v in self.field_violations
            )
        return super()._default_message()


class NotFound(ClientError):
    """NOT_FOUND: what the call names does not exist (``ResourceInfo`` says what)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ClientError):
    """ALREADY_EXISTS: what the call would create exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ClientError):
    """PERMISSION_DENIED: the caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ClientError):
    """UNAUTHENTICATED: no credential, or one that is unknown or revoked."""

    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(ClientError):
    """FAILED_PRECONDITION: the system is not in a state that allows this (a rule refuses)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ClientError):
    """OUT_OF_RANGE: past the end of a valid range."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Aborted(ClientError):
    """ABORTED: a concurrent change won; retry the whole operation (``RetryInfo``)."""

    code = grpc.StatusCode.ABORTED


class ResourceExhausted(ClientError):
    """RESOURCE_EXHAUSTED: a quota or capacity is used up (``RetryInfo`` says when to retry)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unknown(ServerError):
    """UNKNOWN: a status from a peer that did not say more."""

    code = grpc.StatusCode.UNKNOWN


class Internal(ServerError):
    """INTERNAL: a bug; the message carries a correlation id to find the log line."""

    code = grpc.StatusCode.INTERNAL


class Unimplemented(ServerError):
    """UNIMPLEMENTED: this server does not offer the method (or this hospital the operation)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(ServerError):
    """UNAVAILABLE: try again later (a HIS down, a hospital not connected, a node away)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServerError):
    """DEADLINE_EXCEEDED: the deadline passed before an answer."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataLoss(ServerError):
    """DATA_LOSS: unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS

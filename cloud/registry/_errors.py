"""The registry's domain errors; the servicer maps each class to one status code.

::

    RegistryError
    ├── InvalidArgument        (INVALID_ARGUMENT; names the field)
    ├── NotFound               (NOT_FOUND; names what was looked up)
    ├── AlreadyExists          (ALREADY_EXISTS)
    ├── Conflict               (ABORTED; a compare-and-set lost)
    ├── FailedPrecondition     (FAILED_PRECONDITION; carries a machine-readable reason)
    │   └── BreakingChanges    (reason UNAPPROVED_BREAKING_CHANGES; carries the report)
    ├── Unauthenticated        (UNAUTHENTICATED)
    ├── PermissionDenied       (PERMISSION_DENIED)
    └── Unimplemented          (UNIMPLEMENTED; a feature this node does not run)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hplus.cloud.v1 import registry_pb2

__all__ = [
    "AlreadyExists",
    "BreakingChanges",
    "Conflict",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RegistryError",
    "Unauthenticated",
    "Unimplemented",
]


class RegistryError(Exception):
    """Base of every error the registry reports to callers.

    Args:
        message: one line for the caller; never includes secrets or internals.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RegistryError):
    """A request field is malformed.

    Args:
        field: the request field at fault, e.g. ``version`` or ``image``.
        message: what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class NotFound(RegistryError):
    """A release, label or token does not exist.

    Args:
        kind: what was looked up (``release``, ``label``).
        name: how it was named.
    """

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class AlreadyExists(RegistryError):
    """The thing to create exists with different content."""


class Conflict(RegistryError):
    """A compare-and-set precondition did not hold (someone else moved it first)."""


class FailedPrecondition(RegistryError):
    """The system is not in a state that allows the change.

    Args:
        reason: machine-readable reason (``ErrorInfo.reason``), e.g. ``RELEASE_RETIRED``.
        message: for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class BreakingChanges(FailedPrecondition):
    """A push has unapproved ERROR findings against the compat window.

    Args:
        report: the check that failed, with every finding.
        blocking: fingerprints of the unapproved ERROR findings.
    """

    def __init__(self, report: registry_pb2.CompatibilityReport, blocking: list[str]) -> None:
        super().__init__(
            "UNAPPROVED_BREAKING_CHANGES",
            f"{len(blocking)} unapproved breaking finding(s) against the compat window; "
            "approve each fingerprint to push anyway",
        )
        self.report = report
        self.blocking = blocking


class Unauthenticated(RegistryError):
    """No token, or a token that is unknown or revoked."""


class PermissionDenied(RegistryError):
    """The caller's role may not call this method."""


class Unimplemented(RegistryError):
    """The method is served by a component this node does not run (e.g. the field census)."""

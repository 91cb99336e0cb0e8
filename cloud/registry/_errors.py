"""The registry's domain errors: each is the ``mesh.errors`` tree error of its status code.

::

    RegistryError                              (domain registry.hplus)
    ├── InvalidArgument     errors.InvalidArgument     names the field (BadRequest)
    ├── NotFound            errors.NotFound            names what was looked up (ResourceInfo)
    ├── AlreadyExists       errors.AlreadyExists
    ├── Conflict            errors.Aborted             a compare-and-set lost
    ├── FailedPrecondition  errors.FailedPrecondition  carries a machine-readable reason
    │   └── BreakingChanges                            UNAPPROVED_BREAKING_CHANGES + report
    ├── Unauthenticated     errors.Unauthenticated
    ├── PermissionDenied    errors.PermissionDenied
    └── Unimplemented       errors.Unimplemented       a feature this node does not run
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.rpc import error_details_pb2, status_pb2

from mesh import errors

if TYPE_CHECKING:
    from hplus.cloud.v1 import registry_pb2

__all__ = [
    "ERROR_DOMAIN",
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

ERROR_DOMAIN = "registry.hplus"
"""``ErrorInfo.domain`` of the registry's errors."""

# Status details travel in trailers (base64), which peers cap at 8 KiB by default; beyond
# this many raw bytes the full report is left out and the violations are truncated.
_DETAILS_BUDGET = 4500


class RegistryError(errors.StatusError):
    """Base of every error the registry reports to callers.

    Args:
        message: one line for the caller; never includes secrets or internals.
    """

    domain = ERROR_DOMAIN


class InvalidArgument(RegistryError, errors.InvalidArgument):
    """A request field is malformed.

    Args:
        field: the request field at fault, e.g. ``version`` or ``image``.
        message: what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field_violations=[(field, message)])
        self.field = field
        self.description = message


class NotFound(RegistryError, errors.NotFound):
    """A release, label or token does not exist.

    Args:
        kind: what was looked up (``release``, ``label``).
        name: how it was named.
    """

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found", resource=errors.Resource(kind, name))
        self.kind = kind
        self.name = name


class AlreadyExists(RegistryError, errors.AlreadyExists):
    """The thing to create exists with different content."""


class Conflict(RegistryError, errors.Aborted):
    """A compare-and-set precondition did not hold (someone else moved it first)."""


class FailedPrecondition(RegistryError, errors.FailedPrecondition):
    """The system is not in a state that allows the change.

    Args:
        reason: machine-readable reason (``ErrorInfo.reason``), e.g. ``RELEASE_RETIRED``.
        message: for people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason=reason)


class BreakingChanges(FailedPrecondition):
    """A push has unapproved ERROR findings against the compat window.

    Its details: ``ErrorInfo`` with the fingerprints, a ``PreconditionFailure`` violation
    per finding (rule id, fingerprint, location), and the whole report, as far as they fit
    in the trailers (the report goes first, then violations, then fingerprints).

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
        distinct: dict[str, registry_pb2.Finding] = {}
        for row in report.rows:
            for cell in row.results:
                for f in cell.findings:
                    if f.fingerprint in blocking:
                        distinct.setdefault(f.fingerprint, f)
        self.metadata = {"fingerprints": ",".join(blocking), "count": str(len(blocking))}
        self.precondition_violations = tuple(
            errors.PreconditionViolation(
                f.rule_id, f.fingerprint, f"{f.file}:{f.line}:{f.column}: {f.message}"
            )
            for f in distinct.values()
        )
        self.extra_details = (report,)

    def to_status(self, *, domain: str = "") -> status_pb2.Status:
        """The status, trimmed to what fits in trailers (see the class docstring)."""
        status = super().to_status(domain=domain)
        if status.ByteSize() <= _DETAILS_BUDGET:
            return status
        del status.details[-1]  # the report: extra details come after the standard ones
        violations = list(self.precondition_violations)
        while status.ByteSize() > _DETAILS_BUDGET and violations:
            violations.pop()
            status.details[1].Pack(_failure(violations))
        if status.ByteSize() > _DETAILS_BUDGET:
            # Too many fingerprints even for ErrorInfo: CheckRelease lists them all.
            over = status.ByteSize() - _DETAILS_BUDGET
            keep = max(0, len(self.blocking) - over // 17 - 1)
            info = error_details_pb2.ErrorInfo()
            status.details[0].Unpack(info)
            info.metadata["fingerprints"] = ",".join(self.blocking[:keep])
            info.metadata["truncated"] = "true"
            status.details[0].Pack(info)
        return status


def _failure(
    violations: Sequence[errors.PreconditionViolation],
) -> error_details_pb2.PreconditionFailure:
    return error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type=v.type, subject=v.subject, description=v.description
            )
            for v in violations
        ]
    )


class Unauthenticated(RegistryError, errors.Unauthenticated):
    """No token, or a token that is unknown or revoked."""


class PermissionDenied(RegistryError, errors.PermissionDenied):
    """The caller's role may not call this method."""


class Unimplemented(RegistryError, errors.Unimplemented):
    """The method is served by a component this node does not run (e.g. the field census)."""

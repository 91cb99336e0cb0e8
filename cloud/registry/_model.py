"""The registry's domain values: releases, labels, lifecycle states, audit entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hplus.cloud.v1 import registry_pb2

__all__ = ["AuditEntry", "LabelInfo", "Lifecycle", "PushOutcome", "ReleaseInfo", "Selector"]


class Lifecycle(enum.Enum):
    """Lifecycle state of a release."""

    ACTIVE = "active"
    """Supported and in the compat window."""
    DEPRECATED = "deprecated"
    """Still supported and in the window; new deployments should not choose it."""
    RETIRED = "retired"
    """Unsupported, outside the window, cannot be labelled. Final."""


@dataclasses.dataclass(frozen=True)
class ReleaseInfo:
    """A stored release."""

    version: str
    """Semantic version."""
    digest: str
    """Lower-case hex SHA-256 of the canonical image."""
    image_size: int
    """Size of the image in bytes."""
    lifecycle: Lifecycle
    """Current state."""
    lifecycle_changed_at: dt.datetime
    """When the state last changed."""
    notes: str
    """Release notes (Markdown)."""
    approvals: tuple[str, ...]
    """Fingerprints approved at push."""
    files: tuple[str, ...]
    """The release's own proto files."""
    services: tuple[str, ...]
    """Fully qualified service names."""
    push_actor: str
    """Who pushed it."""
    created_at: dt.datetime
    """When it was pushed."""
    previous_version: str | None
    """The release its change list is against (highest version below it at push time)."""
    labels: tuple[str, ...] = ()
    """Labels pointing at it now."""
    image: bytes | None = dataclasses.field(default=None, repr=False)
    """The canonical image, when asked for."""
    changes: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    """The compat diff against ``previous_version`` (``hplus.compat.diff/v1`` JSON)."""


@dataclasses.dataclass(frozen=True)
class Selector:
    """Names one release: exactly one of the fields is set."""

    version: str | None = None
    """An exact version."""
    label: str | None = None
    """A label, resolved now."""
    digest: str | None = None
    """A hex SHA-256 content address."""

    def __str__(self) -> str:
        if self.version is not None:
            return self.version
        if self.label is not None:
            return f"label {self.label}"
        return f"sha256:{self.digest}"


@dataclasses.dataclass(frozen=True)
class LabelInfo:
    """A label and where it points."""

    name: str
    """Label name."""
    version: str
    """Version it points at."""
    digest: str
    """Digest of that release."""
    updated_at: dt.datetime
    """When it was last moved."""
    updated_by: str
    """Who moved it."""


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One recorded change."""

    at: dt.datetime
    """When."""
    actor: str
    """Who."""
    action: str
    """What, e.g. ``release.push``, ``label.set``, ``lifecycle.set``, ``token.issue``."""
    target: str
    """What it was done to (a version, label or token id)."""
    details: dict[str, Any]
    """The rest (digests, previous values, reason)."""


@dataclasses.dataclass(frozen=True)
class PushOutcome:
    """What a push did."""

    release: ReleaseInfo
    """The stored release (or, when validating only, the one that would be stored)."""
    created: bool
    """False when the identical release existed already."""
    report: registry_pb2.CompatibilityReport
    """The check that ran, approved and non-blocking findings included."""

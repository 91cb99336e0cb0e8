"""The values the compat engine hands out: categories, severities and located findings."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any

__all__ = ["DEFAULT_CATEGORIES", "Category", "Finding", "Severity", "fingerprint"]


class Category(enum.Enum):
    """What a change can break, from least to most strict (buf's lattice).

    ``WIRE`` breaks the binary encoding; ``WIRE_JSON`` the binary or the JSON encoding;
    ``PACKAGE`` code generated per package; ``FILE`` code generated per file. ``SOURCE`` is
    our name for ``FILE`` (generated code in any language) and selects the same rules.
    """

    WIRE = "WIRE"
    WIRE_JSON = "WIRE_JSON"
    PACKAGE = "PACKAGE"
    FILE = "FILE"

    @classmethod
    def parse(cls, text: str) -> Category:
        """Parse a category name, accepting ``SOURCE`` for ``FILE``.

        Raises:
            ValueError: ``text`` names no category.
        """
        name = text.strip().upper().replace("-", "_")
        if name == "SOURCE":
            return cls.FILE
        try:
            return cls[name]
        except KeyError:
            choices = ", ".join([*(c.value for c in cls), "SOURCE"])
            raise ValueError(f"unknown category {text!r} (choose from {choices})") from None


DEFAULT_CATEGORIES: tuple[Category, ...] = (Category.WIRE_JSON,)
"""The rule categories every gate runs unless told otherwise: ``compat diff``, ``compat
window``, ``make breaking`` (``buf.yaml``) and the registry's push policy, so that a change
one gate refuses is refused by all of them."""


class Severity(enum.IntEnum):
    """How much a finding matters; ordered so that ``>=`` compares strictness."""

    INFO = 1
    """Informational: an addition or a change nothing depends on."""
    WARN = 2
    """Possibly breaking: data may be lost or defaulted, but decoding still works."""
    ERROR = 3
    """Breaking in the finding's category."""

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse ``info``, ``warn`` or ``error`` (any case).

        Raises:
            ValueError: ``text`` names no severity.
        """
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (choose from info, warn, error)") from None


def fingerprint(rule: str, path: str, subject: str, message: str) -> str:
    """A stable ID for a finding that survives unrelated edits (line shifts, other files).

    Args:
        rule: the rule ID.
        path: the file the finding is in (or the deleted file).
        subject: the element the finding is about (e.g. ``pkg.Msg#3``).
        message: the finding's message.

    Returns:
        The first 16 hex digits of the SHA-256 of the four parts.
    """
    raw = "\x1f".join((rule, path, subject, message)).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Finding:
    """One located result of a rule.

    Locations are 1-based and point into the newer release, exactly where ``buf breaking``
    points: a deleted nested element is reported on its surviving parent, a deleted
    top-level element on its file (line 1, column 1), and a deleted file has no path.
    """

    rule: str
    """The rule ID (buf's ID when the rule is one of buf's)."""
    category: Category
    """The least strict category the rule belongs to, i.e. what the change breaks."""
    severity: Severity
    """How much the finding matters."""
    path: str
    """File in the newer release; empty when the file itself is gone."""
    line: int
    """1-based start line."""
    column: int
    """1-based start column."""
    end_line: int
    """1-based end line."""
    end_column: int
    """1-based column just past the end."""
    message: str
    """What changed, in buf's words where buf has a message for it."""
    subject: str
    """The element the finding is about, as a stable key (``pkg.Msg#3``, ``pkg.Svc/Rpc``)."""
    against_path: str = ""
    """The file in the older release the element came from."""
    fingerprint: str = ""
    """Stable ID for approvals; derived from rule, path, subject and message."""
    approved: bool = False
    """Whether an approvals file accepted this finding."""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            fp = fingerprint(self.rule, self.path or self.against_path, self.subject, self.message)
            object.__setattr__(self, "fingerprint", fp)

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object (the documented machine format)."""
        return {
            "rule": self.rule,
            "category": self.category.value,
            "severity": self.severity.name.lower(),
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "message": self.message,
            "subject": self.subject,
            "against_path": self.against_path,
            "fingerprint": self.fingerprint,
            "approved": self.approved,
        }

    def sort_key(self) -> tuple[str, int, int, str, str]:
        """Buf's output order: path, line, column, rule, message."""
        return (self.path, self.line, self.column, self.rule, self.message)

"""The one error of package handling: a reason code and a sentence saying what is wrong."""

from __future__ import annotations

__all__ = ["PackageError"]


class PackageError(Exception):
    """A package, delta, key or certificate refused.

    Args:
        reason: a stable UPPER_SNAKE_CASE code (``BAD_SIGNATURE``, ``ROLLBACK``, …) that an
            edge reports to the cloud and tests assert on.
        message: one line for people: which file, which rule.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} [{self.reason}]"

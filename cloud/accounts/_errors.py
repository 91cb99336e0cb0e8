"""The errors accounts raise: tree errors with the reasons ``account.proto`` documents.

==========================  ====================  =====================================
reason                      code                  when
==========================  ====================  =====================================
APP_KEY_MISSING/INVALID/    UNAUTHENTICATED       no ``x-hplus-app-key``, an unknown or
REVOKED                                           wrong one, a revoked app
TOKEN_MISSING/MALFORMED/    UNAUTHENTICATED       the ``authorization`` bearer token
INVALID/EXPIRED/REVOKED/
APP_MISMATCH
RATE_LIMITED                RESOURCE_EXHAUSTED    a bucket is empty (``RetryInfo``;
                                                  ``metadata["limit"]``: app, phone,
                                                  address)
CODE_INCORRECT              INVALID_ARGUMENT      wrong code (``attempts_left``)
CODE_EXPIRED                FAILED_PRECONDITION   the challenge's code expired
TOO_MANY_ATTEMPTS           FAILED_PRECONDITION   the challenge is burned
CHALLENGE_USED              FAILED_PRECONDITION   answered already (another request)
CHALLENGE_NOT_FOUND         NOT_FOUND             no such challenge for this app
CODE_NOT_SENT               UNAVAILABLE           the code sender failed
IDEMPOTENCY_KEY_REUSED      INVALID_ARGUMENT      a ``request_id`` with other parameters
TOO_MANY_PATIENTS           FAILED_PRECONDITION   the account is full
PATIENT_NOT_FOUND_AT_       NOT_FOUND             the hospital does not know the patient
HOSPITAL
==========================  ====================  =====================================
"""

from __future__ import annotations

from cloud.errors import ERROR_DOMAIN
from mesh import errors

__all__ = ["RateLimited", "unauthenticated"]


def unauthenticated(reason: str, message: str) -> errors.Unauthenticated:
    """UNAUTHENTICATED with ``reason`` (never says more than the reason about the secret)."""
    return errors.Unauthenticated(message, reason=reason, domain=ERROR_DOMAIN)


class RateLimited(errors.ResourceExhausted):
    """RESOURCE_EXHAUSTED: a bucket is empty; retry after ``retry_delay`` seconds.

    Args:
        limit: which limit (``app``, ``phone``, ``address``).
        wait: seconds until the bucket has a token again.
        what: what is limited, for the message.
    """

    def __init__(self, limit: str, wait: float, what: str) -> None:
        super().__init__(
            f"too many {what} for this {limit}; retry in {max(wait, 0.001):.3g}s",
            reason="RATE_LIMITED",
            domain=ERROR_DOMAIN,
            metadata={"limit": limit},
            retry_delay=wait,
        )
        self.limit = limit

"""The cloud's error mapping: the one place a cloud servicer's exception becomes a status.

Every servicer the cloud serves (registry, operations, the internal endpoint's forwarder)
is wrapped with ``CLOUD_ERRORS`` (a :class:`mesh.errors.ErrorMapping`). The cloud's domain
errors either are tree errors already (the registry's errors, ``HospitalUnavailable``:
their class is their status code) or are translated by :func:`translate` below; anything
else is a bug, answered INTERNAL with a correlation id and logged once.

========================  ===========  ============================================
error                     code         details
========================  ===========  ============================================
``PresenceUnavailable``   UNAVAILABLE  ``PRESENCE_UNAVAILABLE``, ``RetryInfo``; the
                                       store's own error is logged, never sent
``QueryError``            INVALID_     ``BadRequest`` on the field it names (a read
(``cloud.readstore``)     ARGUMENT     store filter or cursor)
``UnknownHospital``       NOT_FOUND    ``ResourceInfo`` (``hospital``, the id)
(``cloud.readstore``)
a database connection     UNAVAILABLE  ``DATABASE_UNAVAILABLE``, ``RetryInfo``; the
lost or refused                        driver's error is logged, never sent
(SQLAlchemy ``DBAPIError``
invalidating it,
``OperationalError``,
``InterfaceError``, or a
``ConnectionError`` the
driver raised connecting)
========================  ===========  ============================================

A lost database connection is a retry, not a bug: the pool's pre-ping replaces a dead
connection at checkout, but one terminated during a statement fails that statement (found by
the chaos run's ``pg_terminate_backend``: GetOrder answered INTERNAL). Every write the
patient API takes is idempotent by its request id, so the caller's retry is safe.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from cloud.presence import PresenceUnavailable
from cloud.readstore import QueryError, UnknownHospital
from mesh import errors

__all__ = ["CLOUD_ERRORS", "ERROR_DOMAIN", "translate"]

log = logging.getLogger("cloud.errors")

ERROR_DOMAIN = "cloud.hplus"
"""``ErrorInfo.domain`` of the cloud node's own errors (the registry names its own)."""

_PRESENCE_RETRY_SECONDS = 1.0
_DATABASE_RETRY_SECONDS = 1.0


def _raised_by_database_driver(err: BaseException) -> bool:
    """Whether ``err`` came out of SQLAlchemy or a database driver.

    A connection refused or reset while the pool connects is raised as the bare
    ``OSError`` (asyncpg), not as a DBAPIError.
    """
    tb = err.__traceback__
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("sqlalchemy.", "asyncpg.", "aiosqlite.")):
            return True
        tb = tb.tb_next
    return False


def translate(err: Exception) -> errors.StatusError | None:
    """The cloud's table: a domain error that is not a tree error → the tree error.

    Args:
        err: what a servicer raised.

    Returns:
        The error to send, or ``None`` for an exception no table knows (a bug).
    """
    if isinstance(err, PresenceUnavailable):
        log.warning("presence unavailable: %s", err)
        return errors.Unavailable(
            "tunnel presence is unavailable; retry shortly",
            reason="PRESENCE_UNAVAILABLE",
            retry_delay=_PRESENCE_RETRY_SECONDS,
        )
    if (
        isinstance(err, DBAPIError)
        and (err.connection_invalidated or isinstance(err, OperationalError | InterfaceError))
    ) or (isinstance(err, ConnectionError) and _raised_by_database_driver(err)):
        log.warning("database unavailable: %s", str(err).splitlines()[0])
        return errors.Unavailable(
            "a database is unavailable; retry shortly",
            reason="DATABASE_UNAVAILABLE",
            retry_delay=_DATABASE_RETRY_SECONDS,
        )
    if isinstance(err, QueryError):
        return errors.InvalidArgument(field_violations=[(err.field, err.message)])
    if isinstance(err, UnknownHospital):
        return errors.NotFound(
            f"no hospital with id {err.hospital_id!r}",
            resource=errors.Resource("hospital", err.hospital_id, description="not found"),
        )
    return None


CLOUD_ERRORS = errors.ErrorMapping(domain=ERROR_DOMAIN, translate=translate, logger=log)
"""The cloud's one error mapping (see the module docstring)."""

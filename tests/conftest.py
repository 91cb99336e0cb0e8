"""Shared fixtures.

Integration tests need PostgreSQL (127.0.0.1:5432, database ``test``) and Redis
(127.0.0.1:6379). On a machine without them they are skipped with a reason; under CI
(``CI=true``) a missing service fails the test instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket

import pytest


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _require(name: str, host: str, port: int) -> None:
    if _answers(host, port):
        return
    message = f"{name} does not answer on {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI must run integration tests)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of the local PostgreSQL test database."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get(
        "HPLUS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the local Redis server."""
    _require("Redis", "127.0.0.1", 6379)
    return os.environ.get("HPLUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

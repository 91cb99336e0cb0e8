"""Fixtures of the HIS adapter contract suite: one simulator and one adapter per dialect."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from frontend_server.adapters import HisAdapter, make_adapter
from tests.unit.frontend_server.adapters.helpers import settings_for
from tools.his_sim import DbHis, RestHis, SimBase, SoapHis

DIALECTS = ("rest", "soap", "db")

# The same seed gives every dialect the same hospital: the same ids, names and fees.
SEED = 7


@pytest.fixture(params=[*DIALECTS, pytest.param("db-postgres", marks=pytest.mark.integration)])
async def his(request: pytest.FixtureRequest) -> AsyncIterator[SimBase]:
    """A running simulator of the parametrized dialect (the DB one on SQLite, then on
    PostgreSQL under its own table prefix when PostgreSQL answers)."""
    sim: SimBase
    if request.param == "rest":
        sim = RestHis(seed=SEED)
    elif request.param == "soap":
        sim = SoapHis(seed=SEED)
    elif request.param == "db":
        sim = DbHis(seed=SEED, poll_interval=0.005)
    else:
        sim = DbHis(
            seed=SEED,
            poll_interval=0.005,
            db_url=request.getfixturevalue("postgres_url"),
            table_prefix=f"A{uuid.uuid4().hex[:8].upper()}_",
            drop_on_stop=True,
        )
    async with sim:
        yield sim


@pytest.fixture
async def adapter(his: SimBase) -> AsyncIterator[HisAdapter]:
    """An adapter on ``his`` with generous deadlines."""
    async with make_adapter(settings_for(his)) as a:
        yield a

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.fleet import CredentialError, CredentialStore, migrate_fleet
from cloud.fleet._schema import METADATA


@pytest.fixture
async def store(db_engine: AsyncEngine) -> CredentialStore:
    await migrate_fleet(db_engine)
    return CredentialStore(db_engine)


async def test_issued_token_authenticates_its_hospital_only(store: CredentialStore) -> None:
    a = await store.issue("h-001", label="edge A")
    b = await store.issue("h-002")
    got = await store.authenticate(a.token)
    assert got is not None
    assert (got.hospital_id, got.credential_id, got.label) == ("h-001", a.credential_id, "edge A")
    assert await hospital_of(store, b.token) == "h-002"
    assert a.token.startswith(f"hpc1.{a.credential_id}.")
    assert a.token not in repr(a)


async def hospital_of(store: CredentialStore, token: str | None) -> str | None:
    info = await store.authenticate(token)
    return None if info is None else info.hospital_id


async def test_secret_is_stored_hashed(store: CredentialStore, db_engine: AsyncEngine) -> None:
    issued = await store.issue("h-001")
    secret = issued.token.split(".", 2)[2]
    async with db_engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM hospital_credentials"))).all()
    assert len(rows) == 1
    assert secret not in repr(tuple(rows[0]))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: None,
        lambda t: "",
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret
        lambda t: t.replace("hpc1.", "hpc2."),
        lambda t: "hpc1." + t.split(".")[1],  # no secret
        lambda t: "Bearer " + t,
        lambda t: "garbage",
    ],
)
async def test_bad_tokens_are_refused(store: CredentialStore, mangle) -> None:
    issued = await store.issue("h-001")
    assert await store.authenticate(mangle(issued.token)) is None


async def test_revoked_credential_is_refused(store: CredentialStore) -> None:
    old = await store.issue("h-001")
    new = await store.issue("h-001")
    info = await store.revoke(old.credential_id)
    assert info.revoked_at is not None
    assert await store.authenticate(old.token) is None
    assert await hospital_of(store, new.token) == "h-001"
    # Revoking again is harmless; an unknown id is an error.
    assert (await store.revoke(old.credential_id)).revoked_at == info.revoked_at
    with pytest.raises(CredentialError, match="no credential with id 'nope'"):
        await store.revoke("nope")
    listed = await store.list("h-001")
    assert {c.credential_id for c in listed} == {old.credential_id, new.credential_id}


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 65, "h/1", "医院"])
async def test_invalid_hospital_id(store: CredentialStore, bad: str) -> None:
    with pytest.raises(CredentialError, match="invalid hospital id"):
        await store.issue(bad)


async def test_concurrent_issue_gives_distinct_credentials(store: CredentialStore) -> None:
    issued = await asyncio.gather(*(store.issue("h-001") for _ in range(20)))
    assert len({i.credential_id for i in issued}) == 20
    results = await asyncio.gather(*(hospital_of(store, i.token) for i in issued))
    assert set(results) == {"h-001"}


async def test_migrations_match_the_schema_module(store: CredentialStore, db_engine: AsyncEngine):
    def columns(conn: sa.Connection) -> dict[str, list[str]]:
        insp = sa.inspect(conn)
        return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in METADATA.tables}

    async with db_engine.connect() as conn:
        migrated = await conn.run_sync(columns)
    described = {t.name: sorted(c.name for c in t.columns) for t in METADATA.tables.values()}
    assert migrated == described


async def test_migrating_twice_is_a_no_op(store: CredentialStore, db_engine: AsyncEngine) -> None:
    issued = await store.issue("h-001")
    await migrate_fleet(db_engine)
    assert await hospital_of(store, issued.token) == "h-001"


async def test_revoked_answers_which_ids_are_revoked_or_unknown(store: CredentialStore) -> None:
    live = [await store.issue("h-001") for _ in range(3)]
    gone = await store.issue("h-002")
    await store.revoke(gone.credential_id)
    ids = [c.credential_id for c in live] + [gone.credential_id, "never-issued"]
    assert await store.revoked(ids) == {gone.credential_id, "never-issued"}
    assert await store.revoked([]) == set()
    # Many ids go in batches.
    many = [f"x{i}" for i in range(1200)] + [live[0].credential_id]
    assert await store.revoked(many) == set(many) - {live[0].credential_id}
    got = await store.get(gone.credential_id)
    assert got is not None
    assert got.revoked_at is not None
    assert await store.get("never-issued") is None

"""The one authentication other servicers use: metadata in, a `Caller` (and `CALLER`) out."""

from __future__ import annotations

import asyncio

import pytest

from cloud.accounts import CALLER, Caller
from mesh import errors
from tests.unit.cloud.accounts.conftest import Harness


async def test_authenticate_from_metadata_sets_the_caller_for_the_call(harness: Harness) -> None:
    signed = await harness.sign_in()
    auth = harness.accounts.auth

    async def call() -> tuple[Caller, Caller | None]:
        caller = await auth.authenticate_account(
            harness.md(signed.access_token), peer="ipv4:10.1.2.3:40000"
        )
        return caller, CALLER.get()

    caller, seen = await asyncio.create_task(call())  # a call runs in a task of its own
    assert seen == caller
    assert caller.account_id == signed.account.account_id
    assert caller.address == "10.1.2.3"
    assert caller.app.name == "test-app"
    assert caller.session is not None
    assert caller.session.session_id == signed.session_id
    assert CALLER.get() is None  # nothing leaks out of the call's context

    app_only = await auth.authenticate_app(harness.md(), peer="ipv6:[::1]:5")
    assert (app_only.session, app_only.account_id, app_only.address) == (None, None, "::1")


async def test_a_bearer_prefix_is_optional_but_the_token_must_be_ours(harness: Harness) -> None:
    signed = await harness.sign_in()
    auth = harness.accounts.auth
    bare = (("x-hplus-app-key", harness.key), ("authorization", signed.access_token))
    assert (await auth.authenticate_account(bare)).account_id == signed.account.account_id
    basic = (("x-hplus-app-key", harness.key), ("authorization", "Basic dXNlcjpwYXNz"))
    with pytest.raises(errors.Unauthenticated) as info:
        await auth.authenticate_account(basic)
    assert info.value.reason == "TOKEN_MALFORMED"

"""Sign-in: codes, attempts, expiry, brute force, idempotency, sessions and their tokens."""

from __future__ import annotations

import time

import pytest

from cloud.accounts import AppStore, Channel, Rate, Sessions
from cloud.config import AccountsConfig
from hplus.cloud.v1 import account_pb2
from mesh import errors
from tests.support.waiting import until
from tests.unit.cloud.accounts.conftest import PHONE, Harness, rid


async def test_first_sign_in_creates_the_account_and_later_ones_reuse_it(harness: Harness) -> None:
    started = await harness.start()
    assert started.challenge_id.startswith("36-")  # the phone's region (see test_regions)
    assert (started.code_length, started.attempts_allowed) == (6, 5)
    assert started.expire_time.ToDatetime(
        tzinfo=harness.clock.now.tzinfo
    ) == harness.clock.now.replace(minute=5)
    sent = harness.sender.sent[-1]
    assert (sent.phone, sent.challenge_id) == (PHONE, started.challenge_id)
    assert len(sent.code) == 6
    assert sent.code.isdigit()
    signed = await harness.complete(started.challenge_id, sent.code)
    assert signed.account_created
    assert signed.account.phone == PHONE
    assert signed.account.region_code == "36"
    assert signed.access_token.startswith(f"hpa1.{signed.session_id}.")
    assert signed.session_id.startswith("36-")
    again = await harness.sign_in("13800138000")  # the same number, national form
    assert not again.account_created
    assert again.account.account_id == signed.account.account_id
    assert again.session_id != signed.session_id
    for token in (signed.access_token, again.access_token):  # both sessions work
        got = await harness.stub.GetAccount(
            account_pb2.GetAccountRequest(), metadata=harness.md(token), timeout=5
        )
        assert got.account.account_id == signed.account.account_id
    assert got.session_id == again.session_id


async def test_a_wrong_code_counts_down_then_burns_the_challenge(harness: Harness) -> None:
    started = await harness.start()
    right = harness.sender.code(started.challenge_id)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        with pytest.raises(errors.InvalidArgument) as info:
            await harness.complete(started.challenge_id, wrong)
        assert info.value.reason == "CODE_INCORRECT"
        assert info.value.metadata == {"attempts_left": str(left)}
        assert info.value.field_violations[0].field == "code"
    with pytest.raises(errors.FailedPrecondition) as burned:
        await harness.complete(started.challenge_id, wrong)
    assert burned.value.reason == "TOO_MANY_ATTEMPTS"
    with pytest.raises(errors.FailedPrecondition) as still:
        await harness.complete(started.challenge_id, right)  # even the right code now
    assert still.value.reason == "TOO_MANY_ATTEMPTS"


async def test_an_expired_code_is_refused(harness: Harness) -> None:
    started = await harness.start()
    harness.clock.advance(300)
    with pytest.raises(errors.FailedPrecondition) as info:
        await harness.complete(started.challenge_id, harness.sender.code(started.challenge_id))
    assert info.value.reason == "CODE_EXPIRED"


async def test_unknown_and_foreign_challenges_are_not_found(harness: Harness) -> None:
    with pytest.raises(errors.NotFound) as info:
        await harness.complete("44-0000000000000000", "123456")
    assert info.value.reason == "CHALLENGE_NOT_FOUND"
    # Another app cannot answer this app's challenge.
    other = await harness.accounts.apps.issue("other", Channel.MINI_PROGRAM, Rate(100, 1.0))
    started = await harness.start()
    with pytest.raises(errors.NotFound):
        await harness.complete(
            started.challenge_id, harness.sender.code(started.challenge_id), key=other.key
        )


async def test_start_is_idempotent_by_request_id(harness: Harness) -> None:
    request = account_pb2.StartSignInRequest(request_id=rid(), phone=PHONE)
    first = await harness.stub.StartSignIn(request, metadata=harness.md(), timeout=5)
    second = await harness.stub.StartSignIn(request, metadata=harness.md(), timeout=5)
    assert second == first
    assert len(harness.sender.sent) == 1  # one code, not two
    # Keys are scoped to the app and the phone: another phone is another request.
    for phone in ("+8613800130000", "+8613900000000"):  # the same region, another one
        other = account_pb2.StartSignInRequest(request_id=request.request_id, phone=phone)
        third = await harness.stub.StartSignIn(other, metadata=harness.md(), timeout=5)
        assert third.challenge_id != first.challenge_id
    assert len(harness.sender.sent) == 3


async def test_a_retried_completion_returns_the_session_with_a_new_secret(harness: Harness) -> None:
    started = await harness.start()
    code = harness.sender.code(started.challenge_id)
    request_id = rid()
    lost = await harness.complete(started.challenge_id, code, request_id=request_id)
    retry = await harness.complete(started.challenge_id, code, request_id=request_id)
    assert retry.session_id == lost.session_id
    assert retry.account == lost.account
    assert retry.account_created
    assert retry.access_token != lost.access_token
    await harness.stub.GetAccount(
        account_pb2.GetAccountRequest(), metadata=harness.md(retry.access_token), timeout=5
    )
    with pytest.raises(errors.Unauthenticated) as info:
        await harness.stub.GetAccount(
            account_pb2.GetAccountRequest(), metadata=harness.md(lost.access_token), timeout=5
        )
    assert info.value.reason == "TOKEN_INVALID"
    # Another request on a used challenge is refused, whatever the code.
    with pytest.raises(errors.FailedPrecondition) as used:
        await harness.complete(started.challenge_id, code)
    assert used.value.reason == "CHALLENGE_USED"


async def test_a_code_that_cannot_be_sent_leaves_nothing_behind(harness: Harness) -> None:
    harness.sender.fail = True
    request = account_pb2.StartSignInRequest(request_id=rid(), phone=PHONE)
    with pytest.raises(errors.Unavailable) as info:
        await harness.stub.StartSignIn(request, metadata=harness.md(), timeout=5)
    assert info.value.reason == "CODE_NOT_SENT"
    assert info.value.retry_delay == 5.0
    harness.sender.fail = False
    again = await harness.stub.StartSignIn(request, metadata=harness.md(), timeout=5)
    assert harness.sender.code(again.challenge_id)  # the retry sent one


@pytest.mark.parametrize(
    "accounts_config", [AccountsConfig(codes_per_phone="2/10m", attempts_per_address="8/10m")]
)
async def test_codes_and_attempts_are_rate_limited_with_retry_info(harness: Harness) -> None:
    await harness.start()
    await harness.start()
    with pytest.raises(errors.ResourceExhausted) as info:
        await harness.start()
    assert info.value.reason == "RATE_LIMITED"
    assert info.value.metadata == {"limit": "phone"}
    assert 0 < (info.value.retry_delay or 0) <= 300  # one code per 5 minutes comes back
    await harness.start("+8613900000001")  # another phone is not limited
    # Brute force from one address across challenges: the address runs dry.
    challenge = (await harness.start("+8613900000002")).challenge_id
    for _ in range(5):
        with pytest.raises(errors.ClientError):
            await harness.complete(challenge, "000000")
    other = (await harness.start("+8613900000003")).challenge_id
    for _ in range(3):
        with pytest.raises(errors.InvalidArgument):
            await harness.complete(other, "000000")
    with pytest.raises(errors.ResourceExhausted) as limited:
        await harness.complete(other, harness.sender.code(other))
    assert limited.value.metadata == {"limit": "address"}
    assert limited.value.retry_delay is not None


async def test_an_app_is_rate_limited(harness: Harness) -> None:
    slow = await harness.accounts.apps.issue("slow", Channel.HOSPITAL_APP, Rate(2, 60.0))
    for _ in range(2):
        await harness.start(key=slow.key)
    with pytest.raises(errors.ResourceExhausted) as info:
        await harness.start("+8613900000009", key=slow.key)
    assert info.value.metadata == {"limit": "app"}
    assert info.value.retry_delay == pytest.approx(30, abs=1)


async def test_tokens_expire_and_sign_out_revokes_at_once(harness: Harness) -> None:
    a = await harness.sign_in()
    b = await harness.sign_in()
    get = account_pb2.GetAccountRequest()
    out = await harness.stub.SignOut(
        account_pb2.SignOutRequest(request_id=rid()), metadata=harness.md(a.access_token), timeout=5
    )
    assert out.revoked_sessions == 1
    with pytest.raises(errors.Unauthenticated) as info:
        await harness.stub.GetAccount(get, metadata=harness.md(a.access_token), timeout=5)
    assert info.value.reason == "TOKEN_REVOKED"
    await harness.stub.GetAccount(get, metadata=harness.md(b.access_token), timeout=5)
    c = await harness.sign_in()
    everywhere = await harness.stub.SignOut(
        account_pb2.SignOutRequest(request_id=rid(), all_sessions=True),
        metadata=harness.md(c.access_token),
        timeout=5,
    )
    assert everywhere.revoked_sessions == 2
    d = await harness.sign_in()
    harness.clock.advance(30 * 86400)
    with pytest.raises(errors.Unauthenticated) as expired:
        await harness.stub.GetAccount(get, metadata=harness.md(d.access_token), timeout=5)
    assert expired.value.reason == "TOKEN_EXPIRED"


async def test_an_operator_revocation_reaches_live_sessions_within_a_second(
    harness: Harness,
) -> None:
    signed = await harness.sign_in()
    get = account_pb2.GetAccountRequest()
    await harness.stub.GetAccount(get, metadata=harness.md(signed.access_token), timeout=5)
    # Another node (or the CLI) revokes it: this node's cache does not know.
    elsewhere = Sessions(harness.parts)
    assert await elsewhere.revoke(account_id=signed.account.account_id) == 1
    revoked_at = time.monotonic()
    await until(refused(harness, signed.access_token, "TOKEN_REVOKED"), limit=5)
    assert time.monotonic() - revoked_at < 2.5  # the cache's second, with a busy machine's margin


def refused(harness: Harness, token: str, reason: str):  # type: ignore[no-untyped-def]
    """A condition for `until`: GetAccount with ``token`` is refused for ``reason``."""

    async def check() -> bool:
        try:
            await harness.stub.GetAccount(
                account_pb2.GetAccountRequest(), metadata=harness.md(token), timeout=5
            )
        except errors.Unauthenticated as err:
            if err.reason != reason:
                raise
            return True
        return False

    return check


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "TOKEN_MISSING"),
        ("", "TOKEN_MISSING"),
        ("garbage", "TOKEN_MALFORMED"),
        ("hpa1.44-0000000000000000", "TOKEN_MALFORMED"),
        ("hpa1.xx-0000000000000000.secret", "TOKEN_MALFORMED"),
        ("hpa1.99-0000000000000000.secret", "TOKEN_MALFORMED"),
        ("hpk1.44-0000000000000000.secret", "TOKEN_MALFORMED"),
        ("hpa1.44-0000000000000000.secret", "TOKEN_INVALID"),
        ("hpa1.44-0000000000000000." + "x" * 5000, "TOKEN_MALFORMED"),
        ("hpa1.44-0000000000000000.' OR 1=1 --", "TOKEN_INVALID"),
    ],
)
async def test_bad_tokens(harness: Harness, token: str | None, reason: str) -> None:
    metadata = harness.md() if token is None else harness.md(token)
    with pytest.raises(errors.Unauthenticated) as info:
        await harness.stub.GetAccount(account_pb2.GetAccountRequest(), metadata=metadata, timeout=5)
    assert info.value.reason == reason
    assert info.value.domain == "cloud.hplus"


async def test_a_token_works_only_with_the_app_it_was_issued_through(harness: Harness) -> None:
    signed = await harness.sign_in()
    other = await harness.accounts.apps.issue("other-app", Channel.WEB, Rate(10, 1.0))
    with pytest.raises(errors.Unauthenticated) as info:
        await harness.stub.GetAccount(
            account_pb2.GetAccountRequest(),
            metadata=harness.md(signed.access_token, key=other.key),
            timeout=5,
        )
    assert info.value.reason == "TOKEN_APP_MISMATCH"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "APP_KEY_MISSING"),
        ("nonsense", "APP_KEY_INVALID"),
        ("hpk1.0000000000000000.wrong", "APP_KEY_INVALID"),
    ],
)
async def test_bad_app_keys(harness: Harness, key: str, reason: str) -> None:
    with pytest.raises(errors.Unauthenticated) as info:
        await harness.start(key=key)
    assert info.value.reason == reason


async def test_no_app_key_header_at_all(harness: Harness) -> None:
    with pytest.raises(errors.Unauthenticated) as info:
        await harness.stub.StartSignIn(
            account_pb2.StartSignInRequest(request_id=rid(), phone=PHONE), timeout=5
        )
    assert info.value.reason == "APP_KEY_MISSING"


async def test_a_revoked_app_is_refused_within_a_second(harness: Harness) -> None:
    signed = await harness.sign_in()
    apps = await harness.accounts.apps.list()
    await AppStore(harness.parts.control).revoke(apps[0].app_id)  # as the CLI does
    revoked_at = time.monotonic()
    await until(refused(harness, signed.access_token, "APP_KEY_REVOKED"), limit=5)
    assert time.monotonic() - revoked_at < 2.5


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (account_pb2.StartSignInRequest(request_id="", phone=PHONE), ["request_id"]),
        (account_pb2.StartSignInRequest(request_id="x' OR 1=1", phone=PHONE), ["request_id"]),
        (
            account_pb2.StartSignInRequest(
                request_id="00000000-0000-1000-8000-000000000000", phone=PHONE
            ),
            ["request_id"],  # a version 1 UUID
        ),
        (account_pb2.StartSignInRequest(request_id=rid(), phone=""), ["phone"]),
        (
            account_pb2.StartSignInRequest(request_id=rid(), phone="'; DROP TABLE accounts;--"),
            ["phone"],
        ),
        (account_pb2.StartSignInRequest(request_id=rid(), phone="1" * 100_000), ["phone"]),
        (
            account_pb2.StartSignInRequest(request_id="9" * 100_000, phone="x"),
            ["request_id", "phone"],
        ),
    ],
)
async def test_malformed_start_requests(
    harness: Harness, request_: account_pb2.StartSignInRequest, fields: list[str]
) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        await harness.stub.StartSignIn(request_, metadata=harness.md(), timeout=5)
    assert [v.field for v in info.value.field_violations] == fields
    assert "DROP" not in info.value.message
    assert harness.sender.sent == []


@pytest.mark.parametrize(
    ("challenge", "code", "fields"),
    [
        ("", "123456", ["challenge_id"]),
        ("44-zz", "123456", ["challenge_id"]),
        ("c" * 1000, "123456", ["challenge_id"]),
        ("44-0000000000000000", "12345", ["code"]),
        ("44-0000000000000000", "１２３４５６", ["code"]),  # noqa: RUF001 - full-width digits
        ("44-0000000000000000", "1" * 10_000, ["code"]),
    ],
)
async def test_malformed_complete_requests(
    harness: Harness, challenge: str, code: str, fields: list[str]
) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        await harness.complete(challenge, code)
    assert [v.field for v in info.value.field_violations] == fields


async def test_message_size_is_bounded_by_the_transport(harness: Harness) -> None:
    huge = account_pb2.StartSignInRequest(request_id=rid(), phone="1" * (5 * 1024 * 1024))
    with pytest.raises(errors.ResourceExhausted):
        await harness.stub.StartSignIn(huge, metadata=harness.md(), timeout=5)  # grpc's 4 MiB

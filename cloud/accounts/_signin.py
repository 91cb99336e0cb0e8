"""Sign-in by mobile number and one-time code, accounts, and the sessions that follow.

Everything here lives in the partition of the phone's region: the challenge, the account
(one per number) and its sessions. Ids carry that region (``44-3f9c…``), so a session's
token routes to its partition without a lookup.

A challenge stores only a salted SHA-256 of its code; it allows ``code_attempts`` wrong
codes (the last one burns it) until ``code_ttl`` passes. A session stores only the SHA-256
of its token's secret (`cloud.bearer`); `Sessions.authenticate` checks a token against
the store at most ``cache_seconds`` after the last check, so revocation reaches live
sessions on every node within that time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud import bearer
from cloud.accounts._apps import App
from cloud.accounts._codes import CodeSender, SentCode
from cloud.accounts._errors import RateLimited, unauthenticated
from cloud.accounts._limits import Buckets, Rate, bucket_key
from cloud.accounts._schema import ACCOUNT_PATIENTS, ACCOUNTS, CHALLENGES, SESSIONS
from cloud.accounts._validate import mask_phone, routed_id
from cloud.config import AccountsConfig
from cloud.errors import ERROR_DOMAIN
from cloud.partitions import PartitionSet, region_of_mobile
from mesh import errors

__all__ = [
    "SESSION_TOKEN_PREFIX",
    "Account",
    "Challenge",
    "Clock",
    "Session",
    "Sessions",
    "SignIn",
    "SignedIn",
    "get_account",
    "new_id",
]

log = logging.getLogger(__name__)

SESSION_TOKEN_PREFIX = "hpa1"
"""Prefix of access tokens."""

CODE_LENGTH = 6
_PRUNE_AFTER = dt.timedelta(days=1)

Clock = Callable[[], dt.datetime]
"""The current time, UTC (tests pass their own)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; we always store UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def new_id(region: str) -> str:
    """A fresh id that routes to ``region``: ``44-`` and 16 hex digits."""
    return f"{region}-{secrets.token_hex(8)}"


def _code_digest(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Challenge:
    """A sign-in challenge as StartSignIn returns it."""

    challenge_id: str
    """Its id."""
    expires_at: dt.datetime
    """When its code stops working."""
    code_length: int
    """Digits of the code."""
    attempts: int
    """Wrong codes it tolerates."""


@dataclasses.dataclass(frozen=True)
class Account:
    """A patient app account."""

    account_id: str
    """Its id (``<region>-<hex>``)."""
    phone: str = dataclasses.field(repr=False)
    """Its mobile number, E.164."""
    region: str
    """Its region (the phone's)."""
    created_at: dt.datetime
    """Its first sign-in."""
    patient_count: int = 0
    """Patients bound to it (when read with them)."""


@dataclasses.dataclass(frozen=True)
class Session:
    """A valid session: who is calling."""

    session_id: str
    """Its public id (the token's id)."""
    account_id: str
    """The account."""
    region: str
    """The account's region."""
    app_id: str
    """The app it was opened through."""
    expires_at: dt.datetime
    """When its token stops working."""


@dataclasses.dataclass(frozen=True)
class SignedIn:
    """What CompleteSignIn returns."""

    token: str = dataclasses.field(repr=False)
    """The access token (shown once)."""
    session: Session
    """The session it opens."""
    account: Account
    """The account."""
    created: bool
    """Whether this sign-in created the account."""


async def get_account(conn: AsyncConnection, account_id: str) -> Account | None:
    """The account with that id, with its patient count, read on ``conn``."""
    row = (
        await conn.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.account_id == account_id))
    ).first()
    if row is None:
        return None
    count = (
        await conn.execute(
            sa.select(sa.func.count())
            .select_from(ACCOUNT_PATIENTS)
            .where(ACCOUNT_PATIENTS.c.account_id == account_id)
        )
    ).scalar_one()
    return Account(row.account_id, row.phone, row.region, _aware(row.created_at), int(count))


class SignIn:
    """StartSignIn and CompleteSignIn.

    Args:
        parts: the partitions.
        sender: delivers codes.
        buckets: rate limits.
        config: code life, attempts, token life, rate limits.
        sessions: the session cache to keep current on a re-issued token.
        clock: the current time.
    """

    def __init__(
        self,
        parts: PartitionSet,
        *,
        sender: CodeSender,
        buckets: Buckets,
        config: AccountsConfig,
        sessions: Sessions,
        clock: Clock = _utcnow,
    ) -> None:
        self._parts = parts
        self._sender = sender
        self._buckets = buckets
        self._config = config
        self._sessions = sessions
        self._clock = clock
        self._rates = {name: Rate(*config.rate(name)) for name in _RATE_NAMES}

    async def _limit(self, kind: str, setting: str, value: str, what: str) -> None:
        wait = await self._buckets.take(bucket_key(setting, value), self._rates[setting])
        if wait is not None:
            raise RateLimited(kind, wait, what)

    async def start(self, app: App, address: str, request_id: str, phone: str) -> Challenge:
        """Send a code to ``phone`` (E.164, checked) and return the challenge.

        A retry with the same ``request_id`` (scoped to the app and the phone) returns the
        first call's challenge and sends nothing.

        Raises:
            RateLimited: too many codes for the phone or the address.
            mesh.errors.Unavailable: the code could not be sent (CODE_NOT_SENT).
        """
        region = region_of_mobile(phone)

        async def earlier(conn: AsyncConnection) -> Any:
            query = sa.select(CHALLENGES).where(
                CHALLENGES.c.app_id == app.app_id,
                CHALLENGES.c.phone == phone,
                CHALLENGES.c.request_id == request_id,
            )
            return (await conn.execute(query)).first()

        found = await self._parts.read(region, earlier)
        if found is not None:
            return self._replayed(found)
        await self._limit("phone", "codes_per_phone", phone, "sign-in codes")
        await self._limit("address", "codes_per_address", address, "sign-in codes")
        now = self._clock()
        code = f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"
        salt = secrets.token_hex(16)
        challenge_id = new_id(region)
        expires = now + dt.timedelta(seconds=self._config.code_ttl)

        async def create(conn: AsyncConnection) -> None:
            await conn.execute(
                CHALLENGES.delete().where(
                    CHALLENGES.c.phone == phone, CHALLENGES.c.created_at < now - _PRUNE_AFTER
                )
            )
            await conn.execute(
                CHALLENGES.insert().values(
                    challenge_id=challenge_id,
                    region=region,
                    phone=phone,
                    app_id=app.app_id,
                    request_id=request_id,
                    code_salt=salt,
                    code_sha256=_code_digest(salt, code),
                    created_at=now,
                    expires_at=expires,
                    attempts_left=self._config.code_attempts,
                    state="open",
                )
            )

        try:
            await self._parts.write(region, create)
        except IntegrityError:  # the same request, concurrently: the other one sent the code
            found = await self._parts.read(region, earlier)
            if found is None:
                raise
            return self._replayed(found)
        try:
            await self._sender.send(SentCode(phone, code, challenge_id, expires))
        except OSError as err:
            log.warning("cannot send a sign-in code to %s: %s", mask_phone(phone), err)

            async def forget(conn: AsyncConnection) -> None:
                await conn.execute(
                    CHALLENGES.delete().where(CHALLENGES.c.challenge_id == challenge_id)
                )

            await self._parts.write(region, forget)
            raise errors.Unavailable(
                "the sign-in code could not be sent; retry shortly",
                reason="CODE_NOT_SENT",
                domain=ERROR_DOMAIN,
                retry_delay=5.0,
            ) from None
        return Challenge(challenge_id, expires, CODE_LENGTH, self._config.code_attempts)

    def _replayed(self, row: Any) -> Challenge:
        return Challenge(
            row.challenge_id, _aware(row.expires_at), CODE_LENGTH, self._config.code_attempts
        )

    async def complete(
        self, app: App, address: str, request_id: str, challenge_id: str, code: str
    ) -> SignedIn:
        """Answer a challenge; returns a new session (creating the account if needed).

        Raises:
            RateLimited: too many attempts from the address or for the phone.
            mesh.errors.NotFound: CHALLENGE_NOT_FOUND.
            mesh.errors.InvalidArgument: CODE_INCORRECT (``attempts_left``).
            mesh.errors.FailedPrecondition: CODE_EXPIRED, TOO_MANY_ATTEMPTS, CHALLENGE_USED.
        """
        region = routed_id(challenge_id)
        assert region is not None  # checked by the servicer
        await self._limit("address", "attempts_per_address", address, "sign-in attempts")

        async def look(conn: AsyncConnection) -> Any:
            query = sa.select(CHALLENGES).where(CHALLENGES.c.challenge_id == challenge_id)
            return (await conn.execute(query)).first()

        row = await self._parts.read(region, look)
        if row is None or row.app_id != app.app_id or row.region != region:
            raise errors.NotFound(
                "no such sign-in challenge; start a new sign-in",
                reason="CHALLENGE_NOT_FOUND",
                domain=ERROR_DOMAIN,
                resource=errors.Resource("challenge", challenge_id),
            )
        await self._limit("phone", "attempts_per_phone", row.phone, "sign-in attempts")
        minted = bearer.mint(SESSION_TOKEN_PREFIX, token_id=new_id(region))

        async def decide(conn: AsyncConnection) -> tuple[str, Any]:
            query = sa.select(CHALLENGES).where(CHALLENGES.c.challenge_id == challenge_id)
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()
            ch = (await conn.execute(query)).first()
            assert ch is not None  # challenges are deleted only a day after they expire
            now = self._clock()
            right = hmac.compare_digest(ch.code_sha256, _code_digest(ch.code_salt, code))
            if ch.state == "used":
                if ch.complete_request_id != request_id or not right:
                    return "used", None
                return "ok", await self._reissue(conn, ch, minted)
            if ch.state == "burned":
                return "burned", None
            if now >= _aware(ch.expires_at):
                return "expired", None
            if not right:
                left = int(ch.attempts_left) - 1
                await conn.execute(
                    CHALLENGES.update()
                    .where(CHALLENGES.c.challenge_id == challenge_id)
                    .values(attempts_left=left, state="burned" if left <= 0 else "open")
                )
                return ("burned" if left <= 0 else "wrong"), left
            account_row = (
                await conn.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.phone == ch.phone))
            ).first()
            created = account_row is None
            if created:
                account = Account(new_id(region), ch.phone, region, now)
                await conn.execute(
                    ACCOUNTS.insert().values(
                        account_id=account.account_id,
                        region=region,
                        phone=ch.phone,
                        app_id=app.app_id,
                        created_at=now,
                    )
                )
            else:
                assert account_row is not None
                account = Account(
                    account_row.account_id, ch.phone, region, _aware(account_row.created_at)
                )
            session = Session(
                minted.token_id,
                account.account_id,
                region,
                app.app_id,
                now + dt.timedelta(seconds=self._config.token_ttl),
            )
            await conn.execute(
                SESSIONS.insert().values(
                    session_id=session.session_id,
                    region=region,
                    account_id=account.account_id,
                    app_id=app.app_id,
                    secret_sha256=minted.secret_sha256,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
            await conn.execute(
                CHALLENGES.update()
                .where(CHALLENGES.c.challenge_id == challenge_id)
                .values(state="used", complete_request_id=request_id, session_id=session.session_id)
            )
            account = await get_account(conn, account.account_id) or account
            return "ok", SignedIn(minted.token, session, account, created)

        outcome, value = await self._parts.write(region, decide)
        if outcome == "ok":
            signed: SignedIn = value
            self._sessions.forget(signed.session.session_id)
            return signed
        raise _refusal(outcome, value)

    async def _reissue(
        self, conn: AsyncConnection, ch: Any, minted: bearer.MintedToken
    ) -> SignedIn:
        """The retry of a completed sign-in: the same session, a new secret."""
        row = (
            await conn.execute(sa.select(SESSIONS).where(SESSIONS.c.session_id == ch.session_id))
        ).first()
        assert row is not None
        await conn.execute(
            SESSIONS.update()
            .where(SESSIONS.c.session_id == ch.session_id)
            .values(secret_sha256=minted.secret_sha256)
        )
        _, secret = bearer.parse(minted.token, SESSION_TOKEN_PREFIX) or ("", "")
        token = f"{SESSION_TOKEN_PREFIX}.{row.session_id}.{secret}"
        account = await get_account(conn, row.account_id)
        assert account is not None
        session = Session(
            row.session_id, row.account_id, row.region, row.app_id, _aware(row.expires_at)
        )
        created = account.created_at >= _aware(ch.created_at)
        return SignedIn(token, session, account, created)


_RATE_NAMES = ("codes_per_phone", "codes_per_address", "attempts_per_phone", "attempts_per_address")


def _refusal(outcome: str, value: Any) -> errors.StatusError:
    if outcome == "wrong":
        return errors.InvalidArgument(
            "the code is not the one sent",
            reason="CODE_INCORRECT",
            domain=ERROR_DOMAIN,
            metadata={"attempts_left": str(value)},
            field_violations=[("code", f"incorrect; {value} attempt(s) left")],
        )
    if outcome == "burned":
        return errors.FailedPrecondition(
            "too many wrong codes: this sign-in is closed; start a new one",
            reason="TOO_MANY_ATTEMPTS",
            domain=ERROR_DOMAIN,
        )
    if outcome == "expired":
        return errors.FailedPrecondition(
            "the code expired; start a new sign-in", reason="CODE_EXPIRED", domain=ERROR_DOMAIN
        )
    return errors.FailedPrecondition(
        "this sign-in was completed already; start a new one",
        reason="CHALLENGE_USED",
        domain=ERROR_DOMAIN,
    )


class Sessions:
    """Checks and revokes access tokens.

    Args:
        parts: the partitions.
        cache_seconds: how long a checked session is trusted without reading it again.
        max_cached: sessions kept in the cache (least recently used dropped).
        clock: the current time (expiry).
    """

    def __init__(
        self,
        parts: PartitionSet,
        *,
        cache_seconds: float = 1.0,
        max_cached: int = 100_000,
        clock: Clock = _utcnow,
    ) -> None:
        self._parts = parts
        self._ttl = cache_seconds
        self._max = max_cached
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def forget(self, session_id: str) -> None:
        """Drop a session from this node's cache (it changed here)."""
        self._cache.pop(session_id, None)

    async def authenticate(self, token: str | None, app: App) -> Session:
        """The session a valid access token opens, for calls through ``app``.

        Raises:
            mesh.errors.Unauthenticated: TOKEN_MISSING, TOKEN_MALFORMED, TOKEN_INVALID,
                TOKEN_REVOKED, TOKEN_EXPIRED or TOKEN_APP_MISMATCH.
        """
        if not token:
            raise unauthenticated(
                "TOKEN_MISSING", "sign in first (metadata authorization: Bearer <access_token>)"
            )
        parsed = bearer.parse(token, SESSION_TOKEN_PREFIX) if len(token) <= 200 else None
        region = None if parsed is None else routed_id(parsed[0])
        if parsed is None or region is None:
            raise unauthenticated("TOKEN_MALFORMED", "the access token is malformed")
        session_id, secret = parsed
        now = time.monotonic()
        cached = self._cache.get(session_id)
        if cached is not None and now - cached[0] < self._ttl:
            self._cache.move_to_end(session_id)
            row = cached[1]
        else:

            async def read(conn: AsyncConnection) -> Any:
                query = sa.select(SESSIONS).where(SESSIONS.c.session_id == session_id)
                return (await conn.execute(query)).first()

            row = await self._parts.read(region, read)
            if row is None or row.region != region:
                raise unauthenticated("TOKEN_INVALID", "the access token is not valid")
            self._cache[session_id] = (now, row)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        if not bearer.secret_matches(row.secret_sha256, secret):
            raise unauthenticated("TOKEN_INVALID", "the access token is not valid")
        if row.revoked_at is not None:
            raise unauthenticated("TOKEN_REVOKED", "the access token was revoked; sign in again")
        expires = _aware(row.expires_at)
        if self._clock() >= expires:
            raise unauthenticated("TOKEN_EXPIRED", "the access token expired; sign in again")
        if row.app_id != app.app_id:
            raise unauthenticated(
                "TOKEN_APP_MISMATCH", "the access token was issued to another app"
            )
        return Session(session_id, row.account_id, region, row.app_id, expires)

    async def revoke(self, *, session_id: str = "", account_id: str = "") -> int:
        """Revoke one session, or every session of an account.

        Returns:
            How many were valid and are revoked now (0 for an unknown id).

        Raises:
            ValueError: neither or both given, or an id that is not one of ours.
        """
        target = session_id or account_id
        region = routed_id(target)
        if bool(session_id) == bool(account_id) or region is None:
            raise ValueError(f"not a session or account id: {target!r}")
        column = SESSIONS.c.session_id if session_id else SESSIONS.c.account_id
        now = self._clock()

        async def revoke(conn: AsyncConnection) -> list[str]:
            ids = list(
                (
                    await conn.execute(
                        sa.select(SESSIONS.c.session_id).where(
                            column == target, SESSIONS.c.revoked_at.is_(None)
                        )
                    )
                ).scalars()
            )
            if ids:
                await conn.execute(
                    SESSIONS.update().where(SESSIONS.c.session_id.in_(ids)).values(revoked_at=now)
                )
            return ids

        revoked = await self._parts.write(region, revoke)
        for sid in revoked:
            self.forget(sid)
        return len(revoked)

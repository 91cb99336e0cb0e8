"""``hplus.cloud.v1.AccountService``: authenticates, validates, translates, calls.

Every method starts with `Authenticator.caller` (the app key, and the access token where
the method needs an account), then checks the request field by field (bounds on every
string), then calls sign-in, sessions or patients. Errors leave through the cloud's one
mapping (``CLOUD_ERRORS``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import grpc

from cloud.accounts._auth import Authenticator
from cloud.accounts._hospital import Identity
from cloud.accounts._patients import Patients, fingerprint
from cloud.accounts._signin import CODE_LENGTH, Account, Sessions, SignIn, get_account
from cloud.accounts._validate import Violations
from cloud.errors import CLOUD_ERRORS
from cloud.partitions import PartitionSet
from hplus.cloud.v1 import account_pb2, account_pb2_grpc, patient_pb2
from mesh import errors

__all__ = ["AccountServicer"]

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

_KNOWN_TYPES = frozenset(
    v for v in patient_pb2.IdCardType.values() if v != patient_pb2.ID_CARD_TYPE_UNSPECIFIED
)


def _account(account: Account) -> account_pb2.Account:
    out = account_pb2.Account(
        account_id=account.account_id,
        phone=account.phone,
        region_code=account.region,
        patient_count=account.patient_count,
    )
    out.create_time.FromDatetime(account.created_at)
    return out


@CLOUD_ERRORS.servicer
class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """The account service of the patient API.

    Args:
        auth: who is calling.
        sign_in: codes and sessions.
        sessions: access tokens (sign-out).
        patients: bound patients.
        parts: the partitions (account reads).
    """

    def __init__(
        self,
        *,
        auth: Authenticator,
        sign_in: SignIn,
        sessions: Sessions,
        patients: Patients,
        parts: PartitionSet,
    ) -> None:
        self._auth = auth
        self._sign_in = sign_in
        self._sessions = sessions
        self._patients = patients
        self._parts = parts

    async def StartSignIn(
        self, request: account_pb2.StartSignInRequest, context: Context
    ) -> account_pb2.StartSignInResponse:
        """Send a one-time code to a phone."""
        caller = await self._auth.caller(context, account=False)
        check = Violations()
        request_id = check.request_id(request.request_id)
        phone = check.phone(request.phone, "phone", required=True)
        check.raise_if_any()
        challenge = await self._sign_in.start(caller.app, caller.address, request_id, phone)
        reply = account_pb2.StartSignInResponse(
            challenge_id=challenge.challenge_id,
            code_length=challenge.code_length,
            attempts_allowed=challenge.attempts,
        )
        reply.expire_time.FromDatetime(challenge.expires_at)
        return reply

    async def CompleteSignIn(
        self, request: account_pb2.CompleteSignInRequest, context: Context
    ) -> account_pb2.CompleteSignInResponse:
        """Answer a challenge and open a session."""
        caller = await self._auth.caller(context, account=False)
        check = Violations()
        request_id = check.request_id(request.request_id)
        check.routed(request.challenge_id, "challenge_id")
        if not (
            len(request.code) == CODE_LENGTH and request.code.isascii() and request.code.isdigit()
        ):
            check.add("code", f"must be the {CODE_LENGTH} digits sent to the phone")
        check.raise_if_any()
        signed = await self._sign_in.complete(
            caller.app, caller.address, request_id, request.challenge_id, request.code
        )
        log.info(
            "account %s signed in: session %s, app %s%s",
            signed.account.account_id,
            signed.session.session_id,
            caller.app.name,
            " (new account)" if signed.created else "",
        )
        reply = account_pb2.CompleteSignInResponse(
            access_token=signed.token,
            session_id=signed.session.session_id,
            account=_account(signed.account),
            account_created=signed.created,
        )
        reply.expire_time.FromDatetime(signed.session.expires_at)
        return reply

    async def SignOut(
        self, request: account_pb2.SignOutRequest, context: Context
    ) -> account_pb2.SignOutResponse:
        """Revoke the calling session (or all of the account's)."""
        caller = await self._auth.caller(context, account=True)
        assert caller.session is not None
        check = Violations()
        check.request_id(request.request_id)
        check.raise_if_any()
        session = caller.session
        if request.all_sessions:
            revoked = await self._sessions.revoke(account_id=session.account_id)
        else:
            revoked = await self._sessions.revoke(session_id=session.session_id)
        log.info("account %s signed out %d session(s)", session.account_id, revoked)
        return account_pb2.SignOutResponse(revoked_sessions=revoked)

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: Context
    ) -> account_pb2.GetAccountResponse:
        """The calling account."""
        caller = await self._auth.caller(context, account=True)
        session = caller.session
        assert session is not None

        async def read(conn: Any) -> Account | None:
            return await get_account(conn, session.account_id)

        account = await self._parts.read(session.region, read)
        if account is None:  # a session outlives no account: accounts are never deleted
            raise errors.NotFound("no such account", resource=errors.Resource("account", ""))
        reply = account_pb2.GetAccountResponse(
            account=_account(account), session_id=session.session_id
        )
        reply.session_expire_time.FromDatetime(session.expires_at)
        return reply

    async def ListPatients(
        self, request: account_pb2.ListPatientsRequest, context: Context
    ) -> account_pb2.ListPatientsResponse:
        """The account's patients."""
        caller = await self._auth.caller(context, account=True)
        assert caller.session is not None
        patients = await self._patients.list(caller.session)
        return account_pb2.ListPatientsResponse(
            patients=patients, max_patients=self._patients.max_patients
        )

    async def BindPatient(
        self, request: account_pb2.BindPatientRequest, context: Context
    ) -> account_pb2.BindPatientResponse:
        """Bind a patient once the hospital confirms them."""
        caller = await self._auth.caller(context, account=True)
        assert caller.session is not None
        check = Violations()
        request_id = check.request_id(request.request_id)
        hospital_id = check.hospital_id(request.hospital_id, required=True)
        given = request.patient
        id_type = int(given.id_card_type)
        if id_type not in _KNOWN_TYPES:
            check.add("patient.id_card_type", "required: the kind of identity document")
        resident = id_type == patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
        who = Identity(
            name=check.name(given.name, "patient.name"),
            id_card_type=id_type,
            id_card_number=check.document(
                given.id_card_number, "patient.id_card_number", resident=resident
            ),
            phone=check.phone(given.phone, "patient.phone", required=False),
            medical_card_number=check.card(
                given.medical_card_number, "patient.medical_card_number"
            ),
        )
        birth_date = None
        if request.HasField("birth_date"):
            b = request.birth_date
            try:
                birth_date = dt.date(b.year, b.month, b.day)
            except ValueError:
                check.add("birth_date", "not a date")
            else:
                if birth_date > dt.date.today() or birth_date.year < 1880:
                    check.add("birth_date", "not a plausible date of birth")
        check.raise_if_any()
        reply = await self._patients.bind(
            caller.session,
            request_id=request_id,
            digest=fingerprint(request),
            hospital_id=hospital_id,
            who=who,
            register=request.register_if_not_found,
            birth_date=birth_date,
        )
        log.info(
            "account %s bound patient %s at %s%s (app %s)",
            caller.session.account_id,
            reply.patient.patient_id,
            hospital_id,
            ", registered there" if reply.registered_at_hospital else "",
            caller.app.name,
        )
        return reply

    async def UnbindPatient(
        self, request: account_pb2.UnbindPatientRequest, context: Context
    ) -> account_pb2.UnbindPatientResponse:
        """Remove a patient (or one hospital's binding) from the account."""
        caller = await self._auth.caller(context, account=True)
        assert caller.session is not None
        check = Violations()
        request_id = check.request_id(request.request_id)
        check.routed(request.patient_id, "patient_id")
        hospital_id = check.hospital_id(request.hospital_id, required=False)
        check.raise_if_any()
        reply = await self._patients.unbind(
            caller.session,
            request_id=request_id,
            digest=fingerprint(request),
            patient_id=request.patient_id,
            hospital_id=hospital_id,
        )
        log.info(
            "account %s unbound patient %s%s",
            caller.session.account_id,
            request.patient_id,
            f" at {hospital_id}" if hospital_id else "",
        )
        return reply

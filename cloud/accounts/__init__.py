"""Accounts of patient apps: app keys, sign-in, sessions, and bound patients.

Apps and their keys, sign-in by phone and one-time code, sessions, and the patients bound
to an account after a hospital confirms them.

The authentication every public patient-facing call uses is here, once:
`Authenticator.caller` (or `authenticate_app` / `authenticate_account` on metadata) gives
the call's `Caller` or raises a tree error (UNAUTHENTICATED with a reason, or
RESOURCE_EXHAUSTED for an app's rate limit); `CALLER` holds it for the rest of the call.
"""

from __future__ import annotations

from cloud.accounts._apps import (
    APP_KEY_PREFIX,
    App,
    AppError,
    AppStore,
    Channel,
    IssuedApp,
    migrate_apps,
)
from cloud.accounts._auth import APP_KEY_HEADER, CALLER, Authenticator, Caller, client_address
from cloud.accounts._codes import CODES_FILE, CodeSender, LogCodeSender, SentCode
from cloud.accounts._errors import RateLimited
from cloud.accounts._hospital import HospitalPatients, Identity
from cloud.accounts._limits import Buckets, InProcessBuckets, Rate, RedisBuckets
from cloud.accounts._patients import KnownHospital, Patients
from cloud.accounts._service import ACCOUNTS_SCHEMA, Accounts
from cloud.accounts._signin import (
    SESSION_TOKEN_PREFIX,
    Account,
    Challenge,
    Session,
    Sessions,
    SignedIn,
    SignIn,
)
from cloud.accounts._validate import mask_id_number, mask_phone
from cloud.accounts.servicer import AccountServicer

__all__ = [
    "ACCOUNTS_SCHEMA",
    "APP_KEY_HEADER",
    "APP_KEY_PREFIX",
    "CALLER",
    "CODES_FILE",
    "SESSION_TOKEN_PREFIX",
    "Account",
    "AccountServicer",
    "Accounts",
    "App",
    "AppError",
    "AppStore",
    "Authenticator",
    "Buckets",
    "Caller",
    "Challenge",
    "Channel",
    "CodeSender",
    "HospitalPatients",
    "Identity",
    "InProcessBuckets",
    "IssuedApp",
    "KnownHospital",
    "LogCodeSender",
    "Patients",
    "Rate",
    "RateLimited",
    "RedisBuckets",
    "SentCode",
    "Session",
    "Sessions",
    "SignIn",
    "SignedIn",
    "client_address",
    "mask_id_number",
    "mask_phone",
    "migrate_apps",
]

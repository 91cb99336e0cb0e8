"""Accounts put together: one object the node builds, serves and closes."""

from __future__ import annotations

from pathlib import Path

from cloud.accounts._apps import AppStore, migrate_apps
from cloud.accounts._auth import Authenticator
from cloud.accounts._codes import CodeSender
from cloud.accounts._hospital import ChannelFor, HospitalPatients
from cloud.accounts._limits import Buckets
from cloud.accounts._patients import KnownHospital, Patients
from cloud.accounts._schema import PARTITIONED
from cloud.accounts._signin import Clock, Sessions, SignIn, _utcnow
from cloud.accounts.servicer import AccountServicer
from cloud.config import AccountsConfig
from cloud.partitions import PartitionSchema, PartitionSet

__all__ = ["ACCOUNTS_SCHEMA", "Accounts"]

ACCOUNTS_SCHEMA = PartitionSchema(
    name="accounts",
    metadata=PARTITIONED,
    migrations=Path(__file__).resolve().parent / "migrations" / "partition",
    version_table="alembic_version_accounts",
)
"""The account tables every partition database holds."""


class Accounts:
    """Apps, sign-in, sessions, patients and the servicer, over the partitions.

    Build with `open` (which migrates the apps table in the control database).

    Args:
        parts: the partitions (opened with `ACCOUNTS_SCHEMA` among their schemas).
        config: the ``[accounts]`` settings.
        sender: delivers sign-in codes.
        buckets: rate limits (closed with the accounts).
        channel_for: the router's ``channel_for`` (calls to hospitals).
        known_hospital: whether a hospital id is one of the platform's.
        clock: the current time (tests pass their own).
    """

    def __init__(
        self,
        parts: PartitionSet,
        *,
        config: AccountsConfig,
        sender: CodeSender,
        buckets: Buckets,
        channel_for: ChannelFor,
        known_hospital: KnownHospital,
        clock: Clock = _utcnow,
    ) -> None:
        self.parts = parts
        self.buckets = buckets
        self.apps = AppStore(parts.control)
        self.sessions = Sessions(parts, clock=clock)
        self.auth = Authenticator(self.apps, self.sessions, buckets)
        self.sign_in = SignIn(
            parts,
            sender=sender,
            buckets=buckets,
            config=config,
            sessions=self.sessions,
            clock=clock,
        )
        self.patients = Patients(
            parts,
            HospitalPatients(channel_for, timeout=config.hospital_timeout),
            known_hospital,
            max_patients=config.max_patients,
            clock=clock,
        )
        self.servicer = AccountServicer(
            auth=self.auth,
            sign_in=self.sign_in,
            sessions=self.sessions,
            patients=self.patients,
            parts=parts,
        )

    @classmethod
    async def open(
        cls,
        parts: PartitionSet,
        *,
        config: AccountsConfig,
        sender: CodeSender,
        buckets: Buckets,
        channel_for: ChannelFor,
        known_hospital: KnownHospital,
        clock: Clock = _utcnow,
    ) -> Accounts:
        """Migrate the apps table and build the accounts (see the class)."""
        await migrate_apps(parts.control)
        return cls(
            parts,
            config=config,
            sender=sender,
            buckets=buckets,
            channel_for=channel_for,
            known_hospital=known_hospital,
            clock=clock,
        )

    async def close(self) -> None:
        """Release the rate limits' connections."""
        await self.buckets.close()

"""AccountService on a real grpc.aio server over real partitions (SQLite files), with the
seams we own replaced: the clock, the code sender (keeps what it would send) and the
hospitals (a PatientService of our contract on its own grpc.aio server)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloud.accounts import Accounts, Channel, InProcessBuckets, Rate, SentCode
from cloud.config import AccountsConfig
from cloud.gateway import HospitalUnavailable
from cloud.partitioned import SCHEMAS
from cloud.partitions import PartitionSet
from hplus.cloud.v1 import account_pb2, account_pb2_grpc
from hplus.hospital.v1 import common_pb2, patient_pb2, patient_pb2_grpc
from mesh import errors

PHONE = "+8613800138000"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Sender:
    """Keeps the codes it would send; ``fail`` makes it fail like a gateway that is down."""

    def __init__(self) -> None:
        self.sent: list[SentCode] = []
        self.fail = False

    async def send(self, message: SentCode) -> None:
        if self.fail:
            raise OSError("gateway down")
        self.sent.append(message)

    def code(self, challenge_id: str) -> str:
        return next(m.code for m in reversed(self.sent) if m.challenge_id == challenge_id)


@errors.ErrorMapping(domain="hospital.hplus").servicer
class Hospital(patient_pb2_grpc.PatientServiceServicer):
    """A hospital's PatientService: the records it knows, and what it answers."""

    def __init__(self) -> None:
        self.patients: dict[str, patient_pb2.Patient] = {}
        self.registrations: list[patient_pb2.RegisterPatientRequest] = []
        self.refuse: errors.StatusError | None = None

    async def FindPatient(self, request: Any, context: Any) -> patient_pb2.FindPatientResponse:
        if self.refuse is not None:
            raise self.refuse
        found = self.patients.get(request.id_card_number)
        match = [found] if found is not None and found.name == request.name else []
        return patient_pb2.FindPatientResponse(patients=match)

    async def RegisterPatient(
        self, request: Any, context: Any
    ) -> patient_pb2.RegisterPatientResponse:
        if self.refuse is not None:
            raise self.refuse
        self.registrations.append(request)
        if (
            request.id_card_type != common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
            and not request.HasField("birth_date")
        ):
            raise errors.InvalidArgument(
                reason="HIS_INVALID_ARGUMENT", field_violations=[("birth_date", "required")]
            )
        keyed = [r for r in self.registrations if r.idempotency_key == request.idempotency_key]
        existing = self.patients.get(request.id_card_number)
        if existing is not None:
            return patient_pb2.RegisterPatientResponse(patient=existing, created=len(keyed) > 1)
        patient = patient_pb2.Patient(
            patient_id=f"P{len(self.patients) + 1:06d}",
            name=request.name,
            id_card_number=request.id_card_number,
        )
        self.patients[request.id_card_number] = patient
        return patient_pb2.RegisterPatientResponse(patient=patient, created=True)


@dataclasses.dataclass
class Harness:
    parts: PartitionSet
    accounts: Accounts
    channel: grpc.aio.Channel
    key: str
    clock: Clock
    sender: Sender
    hospital: Hospital
    offline: set[str]

    @property
    def stub(self) -> account_pb2_grpc.AccountServiceAsyncStub:
        return errors.wrap(account_pb2_grpc.AccountServiceStub(self.channel))

    def md(self, token: str | None = None, key: str | None = None) -> tuple[tuple[str, str], ...]:
        out = [("x-hplus-app-key", self.key if key is None else key)]
        if token is not None:
            out.append(("authorization", f"Bearer {token}"))
        return tuple(out)

    async def start(self, phone: str = PHONE, **md: Any) -> account_pb2.StartSignInResponse:
        return await self.stub.StartSignIn(
            account_pb2.StartSignInRequest(request_id=rid(), phone=phone),
            metadata=self.md(**md),
            timeout=10,
        )

    async def complete(
        self, challenge_id: str, code: str, *, request_id: str | None = None, **md: Any
    ) -> account_pb2.CompleteSignInResponse:
        return await self.stub.CompleteSignIn(
            account_pb2.CompleteSignInRequest(
                request_id=request_id or rid(), challenge_id=challenge_id, code=code
            ),
            metadata=self.md(**md),
            timeout=10,
        )

    async def sign_in(self, phone: str = PHONE) -> account_pb2.CompleteSignInResponse:
        started = await self.start(phone)
        return await self.complete(started.challenge_id, self.sender.code(started.challenge_id))


def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def accounts_config() -> AccountsConfig:
    return AccountsConfig()


@pytest.fixture
async def harness(tmp_path: Path, accounts_config: AccountsConfig) -> AsyncIterator[Harness]:
    clock, sender, hospital = Clock(), Sender(), Hospital()
    offline: set[str] = set()
    his = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    patient_pb2_grpc.add_PatientServiceServicer_to_server(hospital, his)
    his_port = his.add_insecure_port("127.0.0.1:0")
    await his.start()
    to_his = grpc.aio.insecure_channel(f"127.0.0.1:{his_port}")

    async def channel_for(hospital_id: str) -> grpc.aio.Channel:
        if hospital_id in offline:
            raise HospitalUnavailable(hospital_id)
        return to_his

    async def known(hospital_id: str) -> bool:
        return hospital_id in {"city-first", "river-county"}

    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("south", "north")}
    parts = await PartitionSet.open(
        f"sqlite+aiosqlite:///{tmp_path / 'control.db'}", first_urls=urls, schemas=SCHEMAS
    )
    accounts = await Accounts.open(
        parts,
        config=accounts_config,
        sender=sender,
        buckets=InProcessBuckets(),
        channel_for=channel_for,
        known_hospital=known,
        clock=clock,
    )
    issued = await accounts.apps.issue("test-app", Channel.WEB, Rate(1000, 1.0))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    account_pb2_grpc.add_AccountServiceServicer_to_server(accounts.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(parts, accounts, channel, issued.key, clock, sender, hospital, offline)
    finally:
        await channel.close()
        await server.stop(0)
        await to_his.close()
        await his.stop(0)
        await accounts.close()
        await parts.close()


Call = Callable[..., Any]

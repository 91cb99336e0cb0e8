"""Binding patients: the hospital confirms (or registers) them; every write once per request."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from google.type import date_pb2

from cloud.accounts._schema import ACCOUNT_PATIENTS, PATIENTS
from cloud.config import AccountsConfig
from hplus.cloud.v1 import account_pb2, patient_pb2
from hplus.hospital.v1 import patient_pb2 as his_pb2
from mesh import errors
from tests.unit.cloud.accounts.conftest import Harness, rid
from tools.his_sim import id_card_check_digit

RESIDENT = patient_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD
PASSPORT = patient_pb2.ID_CARD_TYPE_PASSPORT


def resident(first17: str) -> str:
    return first17 + id_card_check_digit(first17)


GUANGDONG = resident("44030519900101123")  # lives in the south's region 44
BEIJING = resident("11010519850505432")  # lives in the north's region 11
WRONG_CHECK = GUANGDONG[:-1] + ("0" if GUANGDONG[-1] != "0" else "1")


def identity(
    number: str = GUANGDONG, name: str = "张三", **kw: object
) -> patient_pb2.PatientIdentity:
    return patient_pb2.PatientIdentity(
        name=name,
        id_card_type=kw.pop("id_card_type", RESIDENT),  # type: ignore[arg-type]
        id_card_number=number,
        **kw,  # type: ignore[arg-type]
    )


async def bind(
    harness: Harness,
    token: str,
    *,
    hospital: str = "city-first",
    who: patient_pb2.PatientIdentity | None = None,
    register: bool = False,
    request_id: str | None = None,
    **kw: object,
) -> account_pb2.BindPatientResponse:
    return await harness.stub.BindPatient(
        account_pb2.BindPatientRequest(
            request_id=request_id or rid(),
            hospital_id=hospital,
            patient=who or identity(),
            register_if_not_found=register,
            **kw,  # type: ignore[arg-type]
        ),
        metadata=harness.md(token),
        timeout=10,
    )


async def listed(harness: Harness, token: str) -> account_pb2.ListPatientsResponse:
    return await harness.stub.ListPatients(
        account_pb2.ListPatientsRequest(), metadata=harness.md(token), timeout=5
    )


def known_at_hospital(harness: Harness, number: str, name: str, patient_id: str) -> None:
    harness.hospital.patients[number] = his_pb2.Patient(
        patient_id=patient_id, name=name, id_card_number=number
    )


async def test_a_patient_the_hospital_knows_is_bound_with_its_patient_id(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    known_at_hospital(harness, GUANGDONG, "张三", "P000042")
    reply = await bind(harness, token, who=identity(phone="+8613912345678"))
    patient = reply.patient
    assert not reply.registered_at_hospital
    assert patient.patient_id.startswith("44-")  # the ID card's region, not the account's 36
    assert patient.region_code == "44"
    assert patient.name == "张三"
    assert patient.id_card_number_masked == "4403************" + GUANGDONG[-2:]
    assert patient.phone_masked == "+86139****5678"
    assert [(h.hospital_id, h.hospital_patient_id) for h in patient.hospitals] == [
        ("city-first", "P000042")
    ]
    assert harness.hospital.registrations == []
    got = await listed(harness, token)
    assert list(got.patients) == [patient]
    assert got.max_patients == 10
    account = await harness.stub.GetAccount(
        account_pb2.GetAccountRequest(), metadata=harness.md(token), timeout=5
    )
    assert account.account.patient_count == 1


async def test_binding_at_a_second_hospital_adds_it_to_the_same_patient(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    known_at_hospital(harness, BEIJING, "李四", "P1")
    first = await bind(harness, token, who=identity(BEIJING, "李四"))
    harness.hospital.patients[BEIJING].patient_id = "R9"
    second = await bind(harness, token, hospital="river-county", who=identity(BEIJING, "李四"))
    assert second.patient.patient_id == first.patient.patient_id
    assert first.patient.patient_id.startswith("11-")  # north, while the account is south
    assert [(h.hospital_id, h.hospital_patient_id) for h in second.patient.hospitals] == [
        ("city-first", "P1"),
        ("river-county", "R9"),
    ]
    assert len((await listed(harness, token)).patients) == 1


async def test_an_unknown_patient_is_registered_only_when_asked_and_only_once(
    harness: Harness,
) -> None:
    token = (await harness.sign_in()).access_token
    request_id = rid()
    with pytest.raises(errors.NotFound) as info:
        await bind(harness, token, request_id=request_id)
    assert info.value.reason == "PATIENT_NOT_FOUND_AT_HOSPITAL"
    # The refusal is the request's outcome: the same request gets it again.
    with pytest.raises(errors.NotFound):
        await bind(harness, token, request_id=request_id)
    # Asking to register is another request.
    request_id = rid()
    reply = await bind(harness, token, register=True, request_id=request_id)
    assert reply.registered_at_hospital
    again = await bind(harness, token, register=True, request_id=request_id)
    assert again == reply
    assert len(harness.hospital.registrations) == 1
    key = harness.hospital.registrations[0].idempotency_key
    assert key.startswith("bind-")
    assert request_id not in key


async def test_a_lost_answer_is_retried_with_the_same_registration_key(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    request_id = rid()
    harness.offline.add("city-first")
    with pytest.raises(errors.Unavailable) as info:
        await bind(harness, token, register=True, request_id=request_id)
    assert info.value.reason == "HOSPITAL_NOT_CONNECTED"
    assert info.value.resource is not None
    assert info.value.resource.resource_name == "city-first"
    harness.offline.clear()
    # The hospital registered it but its answer was lost: the retry reuses the key.
    harness.hospital.refuse = errors.Unavailable("the HIS timed out", reason="HIS_UNAVAILABLE")
    with pytest.raises(errors.Unavailable):
        await bind(harness, token, register=True, request_id=request_id)
    harness.hospital.refuse = None
    reply = await bind(harness, token, register=True, request_id=request_id)
    assert reply.patient.hospitals[0].hospital_id == "city-first"
    keys = {r.idempotency_key for r in harness.hospital.registrations}
    assert len(keys) == 1


async def test_the_hospitals_refusal_is_passed_on_with_our_field_names(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    passport = identity("E12345678", "John Smith", id_card_type=PASSPORT)
    with pytest.raises(errors.InvalidArgument) as info:
        await bind(harness, token, who=passport, register=True)
    assert [(v.field, v.description) for v in info.value.field_violations] == [
        ("birth_date", "required")
    ]
    assert (info.value.reason, info.value.domain) == ("HIS_INVALID_ARGUMENT", "hospital.hplus")
    reply = await bind(
        harness,
        token,
        who=passport,
        register=True,
        birth_date=date_pb2.Date(year=1980, month=2, day=3),
    )
    assert reply.patient.region_code == "36"  # a passport: the account's region
    harness.hospital.refuse = errors.FailedPrecondition(
        "known under another name", reason="IDENTITY_MISMATCH"
    )
    with pytest.raises(errors.FailedPrecondition) as mismatch:
        await bind(harness, token, who=identity(BEIJING, "王五"), register=True)
    assert mismatch.value.reason == "IDENTITY_MISMATCH"
    harness.hospital.refuse = errors.InvalidArgument(
        field_violations=[("id_card_number", "refused by the HIS (vendor code 40001)"), ("x", "y")]
    )
    with pytest.raises(errors.InvalidArgument) as renamed:
        await bind(harness, token, who=identity(BEIJING, "王五"), register=True)
    assert [v.field for v in renamed.value.field_violations] == [
        "patient.id_card_number",
        "hospital.x",
    ]


async def test_unknown_hospital_is_not_found(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    with pytest.raises(errors.NotFound) as info:
        await bind(harness, token, hospital="nowhere")
    assert info.value.resource is not None
    assert (info.value.resource.resource_type, info.value.resource.resource_name) == (
        "hospital",
        "nowhere",
    )


async def test_a_request_id_reused_for_another_request_is_refused(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    known_at_hospital(harness, GUANGDONG, "张三", "P1")
    request_id = rid()
    await bind(harness, token, request_id=request_id)
    with pytest.raises(errors.InvalidArgument) as info:
        await bind(harness, token, request_id=request_id, hospital="river-county")
    assert info.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_unbinding(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    known_at_hospital(harness, GUANGDONG, "张三", "P1")
    await bind(harness, token)
    patient = (await bind(harness, token, hospital="river-county")).patient
    unbind = account_pb2.UnbindPatientRequest(
        request_id=rid(), patient_id=patient.patient_id, hospital_id="river-county"
    )
    one = await harness.stub.UnbindPatient(unbind, metadata=harness.md(token), timeout=5)
    assert not one.removed
    assert [h.hospital_id for h in one.patient.hospitals] == ["city-first"]
    assert await harness.stub.UnbindPatient(unbind, metadata=harness.md(token), timeout=5) == one
    with pytest.raises(errors.NotFound):  # a new request for a binding that is gone
        await harness.stub.UnbindPatient(
            account_pb2.UnbindPatientRequest(
                request_id=rid(), patient_id=patient.patient_id, hospital_id="river-county"
            ),
            metadata=harness.md(token),
            timeout=5,
        )
    whole = account_pb2.UnbindPatientRequest(request_id=rid(), patient_id=patient.patient_id)
    gone = await harness.stub.UnbindPatient(whole, metadata=harness.md(token), timeout=5)
    assert gone.removed
    assert list((await listed(harness, token)).patients) == []


async def test_another_accounts_patient_is_not_found(harness: Harness) -> None:
    mine = (await harness.sign_in()).access_token
    theirs = (await harness.sign_in("+8613900000001")).access_token
    known_at_hospital(harness, GUANGDONG, "张三", "P1")
    patient = (await bind(harness, theirs)).patient
    for patient_id in (patient.patient_id, "11-" + patient.patient_id[3:], "44-0000000000000000"):
        with pytest.raises(errors.NotFound) as info:
            await harness.stub.UnbindPatient(
                account_pb2.UnbindPatientRequest(request_id=rid(), patient_id=patient_id),
                metadata=harness.md(mine),
                timeout=5,
            )
        assert info.value.reason == "PATIENT_NOT_FOUND"
    assert len((await listed(harness, theirs)).patients) == 1


@pytest.mark.parametrize("accounts_config", [AccountsConfig(max_patients=2)])
async def test_an_account_holds_at_most_max_patients(harness: Harness) -> None:
    token = (await harness.sign_in()).access_token
    for i, number in enumerate((GUANGDONG, BEIJING)):
        known_at_hospital(harness, number, "张三", f"P{i}")
        await bind(harness, token, who=identity(number))
    third = resident("31010119700101001")
    known_at_hospital(harness, third, "张三", "P3")
    with pytest.raises(errors.FailedPrecondition) as info:
        await bind(harness, token, who=identity(third))
    assert info.value.reason == "TOO_MANY_PATIENTS"
    assert info.value.metadata == {"max_patients": "2"}
    # A patient already bound can still gain hospitals.
    await bind(harness, token, hospital="river-county", who=identity(GUANGDONG))


@pytest.mark.parametrize(
    ("who", "extra", "fields"),
    [
        (identity(name=""), {}, ["patient.name"]),
        (identity(name="x" * 65), {}, ["patient.name"]),
        (identity(name="Robert'); DROP TABLE patients;--"), {}, ["patient.name"]),
        (identity(name="张" * 100_000), {}, ["patient.name"]),
        (identity(WRONG_CHECK), {}, ["patient.id_card_number"]),
        (identity("1" * 40, id_card_type=PASSPORT), {}, ["patient.id_card_number"]),
        (identity("E1' OR '1'='1", id_card_type=PASSPORT), {}, ["patient.id_card_number"]),
        (identity(id_card_type=0), {}, ["patient.id_card_type"]),
        (identity(id_card_type=99), {}, ["patient.id_card_type"]),
        (identity(phone="12345"), {}, ["patient.phone"]),
        (identity(medical_card_number="A" * 33), {}, ["patient.medical_card_number"]),
        (identity(), {"hospital_id": "city' OR 1=1 --"}, ["hospital_id"]),
        (identity(), {"hospital_id": "h" * 65}, ["hospital_id"]),
        (identity(), {"request_id": "not-a-uuid"}, ["request_id"]),
        (identity(), {"birth_date": date_pb2.Date(year=2020, month=2, day=30)}, ["birth_date"]),
        (identity(), {"birth_date": date_pb2.Date(year=3000, month=1, day=1)}, ["birth_date"]),
    ],
)
async def test_malformed_bind_requests_name_each_field(
    harness: Harness, who: patient_pb2.PatientIdentity, extra: dict[str, object], fields: list[str]
) -> None:
    token = (await harness.sign_in()).access_token
    request = account_pb2.BindPatientRequest(
        request_id=str(extra.pop("request_id", rid())),
        hospital_id=str(extra.pop("hospital_id", "city-first")),
        patient=who,
        **extra,  # type: ignore[arg-type]
    )
    with pytest.raises(errors.InvalidArgument) as info:
        await harness.stub.BindPatient(request, metadata=harness.md(token), timeout=5)
    assert [v.field for v in info.value.field_violations] == fields
    assert "DROP" not in str(info.value)
    assert harness.hospital.registrations == []


async def test_names_in_other_scripts_and_sql_looking_text_are_stored_verbatim(
    harness: Harness,
) -> None:
    token = (await harness.sign_in()).access_token
    name = "O'Brien-Smith"
    passport = identity("E1234567", name, id_card_type=PASSPORT)
    known_at_hospital(harness, "E1234567", name, "P7")
    reply = await bind(harness, token, who=passport)
    assert reply.patient.name == name
    for region in ("36",):

        async def rows(conn):  # type: ignore[no-untyped-def]
            patients = (await conn.execute(sa.select(PATIENTS.c.name))).scalars().all()
            links = (
                await conn.execute(sa.select(sa.func.count()).select_from(ACCOUNT_PATIENTS))
            ).scalar()
            return patients, links

        assert await harness.parts.read(region, rows) == ([name], 1)
    assert (await listed(harness, token)).patients[0].name == "O'Brien-Smith"
    uyghur = identity(resident("65010219900101123"), "买买提·吐尔逊")
    known_at_hospital(harness, uyghur.id_card_number, uyghur.name, "P8")
    assert (await bind(harness, token, who=uyghur)).patient.name == "买买提·吐尔逊"

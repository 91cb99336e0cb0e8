"""DialectSettings validation, code tables, the public surface and log hygiene."""

from __future__ import annotations

import logging

import pytest

import frontend_server.adapters as adapters
from frontend_server.adapters import (
    DialectSettings,
    HisProtocolError,
    PatientRegistration,
    RejectReason,
    RestHisAdapter,
    SoapHisAdapter,
    make_adapter,
    mask_identifier,
)
from frontend_server.adapters._codec import Codec
from tests.unit.frontend_server.adapters.helpers import settings_for
from tools.his_sim import SimBase, id_card_check_digit


def test_public_surface_is_pinned() -> None:
    assert sorted(adapters.__all__) == sorted(
        [
            "CAPABILITY_NAMES",
            "DEFAULT_CODE_TABLES",
            "DEFAULT_REST_PATHS",
            "DEFAULT_SOAP_TRADE_CODES",
            "DOCUMENTED_FIELDS",
            "NEUTRAL_CODES",
            "Appointment",
            "Bill",
            "BillItem",
            "Capabilities",
            "Changes",
            "Charge",
            "DailyLedger",
            "DbHisAdapter",
            "DeletedEntity",
            "Department",
            "DialectName",
            "DialectSettings",
            "Doctor",
            "HisAdapter",
            "HisCapabilityError",
            "HisError",
            "HisProtocolError",
            "HisRejected",
            "HisTimeout",
            "HisUnavailable",
            "ImagingResult",
            "LabResult",
            "LedgerEntry",
            "Money",
            "Observation",
            "Patient",
            "PatientCard",
            "PatientRegistration",
            "Payment",
            "Quote",
            "Refund",
            "RegisteredPatient",
            "RejectReason",
            "Report",
            "ReportSummary",
            "RestHisAdapter",
            "Schedule",
            "Slot",
            "SoapHisAdapter",
            "make_adapter",
            "mask_identifier",
        ]
    )
    for name in adapters.__all__:
        assert getattr(adapters, name) is not None


@pytest.mark.parametrize(
    ("overrides", "parameter"),
    [
        ({"dialect": "grpc"}, "dialect"),
        ({"url": ""}, "url"),
        ({"read_timeout_seconds": 0}, "read_timeout_seconds"),
        ({"write_timeout_seconds": -1.0}, "write_timeout_seconds"),
        ({"code_tables": {"gender": {"9": "X"}}}, "code_tables.gender"),
        ({"code_tables": {"colour": {"1": "RED"}}}, "code_tables.colour"),
        ({"rest_paths": {"teleport": "/x"}}, "rest_paths"),
        ({"disabled_capabilities": frozenset({"flying"})}, "disabled_capabilities"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"dialect": "db", "table_prefix": "x; DROP"}, "table_prefix"),
        ({"dialect": "db", "field_names": {"DEPT_NAME": 'A" OR 1'}}, "field_names"),
        ({"db_poll_initial_seconds": 1.0, "db_poll_max_seconds": 0.5}, "db_poll_initial"),
        ({"entity_fields": {"ward": {"name": "x"}}}, "entity_fields.ward"),
        ({"entity_fields": {"department": {"colour": "x"}}}, "entity_fields.department.colour"),
        ({"entity_fields": {"charge": {"payment_method": "payType"}}}, "charge.payment_method"),
        (
            {
                "entity_fields": {
                    "department": {"department_id": "deptId"},
                    "schedule": {"department_id": "deptNo"},
                }
            },
            "schedule.department_id",
        ),
    ],
)
def test_bad_settings_name_the_parameter(overrides: dict[str, object], parameter: str) -> None:
    values: dict[str, object] = {"dialect": "rest", "url": "http://his.invalid"}
    values.update(overrides)
    with pytest.raises(ValueError, match=parameter):
        DialectSettings(**values)  # type: ignore[arg-type]


def test_settings_are_frozen_and_override_defaults_per_entry() -> None:
    settings = DialectSettings(
        dialect="rest",
        url="http://his.invalid",
        code_tables={"title": {"235": "OTHER"}, "error": {"42299": "SLOT_FULL"}},
        disabled_capabilities=frozenset({"refund_query_by_key"}),
    )
    title = settings.merged_code_table("title")
    assert title["231"] == "CHIEF"
    assert title["235"] == "OTHER"
    with pytest.raises(TypeError):
        settings.code_tables["title"]["236"] = "OTHER"  # type: ignore[index]
    codec = Codec(settings, money_in_fen=False)
    assert codec.error_reason("42299") == RejectReason.SLOT_FULL
    assert codec.error_reason("99999") == RejectReason.UNKNOWN
    assert codec.encode("payer", "EMPLOYEE", operation="t") == "02"
    assert codec.money_out(adapters.Money(4900)) == "49.00"
    with pytest.raises(HisProtocolError, match="title"):
        codec.decode("title", "999", field="titleCode", operation="list_doctors")
    adapter = RestHisAdapter(settings)
    assert not adapter.capabilities.refund_query_by_key
    assert adapter.capabilities.charge_query_by_key


def test_entity_fields_translate_to_vendor_names() -> None:
    settings = DialectSettings(
        dialect="rest",
        url="http://his.invalid",
        entity_fields={"charge": {"payment_method": "pay.payType"}, "patient": {"name": "xm"}},
        field_names={"name": "patientName"},
    )
    assert dict(settings.resolved_field_names()) == {
        "payment": "pay",
        "payMode": "payType",
        "name": "patientName",  # field_names wins for the same vendor name
    }
    assert adapters.DOCUMENTED_FIELDS["soap"]["patient"]["id_number"] == "ZJHM"


def test_adapter_refuses_settings_of_another_dialect() -> None:
    with pytest.raises(ValueError, match="dialect"):
        SoapHisAdapter(DialectSettings(dialect="rest", url="http://his.invalid"))


def test_mask_identifier() -> None:
    assert mask_identifier("110101199003071234") == "110*************34"
    assert mask_identifier("13800138000") == "138******00"
    assert mask_identifier("张三") == "**"


async def test_logs_never_carry_patient_identifiers(
    his: SimBase, caplog: pytest.LogCaptureFixture
) -> None:
    first17 = "110101" + "19851120" + "246"
    id_number = first17 + id_card_check_digit(first17)
    registration = PatientRegistration(name="日志测试", id_number=id_number, phone="13912345678")
    caplog.set_level(logging.DEBUG)
    async with make_adapter(settings_for(his)) as adapter:
        registered = await adapter.register_patient(registration)
        await adapter.find_patients(id_number=id_number)
        await adapter.find_patients(phone="13912345678", name="日志测试")
        logging.getLogger("test").info("registered %r", registered)
    assert "register_patient" in caplog.text  # the adapter does log its calls
    for secret in (id_number, "日志测试", "13912345678", registered.patient.card_number):
        assert secret not in caplog.text

"""The simulators' faults, seen through the adapters: the same errors on every dialect."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from frontend_server.adapters import (
    HisAdapter,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    Payment,
    make_adapter,
)
from tests.unit.frontend_server.adapters.helpers import dead_url, settings_for
from tools.his_sim import DbHis, Latency, Outage, RenameField, SimBase, TimeoutAfterCommit

PATIENT = "P00000010"
SHORT = 0.4  # seconds: the adapter deadline in fault scenarios
# The deadline of a write whose answer the HIS withholds after committing: long enough for a
# DB dialect to store the request on a loaded machine (0.4 s was not), short enough to wait.
AFTER_COMMIT = 2.0

# A required field of the department listing, and what a vendor upgrade renames it to.
RENAMED = {
    "rest": ("deptName", "departmentName"),
    "soap": ("KSMC", "KSMCH"),
    "db": ("DEPT_NAME", "DEPT_TITLE"),
}
QUERY_BY_KEY = {"rest": True, "soap": True, "db": False}


async def test_outage_is_unavailable_and_changes_nothing(his: SimBase, adapter: HisAdapter) -> None:
    slot = his.core.bookable_slot(patient_id=PATIENT)
    await his.inject(Outage("503"))
    with pytest.raises(HisUnavailable):
        await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="out-1")
    with pytest.raises(HisUnavailable):
        await adapter.get_report("R00000001", patient_id="P00000001")
    assert his.core.counts().holds == 0

    await his.clear_faults()
    held = await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="out-2")
    assert held.status == "HELD"


async def test_nothing_listening_is_unavailable(his: SimBase, tmp_path: Path) -> None:
    with dead_url(his.dialect, str(tmp_path)) as url:
        async with make_adapter(settings_for(his, url=url)) as adapter:
            with pytest.raises(HisUnavailable):
                await adapter.list_departments()


async def test_refused_connections(his: SimBase, adapter: HisAdapter) -> None:
    """HTTP: the socket closes, so calls fail fast. DB: requests are simply not picked up."""
    assert await adapter.list_departments()  # keeps a connection alive across the outage
    await his.inject(Outage("refuse"))
    if isinstance(his, DbHis):
        slot = his.core.bookable_slot(patient_id=PATIENT)
        async with make_adapter(settings_for(his, write_timeout_seconds=SHORT)) as short:
            with pytest.raises(HisTimeout) as info:
                await short.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="ref-1")
        assert info.value.write
        assert his.core.counts().holds == 0
        return
    with pytest.raises(HisUnavailable):
        await adapter.list_departments()
    with pytest.raises(HisUnavailable):
        await adapter.list_departments()


async def test_latency_beyond_the_deadline_is_a_timeout(his: SimBase) -> None:
    await his.inject(Latency(3.0, frozenset({"get_report"})))
    async with make_adapter(settings_for(his, read_timeout_seconds=SHORT)) as adapter:
        started = time.monotonic()
        with pytest.raises(HisTimeout) as info:
            await adapter.get_report("R00000001", patient_id="P00000001")
        elapsed = time.monotonic() - started
    assert not info.value.write
    assert info.value.operation == "get_report"
    assert SHORT <= elapsed < 2.0


@pytest.mark.parametrize("mode", ["hang", "drop"])
async def test_timeout_after_commit_booking_happened_once(his: SimBase, mode: str) -> None:
    slot = his.core.bookable_slot(patient_id=PATIENT)
    # Only the faulted call runs under the short deadline: on a loaded machine the calls
    # around it may take longer than SHORT, and must not time out for that reason.
    async with (
        make_adapter(settings_for(his)) as adapter,
        make_adapter(settings_for(his, write_timeout_seconds=AFTER_COMMIT)) as short,
    ):
        held = await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="tac:hold")
        await his.inject(TimeoutAfterCommit(frozenset({"book"}), mode=mode))
        payment = Payment("WECHAT", held.fee_cash, transaction_id="wx-tac")
        with pytest.raises(HisTimeout) as info:
            await short.book(
                patient_id=PATIENT, key="tac:book", hold_id=held.hold_id, payment=payment
            )
        assert info.value.write
        assert info.value.operation == "book"

        # The answer was lost, but the HIS holds exactly one booking.
        assert len(his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1

        # Evidence: by our key where the HIS keeps it, else from what the HIS lists.
        if QUERY_BY_KEY[his.dialect]:
            found = await adapter.find_appointment_by_key("tac:book")
            assert found is not None
            assert (found.status, found.slot_id) == ("BOOKED", slot.slot_id)
        else:
            listed = await adapter.list_appointments(PATIENT)
            assert [(a.status, a.slot_id) for a in listed if a.status == "BOOKED"] == [
                ("BOOKED", slot.slot_id)
            ]

        # A blind retry is refused and books nothing more.
        with pytest.raises(HisRejected):
            await adapter.book(
                patient_id=PATIENT, key="tac:book", hold_id=held.hold_id, payment=payment
            )
        assert len(his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1


async def test_timeout_after_commit_charge_happened_once(his: SimBase) -> None:
    async with (
        make_adapter(settings_for(his)) as adapter,
        make_adapter(settings_for(his, write_timeout_seconds=AFTER_COMMIT)) as short,
    ):
        bill = (await adapter.list_bills(PATIENT))[0]
        quote = await adapter.quote(patient_id=PATIENT, bill_ids=[bill.bill_id])
        await his.inject(TimeoutAfterCommit(frozenset({"settle"}), mode="drop"))
        with pytest.raises(HisTimeout):
            await short.settle(
                patient_id=PATIENT,
                bill_ids=[bill.bill_id],
                payment=Payment("WECHAT", quote.cash, transaction_id="wx-s"),
                key="tac:settle",
            )
        charges = his.core.charges_of(PATIENT)
        assert len(charges) == 1
        if QUERY_BY_KEY[his.dialect]:
            found = await adapter.find_charge_by_key("tac:settle")
            assert found is not None
            assert found.charge_id == charges[0].charge_id
        else:
            found = await adapter.get_charge(charges[0].charge_id)
            assert found.bill_ids == (bill.bill_id,)


async def test_renamed_field_is_a_protocol_error_fixed_by_settings(his: SimBase) -> None:
    old, new = RENAMED[his.dialect]
    await his.inject(RenameField(old, new))
    async with make_adapter(settings_for(his)) as adapter:
        with pytest.raises(HisProtocolError) as info:
            await adapter.list_departments()
    assert info.value.field == old
    assert repr(old) in str(info.value)
    assert info.value.operation == "list_departments"

    expected = {d.dept_id: d.name for d in his.core.list_departments()}
    async with make_adapter(settings_for(his, field_names={old: new})) as adapter:
        departments = await adapter.list_departments()
    assert {d.department_id: d.name for d in departments} == expected

    # The same fix addressed the way the contract (and a hospital profile) names fields.
    by_entity = {"department": {"name": new}}
    async with make_adapter(settings_for(his, entity_fields=by_entity)) as adapter:
        departments = await adapter.list_departments()
    assert {d.department_id: d.name for d in departments} == expected


# The same override serves requests too: an HIS that renamed a request parameter.
REQUEST_RENAMED = {
    "rest": ("patientId", "patId"),
    "soap": ("BRID", "BRBH"),
    "db": ("PATIENT_ID", "PAT_ID"),
}


async def test_renamed_request_field_fixed_by_settings(his: SimBase) -> None:
    old, new = REQUEST_RENAMED[his.dialect]
    await his.inject(RenameField(old, new))
    slot = his.core.bookable_slot(patient_id=PATIENT)
    async with make_adapter(settings_for(his)) as adapter:
        with pytest.raises((HisRejected, HisProtocolError)):
            await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="rn-1")
    assert his.core.counts().holds == 0
    async with make_adapter(settings_for(his, field_names={old: new})) as adapter:
        held = await adapter.hold(slot_id=slot.slot_id, patient_id=PATIENT, key="rn-2")
    assert (held.status, held.patient_id) == ("HELD", PATIENT)
    assert his.core.counts().holds == 1


# A wrong interface setting (base path, SOAP method, table prefix) is an interface mismatch.
MISCONFIGURED = {
    "rest": {"rest_base_path": "/openapi/v9"},
    "soap": {"soap_method": "HisInvoke"},
    "db": {"table_prefix": "NOPE_"},
}


async def test_misconfigured_interface_is_a_protocol_error(his: SimBase) -> None:
    async with make_adapter(settings_for(his, **MISCONFIGURED[his.dialect])) as adapter:
        with pytest.raises(HisProtocolError):
            await adapter.list_departments()
        with pytest.raises(HisProtocolError):
            await adapter.hold(slot_id="H0000001", patient_id=PATIENT, key="mis-1")
    assert his.core.counts().holds == 0

"""The hospital contract suite: the same scenarios, through the tunnel, on every dialect.

Each test runs a simulated HIS, a cloud node and the example hospital's edge (its profile
pointed at the simulator), and calls the hospital through the node as the cloud does. The
outcomes are checked against the contract and counted against what the HIS holds.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from frontend_server.profile import load_profile
from hplus.hospital.v1 import (
    admin_pb2,
    appointment_pb2,
    billing_pb2,
    common_pb2,
    directory_pb2,
    patient_pb2,
    report_pb2,
    task_pb2,
    task_pb2_grpc,
)
from tests.integration.hospital_env import (
    REPO,
    Env,
    cloud_node,
    error_reason,
    field_violations,
    his_url,
    hospital,
    simulator,
    write_profile,
)
from tools.his_sim import ArchiveReport, Latency, TimeoutAfterCommit

DIALECTS = ("rest", "soap", "db")
PATIENT = "P00000010"
T = 15.0  # deadline of every call


@pytest.fixture(params=DIALECTS)
async def env(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    async with hospital(request.param, tmp_path) as e:
        yield e


def ref(patient_id: str = PATIENT) -> common_pb2.PatientRef:
    return common_pb2.PatientRef(patient_id=patient_id)


def wechat(amount: object, tx: str) -> common_pb2.Payment:
    payment = common_pb2.Payment(
        method=common_pb2.PAYMENT_METHOD_WECHAT_PAY, transaction_id=tx, merchant_order_id=tx
    )
    payment.amount.CopyFrom(amount)  # type: ignore[arg-type]
    return payment


async def listed_slot(env: Env):  # type: ignore[no-untyped-def]
    """A free slot for PATIENT, listed through the edge first as a client does (the edge's
    appointment rules find a slot's session from its listing), two days ahead so the
    example profiles' cancellation cutoffs (up to a day) never refuse the tests' cancels."""
    slot = env.his.core.bookable_slot(patient_id=PATIENT, min_days_ahead=2)
    await env.directory.ListSlots(
        directory_pb2.ListSlotsRequest(schedule_id=slot.schedule_id), timeout=T
    )
    return slot


async def book(env: Env, key: str, slot_id: str, tx: str) -> appointment_pb2.Appointment:
    """Holds and books where the hospital holds, books the slot directly where it cannot."""
    if env.can_hold:
        held = await env.appointments.HoldSlot(
            appointment_pb2.HoldSlotRequest(
                idempotency_key=f"{key}:hold", slot_id=slot_id, patient=ref()
            ),
            timeout=T,
        )
        assert held.appointment.status == appointment_pb2.APPOINTMENT_STATUS_HELD
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key=key,
            hold_id=held.appointment.hold_id,
            patient=ref(),
            payment=wechat(held.appointment.fee.cash_amount, tx),
        )
    else:
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key=key, slot_id=slot_id, patient=ref()
        )
    booked = await env.appointments.BookAppointment(request, timeout=T)
    return booked.appointment


async def test_directory_lists_departments_doctors_schedules_and_slots(env: Env) -> None:
    deps = await env.directory.ListDepartments(directory_pb2.ListDepartmentsRequest(), timeout=T)
    assert {"0101", "0300", "0500"} <= {d.department_id for d in deps.departments}
    assert all(d.bookable for d in deps.departments)
    docs = await env.directory.ListDoctors(
        directory_pb2.ListDoctorsRequest(department_id="0101"), timeout=T
    )
    assert docs.doctors
    assert all("0101" in d.department_ids for d in docs.doctors)
    assert all(d.title != directory_pb2.DOCTOR_TITLE_UNSPECIFIED for d in docs.doctors)
    schedules = await env.directory.ListSchedules(
        directory_pb2.ListSchedulesRequest(department_id="0101"), timeout=T
    )
    assert schedules.schedules
    first = schedules.schedules[0]
    assert first.period in (common_pb2.SESSION_PERIOD_MORNING, common_pb2.SESSION_PERIOD_AFTERNOON)
    assert first.fee.total_amount.currency_code == "CNY"
    slots = await env.directory.ListSlots(
        directory_pb2.ListSlotsRequest(schedule_id=first.schedule_id), timeout=T
    )
    assert slots.slots
    assert all(s.schedule_id == first.schedule_id for s in slots.slots)
    # Paging: one department per page, until the token runs out.
    seen, token = [], ""
    while True:
        page = await env.directory.ListDepartments(
            directory_pb2.ListDepartmentsRequest(page_size=5, page_token=token), timeout=T
        )
        seen.extend(d.department_id for d in page.departments)
        token = page.next_page_token
        if not token:
            break
    assert seen == [d.department_id for d in deps.departments]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.directory.ListSlots(directory_pb2.ListSlotsRequest(), timeout=T)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(info.value) == ["schedule_id"]


async def test_hold_book_replay_evidence_and_cancel(env: Env) -> None:
    slot = await listed_slot(env)
    booked = await book(env, "o-1:book", slot.slot_id, "wx-1")
    assert booked.status == appointment_pb2.APPOINTMENT_STATUS_BOOKED
    assert booked.slot_id == slot.slot_id
    assert booked.appointment_id
    assert len(env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1

    # A retry with the same key replays the original answer and books nothing more.
    again = await book(env, "o-1:book", slot.slot_id, "wx-1") if not env.can_hold else None
    if again is not None:
        assert again == booked
    # The evidence read answers from the ledger.
    got = await env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(idempotency_key="o-1:book"), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert got.operation.method == "hplus.hospital.v1.AppointmentService/BookAppointment"
    assert got.appointment.appointment_id == booked.appointment_id
    assert len(env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1
    # The same key with other parameters is refused.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.appointments.BookAppointment(
            appointment_pb2.BookAppointmentRequest(
                idempotency_key="o-1:book", slot_id="other", patient=ref()
            ),
            timeout=T,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(info.value) == "IDEMPOTENCY_KEY_REUSED"

    listed = await env.appointments.ListPatientAppointments(
        appointment_pb2.ListPatientAppointmentsRequest(patient=ref()), timeout=T
    )
    assert booked.appointment_id in {a.appointment_id for a in listed.appointments}

    cancelled = await env.appointments.CancelAppointment(
        appointment_pb2.CancelAppointmentRequest(
            idempotency_key="o-1:cancel", appointment_id=booked.appointment_id, patient=ref()
        ),
        timeout=T,
    )
    assert cancelled.appointment.status == appointment_pb2.APPOINTMENT_STATUS_CANCELLED
    assert not cancelled.empty_compensation
    assert env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id) == []
    by_id = await env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(appointment_id=booked.appointment_id), timeout=T
    )
    assert by_id.appointment.status == appointment_pb2.APPOINTMENT_STATUS_CANCELLED
    assert not by_id.HasField("operation")


async def test_refusals_carry_reasons_and_are_replayed(env: Env) -> None:
    if env.can_hold:
        slot = await listed_slot(env)
        held = await env.appointments.HoldSlot(
            appointment_pb2.HoldSlotRequest(
                idempotency_key="r:hold", slot_id=slot.slot_id, patient=ref()
            ),
            timeout=T,
        )
        await env.appointments.ReleaseHold(
            appointment_pb2.ReleaseHoldRequest(
                idempotency_key="r:release", hold_id=held.appointment.hold_id
            ),
            timeout=T,
        )
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key="r:book",
            hold_id=held.appointment.hold_id,
            patient=ref(),
            payment=wechat(held.appointment.fee.cash_amount, "wx-r"),
        )
        expected = (grpc.StatusCode.FAILED_PRECONDITION, "HOLD_EXPIRED")
    else:
        with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
            await env.appointments.HoldSlot(
                appointment_pb2.HoldSlotRequest(idempotency_key="r:h", slot_id="x", patient=ref()),
                timeout=T,
            )
        assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
        slot = await listed_slot(env)
        await book(env, "r:first", slot.slot_id, "wx-r0")
        # The real-name rule: one booking per patient per doctor (clinic) per day.
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key="r:book", slot_id=slot.slot_id, patient=ref()
        )
        expected = (grpc.StatusCode.FAILED_PRECONDITION, "BOOKING_RULE_VIOLATED")
    for _ in range(2):  # the refusal is recorded and replayed unchanged
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await env.appointments.BookAppointment(request, timeout=T)
        assert (info.value.code(), error_reason(info.value)) == expected
    got = await env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(idempotency_key="r:book"), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_FAILED
    assert not got.HasField("appointment")


async def test_compensation_of_a_key_never_received_fences_it(env: Env) -> None:
    slot = await listed_slot(env)
    got = await env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(idempotency_key="lost:book"), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_NOT_RECEIVED
    comp = await env.appointments.CancelAppointment(
        appointment_pb2.CancelAppointmentRequest(
            idempotency_key="lost:comp", target_idempotency_key="lost:book", patient=ref()
        ),
        timeout=T,
    )
    assert comp.empty_compensation
    assert not comp.HasField("appointment")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.appointments.BookAppointment(
            appointment_pb2.BookAppointmentRequest(
                idempotency_key="lost:book", slot_id=slot.slot_id, patient=ref()
            ),
            timeout=T,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(info.value) == "IDEMPOTENCY_KEY_FENCED"
    assert env.his.core.bookings(patient_id=PATIENT) == []

    # Compensating a booking that happened cancels it.
    booked = await book(env, "c:book", slot.slot_id, "wx-c")
    comp = await env.appointments.CancelAppointment(
        appointment_pb2.CancelAppointmentRequest(
            idempotency_key="c:comp", target_idempotency_key="c:book", patient=ref()
        ),
        timeout=T,
    )
    assert not comp.empty_compensation
    assert comp.appointment.appointment_id == booked.appointment_id
    assert comp.appointment.status == appointment_pb2.APPOINTMENT_STATUS_CANCELLED
    assert env.his.core.bookings(patient_id=PATIENT) == []


async def test_timeout_after_commit_then_retry_returns_the_original_receipt(env: Env) -> None:
    slot = await listed_slot(env)
    if env.can_hold:
        held = await env.appointments.HoldSlot(
            appointment_pb2.HoldSlotRequest(
                idempotency_key="t:hold", slot_id=slot.slot_id, patient=ref()
            ),
            timeout=T,
        )
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key="t:book",
            hold_id=held.appointment.hold_id,
            patient=ref(),
            payment=wechat(held.appointment.fee.cash_amount, "wx-t"),
        )
    else:
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key="t:book", slot_id=slot.slot_id, patient=ref()
        )
    await env.his.inject(TimeoutAfterCommit(frozenset({"book"}), mode="drop"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.appointments.BookAppointment(request, timeout=T)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(info.value) == "OPERATION_OUTCOME_UNKNOWN"
    # The write happened although its answer was lost; the edge says UNKNOWN, not "failed".
    assert len(env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1
    got = await env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(idempotency_key="t:book"), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_UNKNOWN

    # The retry resolves the key against the HIS and returns the original booking.
    retried = await env.appointments.BookAppointment(request, timeout=T)
    (held_by_his,) = env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)
    assert retried.appointment.appointment_id == held_by_his.appt_id
    assert retried.appointment.status == appointment_pb2.APPOINTMENT_STATUS_BOOKED
    again = await env.appointments.BookAppointment(request, timeout=T)
    assert again == retried
    assert env.his.core.counts().bookings == 1
    got = await env.appointments.GetAppointment(
        appointment_pb2.GetAppointmentRequest(idempotency_key="t:book"), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert got.appointment.appointment_id == held_by_his.appt_id


async def test_compensating_a_write_whose_answer_was_lost_undoes_it(env: Env) -> None:
    slot = await listed_slot(env)
    request = appointment_pb2.BookAppointmentRequest(
        idempotency_key="u:book", slot_id=slot.slot_id, patient=ref()
    )
    if env.can_hold:
        held = await env.appointments.HoldSlot(
            appointment_pb2.HoldSlotRequest(
                idempotency_key="u:hold", slot_id=slot.slot_id, patient=ref()
            ),
            timeout=T,
        )
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key="u:book",
            hold_id=held.appointment.hold_id,
            patient=ref(),
            payment=wechat(held.appointment.fee.cash_amount, "wx-u"),
        )
    await env.his.inject(TimeoutAfterCommit(frozenset({"book"}), mode="drop"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.appointments.BookAppointment(request, timeout=T)
    assert error_reason(info.value) == "OPERATION_OUTCOME_UNKNOWN"
    assert len(env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1
    # The cloud gives up on the booking: the edge finds out that it happened and undoes it
    # (an empty compensation here would leave a paid-for booking nobody knows about).
    comp = await env.appointments.CancelAppointment(
        appointment_pb2.CancelAppointmentRequest(
            idempotency_key="u:comp", target_idempotency_key="u:book", patient=ref()
        ),
        timeout=T,
    )
    assert not comp.empty_compensation
    assert comp.appointment.status == appointment_pb2.APPOINTMENT_STATUS_CANCELLED
    assert env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id) == []


async def test_charge_settle_evidence_and_refund(env: Env) -> None:
    bills = await env.billing.ListPayableBills(
        billing_pb2.ListPayableBillsRequest(patient=ref()), timeout=T
    )
    assert bills.bills
    bill = bills.bills[0]
    quote = await env.billing.QuoteCharge(
        billing_pb2.QuoteChargeRequest(
            idempotency_key="b:quote", patient=ref(), bill_ids=[bill.bill_id]
        ),
        timeout=T,
    )
    settle = billing_pb2.SettleChargeRequest(
        idempotency_key="b:settle",
        patient=ref(),
        bill_ids=[bill.bill_id],
        quote_id=quote.quote_id,
        payment=wechat(quote.fee.cash_amount, "wx-b"),
    )
    charge = (await env.billing.SettleCharge(settle, timeout=T)).charge
    assert charge.status == billing_pb2.CHARGE_STATUS_SETTLED
    assert charge.idempotency_key == "b:settle"
    assert (await env.billing.SettleCharge(settle, timeout=T)).charge == charge
    assert len(env.his.core.charges_of(PATIENT)) == 1
    got = await env.billing.GetCharge(
        billing_pb2.GetChargeRequest(idempotency_key="b:settle"), timeout=T
    )
    assert got.operation.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert got.charge.charge_id == charge.charge_id
    by_id = await env.billing.GetCharge(
        billing_pb2.GetChargeRequest(charge_id=charge.charge_id), timeout=T
    )
    assert by_id.charge.fee.cash_amount == charge.fee.cash_amount

    refund = (
        await env.billing.RefundCharge(
            billing_pb2.RefundChargeRequest(
                idempotency_key="b:refund", charge_id=charge.charge_id, patient=ref()
            ),
            timeout=T,
        )
    ).refund
    assert refund.status == billing_pb2.REFUND_STATUS_SUCCEEDED
    assert refund.fee.cash_amount == charge.fee.cash_amount
    got_refund = await env.billing.GetRefund(
        billing_pb2.GetRefundRequest(idempotency_key="b:refund"), timeout=T
    )
    assert got_refund.operation.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert got_refund.refund.refund_id == refund.refund_id
    # Nothing is left to refund.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.billing.RefundCharge(
            billing_pb2.RefundChargeRequest(
                idempotency_key="b:refund2", charge_id=charge.charge_id, patient=ref()
            ),
            timeout=T,
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(info.value) == "REFUND_EXCEEDS_CHARGE"
    # A refund of a settle never received is an empty compensation.
    empty = await env.billing.RefundCharge(
        billing_pb2.RefundChargeRequest(
            idempotency_key="b:comp", target_idempotency_key="b:never", patient=ref()
        ),
        timeout=T,
    )
    assert empty.empty_compensation


async def test_reports_live_archived_and_queued_retrieval(env: Env) -> None:
    patient = next(
        p
        for p in (f"P{n:08d}" for n in range(1, 31))
        if any(not r.archived and r.status == "FINAL" for r in _reports(env, p))
    )
    listed = await env.reports.ListReports(
        report_pb2.ListReportsRequest(patient=ref(patient), start_date=_date(2000, 1, 1)),
        timeout=T,
    )
    live = next(
        r for r in listed.reports if r.availability == report_pb2.REPORT_AVAILABILITY_AVAILABLE
    )
    got = await env.reports.GetReport(
        report_pb2.GetReportRequest(report_id=live.report_id, patient=ref(patient)), timeout=T
    )
    assert got.report.summary.report_id == live.report_id
    assert got.report.WhichOneof("content") in ("lab", "imaging")

    await env.his.inject(ArchiveReport(report_id=live.report_id, after_seconds=0))
    archived = await env.reports.GetReport(
        report_pb2.GetReportRequest(report_id=live.report_id, patient=ref(patient)), timeout=T
    )
    assert archived.report.summary.availability == report_pb2.REPORT_AVAILABILITY_ARCHIVED
    assert archived.report.WhichOneof("content") is None

    submit = task_pb2.SubmitTaskRequest(
        idempotency_key="rep:1",
        kind=task_pb2.TASK_KIND_RETRIEVE_ARCHIVED_REPORT,
        retrieve_archived_report=task_pb2.RetrieveArchivedReportSpec(
            report_id=live.report_id, patient=ref(patient)
        ),
    )
    task = (await env.tasks.SubmitTask(submit, timeout=T)).task
    assert task.state in (task_pb2.TASK_STATE_QUEUED, task_pb2.TASK_STATE_RUNNING)
    assert (await env.tasks.SubmitTask(submit, timeout=T)).task.task_id == task.task_id
    await env.app.queue.wait_idle()
    done = await env.tasks.GetTask(task_pb2.GetTaskRequest(idempotency_key="rep:1"), timeout=T)
    assert done.operation.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert done.task.state == task_pb2.TASK_STATE_SUCCEEDED
    result = done.task.retrieve_archived_report_result.report
    assert result.summary.report_id == live.report_id
    assert result.WhichOneof("content") in ("lab", "imaging")
    listed_tasks = await env.tasks.ListTasks(task_pb2.ListTasksRequest(), timeout=T)
    assert [t.task_id for t in listed_tasks.tasks] == [task.task_id]


async def test_patients_are_found_and_registration_is_idempotent(env: Env) -> None:
    known = env.his.core.patients[PATIENT]
    found = await env.patients.FindPatient(
        patient_pb2.FindPatientRequest(id_card_number=known.id_number), timeout=T
    )
    assert [p.patient_id for p in found.patients] == [PATIENT]
    request = patient_pb2.RegisterPatientRequest(
        idempotency_key="p:1",
        name=known.name,
        id_card_type=common_pb2.ID_CARD_TYPE_RESIDENT_ID_CARD,
        id_card_number=known.id_number,
    )
    first = await env.patients.RegisterPatient(request, timeout=T)
    assert (first.patient.patient_id, first.created) == (PATIENT, False)
    assert await env.patients.RegisterPatient(request, timeout=T) == first
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.patients.FindPatient(patient_pb2.FindPatientRequest(), timeout=T)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _reports(env: Env, patient_id: str) -> list:  # type: ignore[type-arg]
    return [r for r in env.his.core.reports.values() if r.patient_id == patient_id]


def _date(year: int, month: int, day: int):  # type: ignore[no-untyped-def]
    from google.type import date_pb2

    return date_pb2.Date(year=year, month=month, day=day)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_realtime_reads_are_paced_by_the_his_limits(dialect: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    extra = "[his.limits]\nrate_per_second = 50.0\nburst = 5\nmax_concurrency = 4\n"
    async with hospital(dialect, tmp_path, extra=extra) as env:
        report = _final_reports(env.his)[0]
        env.his.request_log.clear()
        await asyncio.gather(
            *(
                env.reports.GetReport(
                    report_pb2.GetReportRequest(
                        report_id=report.report_id, patient=ref(report.patient_id)
                    ),
                    timeout=T,
                )
                for _ in range(30)
            )
        )
        times = sorted(
            r.monotonic
            for r in env.his.request_log
            if r.operation in ("list_reports", "get_report")
        )
        assert len(times) >= 30
        window = 0.2
        busiest = max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))
        assert busiest <= 5 + 50 * window + 1, f"{busiest} HIS reads in {window}s"


# -- the queue under load and across a crash ---------------------------------------------

BURST_RATE = 250.0
BURST_SIZE = 10


def _archive_requests(env_his: object) -> list[float]:
    log = env_his.request_log  # type: ignore[attr-defined]
    return sorted(r.monotonic for r in log if r.operation == "retrieve_archived_report")


def _final_reports(his: object) -> list:  # type: ignore[type-arg]
    """Issued reports (a report still in the lab has no content to retrieve)."""
    core = his.core  # type: ignore[attr-defined]
    return sorted(
        (r for r in core.reports.values() if r.status == "FINAL"), key=lambda r: r.report_id
    )


def _submit(key: str, report_id: str, patient_id: str) -> task_pb2.SubmitTaskRequest:
    return task_pb2.SubmitTaskRequest(
        idempotency_key=key,
        retrieve_archived_report=task_pb2.RetrieveArchivedReportSpec(
            report_id=report_id, patient=ref(patient_id)
        ),
    )


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_burst_of_1000_report_requests_never_exceeds_the_his_rate(
    dialect: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    extra = (
        f"[tasks]\ndrain_rate_per_second = {BURST_RATE}\nburst = {BURST_SIZE}\n"
        "max_concurrency = 4\n"
    )
    async with hospital(dialect, tmp_path, extra=extra) as env:
        reports = _final_reports(env.his)
        requests = [
            _submit(f"burst:{i}", r.report_id, r.patient_id)
            for i, r in enumerate(reports[i % len(reports)] for i in range(1000))
        ]
        for start in range(0, len(requests), 100):
            answers = await asyncio.gather(
                *(env.tasks.SubmitTask(r, timeout=T) for r in requests[start : start + 100])
            )
            assert all(a.task.state != task_pb2.TASK_STATE_FAILED for a in answers)
        info = await env.admin.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=T)
        assert info.queue.drain_rate_per_second == BURST_RATE
        await env.app.queue.wait_idle()
        stats = await env.app.queue.stats()
        assert (stats.backlog, stats.running, stats.parked) == (0, 0, 0)
        times = _archive_requests(env.his)
        assert len(times) == 1000  # every task ran exactly once
        # In any one-second window the HIS saw at most rate + burst archive reads (plus a
        # little for the transport's jitter between the edge's start and the HIS's arrival).
        limit = BURST_RATE * 1.05 + BURST_SIZE
        busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
        assert busiest <= limit, f"{busiest} archive reads in one second (limit {limit})"
        span = times[-1] - times[0]
        assert span >= (1000 - BURST_SIZE) / BURST_RATE * 0.95


async def _until(condition, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Waits for a condition another process makes true (no event crosses the process)."""
    async with asyncio.timeout(limit):
        while not await condition():  # noqa: ASYNC110 - nothing to wait on across processes
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _edge_process(node, profile_path: Path, token_file: Path, data_dir: Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", "edge", "run",
        "--cloud", f"localhost:{node.port}",
        "--credential", str(token_file),
        "--ca", str(node.tls.ca_cert),
        "--profile", str(profile_path),
        "--data-dir", str(data_dir),
        "--edge-id", "edge-proc",
        cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# The queue and its crash recovery are the edge's own and the same for every dialect, and
# each run costs two edge processes: one dialect keeps the suite within its time budget.
@pytest.mark.parametrize("dialect", ["rest"])
async def test_killing_the_edge_with_queued_tasks_loses_and_repeats_none(
    dialect: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    extra = (
        "[tasks]\ndrain_rate_per_second = 20.0\nmax_concurrency = 2\nlease_seconds = 1.0\n"
        "idle_poll_seconds = 0.1\nbackoff_initial_seconds = 0.1\n"
    )
    async with simulator(dialect) as his, cloud_node(tmp_path / "cloud") as node:
        await his.inject(Latency(seconds=0.2, operations=frozenset({"retrieve_archived_report"})))
        profile_path = write_profile(tmp_path, dialect, his_url(his), extra=extra)
        hospital_id = load_profile(profile_path).hospital_id
        token_file = tmp_path / "token"
        token_file.write_text((await node.credentials.issue(hospital_id)).token)
        data_dir = tmp_path / "edge"
        reports = _final_reports(his)[:30]
        keys = [f"k:{r.report_id}" for r in reports]

        async def connected() -> bool:
            try:
                await node.router.channel_for(hospital_id)
            except Exception:
                return False
            return True

        async def states(stub: task_pb2_grpc.TaskServiceStub) -> dict[str, task_pb2.Task]:
            out = {}
            for key in keys:
                got = await stub.GetTask(task_pb2.GetTaskRequest(idempotency_key=key), timeout=T)
                out[key] = got.task
            return out

        async with _edge_process(node, profile_path, token_file, data_dir) as first:
            await _until(connected)
            stub = task_pb2_grpc.TaskServiceStub(await node.router.channel_for(hospital_id))
            for key, r in zip(keys, reports, strict=True):
                await stub.SubmitTask(_submit(key, r.report_id, r.patient_id), timeout=T)

            async def some_done() -> bool:
                return len(_archive_requests(his)) >= 8

            await _until(some_done)
            first.kill()  # SIGKILL: no drain, leases held, attempts in flight
            await first.wait()
        before_kill = len(_archive_requests(his))
        assert before_kill < len(keys), "the queue drained before the kill: nothing was tested"

        async def gone() -> bool:
            try:
                await node.router.channel_for(hospital_id)
            except Exception:
                return True
            return False

        await _until(gone)
        async with _edge_process(node, profile_path, token_file, data_dir) as second:
            await _until(connected)
            stub = task_pb2_grpc.TaskServiceStub(await node.router.channel_for(hospital_id))
            finished_before = {
                k: t for k, t in (await states(stub)).items()
                if t.state == task_pb2.TASK_STATE_SUCCEEDED
            }  # fmt: skip

            async def all_done() -> bool:
                tasks = await states(stub)
                return all(t.state == task_pb2.TASK_STATE_SUCCEEDED for t in tasks.values())

            await _until(all_done)
            final = await states(stub)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
        # Every task finished; none whose result was recorded ran again. The only repeats at
        # the HIS are attempts the kill cut off before their outcome was recorded (running,
        # or answered but not yet committed): at most one each.
        assert len(final) == len(keys)
        for key, task in finished_before.items():
            assert final[key].attempts == task.attempts
            assert final[key].complete_time == task.complete_time
        cut_off = before_kill - len(finished_before)
        assert cut_off >= 0
        assert len(keys) <= len(_archive_requests(his)) <= len(keys) + cut_off
        # The edge pushes each result to the cloud's EdgeService as it finishes; the cloud
        # submitted none of these keys, so it answers NOT_FOUND and the edge drops the body
        # (the contract's rule): a result still here must be the right one.
        assert all(
            f.retrieve_archived_report_result.report.summary.report_id in ("", r.report_id)
            for f, r in zip((final[k] for k in keys), reports, strict=True)
        )


async def test_directory_digest_matches_the_change_feed_and_buckets_filter_it(env: Env) -> None:
    """GetDirectoryDigest's bucket digests are exactly those of GetChanges' content digests,
    and a bucket filter returns only (and all of) the entities of those buckets."""
    from mesh.digest import bucket_digests, bucket_of

    changes: list[directory_pb2.EntityChange] = []
    token = ""
    while True:
        page = await env.directory.GetChanges(
            directory_pb2.GetChangesRequest(page_token=token, page_size=5000), timeout=60.0
        )
        changes.extend(page.changes)
        token = page.next_page_token
        if not token:
            break
    assert changes
    assert all(len(c.content_digest) == 32 for c in changes)
    digest = await env.directory.GetDirectoryDigest(
        directory_pb2.GetDirectoryDigestRequest(bucket_count=16), timeout=60.0
    )
    assert digest.bucket_count == 16
    assert len(digest.kinds) == 4
    for kind in digest.kinds:
        mine = [(c.entity_id, c.content_digest) for c in changes if c.kind == kind.kind]
        assert kind.count == len(mine)
        assert list(kind.bucket_digests) == bucket_digests(mine, 16)

    wanted = [3, 11]
    filtered = await env.directory.GetChanges(
        directory_pb2.GetChangesRequest(
            page_size=5000,
            kinds=[directory_pb2.ENTITY_KIND_DOCTOR],
            buckets=directory_pb2.BucketFilter(bucket_count=16, buckets=wanted),
        ),
        timeout=60.0,
    )
    expected = {
        c.entity_id
        for c in changes
        if c.kind == directory_pb2.ENTITY_KIND_DOCTOR and bucket_of(c.entity_id, 16) in wanted
    }
    assert {c.entity_id for c in filtered.changes} == expected
    assert filtered.snapshot

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.directory.GetChanges(
            directory_pb2.GetChangesRequest(
                buckets=directory_pb2.BucketFilter(bucket_count=16, buckets=[16])
            ),
            timeout=T,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(info.value) == ["buckets.buckets"]

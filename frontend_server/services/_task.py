"""``hplus.hospital.v1.TaskService`` over the pending-task queue, and the queue's executor."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from frontend_server.adapters import (
    HisAdapter,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.services import _convert as convert
from frontend_server.services._core import Hospital, require_key, require_mode
from frontend_server.services._errors import HOSPITAL_ERRORS, InvalidRequest, rejection
from frontend_server.tasks import (
    Executor,
    PermanentTaskError,
    Task,
    TaskRun,
    TaskState,
    TransientTaskError,
)
from hplus.hospital.v1 import common_pb2, report_pb2, task_pb2, task_pb2_grpc
from mesh import errors

__all__ = ["CUSTOM_TASKS", "TaskServicer", "result_message", "task_executor"]

Ctx = grpc.aio.ServicerContext

_KINDS = {
    "retrieve_archived_report": task_pb2.TASK_KIND_RETRIEVE_ARCHIVED_REPORT,
    "export_medical_record": task_pb2.TASK_KIND_EXPORT_MEDICAL_RECORD,
}
_KIND_NAMES = {v: k for k, v in _KINDS.items()}
_STATES = {
    TaskState.QUEUED: task_pb2.TASK_STATE_QUEUED,
    TaskState.RUNNING: task_pb2.TASK_STATE_RUNNING,
    TaskState.SUCCEEDED: task_pb2.TASK_STATE_SUCCEEDED,
    TaskState.FAILED: task_pb2.TASK_STATE_FAILED,
    TaskState.PARKED: task_pb2.TASK_STATE_PARKED,
}
_STATE_NAMES = {v: k for k, v in _STATES.items()}
_SPECS = {
    "retrieve_archived_report": task_pb2.RetrieveArchivedReportSpec,
    "export_medical_record": task_pb2.ExportMedicalRecordSpec,
}
_REPORT_TYPES = {"LAB": report_pb2.REPORT_TYPE_LAB, "IMAGING": report_pb2.REPORT_TYPE_IMAGING}

CUSTOM_TASKS: dict[str, tuple[str, type[Message], type[Message]]] = {
    report_pb2.ListReportsRequest.DESCRIPTOR.full_name: (
        "list_reports",
        report_pb2.ListReportsRequest,
        report_pb2.ListReportsResponse,
    ),
    report_pb2.GetReportRequest.DESCRIPTOR.full_name: (
        "get_report",
        report_pb2.GetReportRequest,
        report_pb2.GetReportResponse,
    ),
}
"""``custom`` task specs this edge runs, by type name: the queue's kind, the spec and the
result types. The cloud's report lookups ride on them, so a flood of patients reading
reports is drained at the hospital's rate like any other pending task."""

_RESULT_TYPES: dict[str, type[Message]] = {
    "retrieve_archived_report": task_pb2.RetrieveArchivedReportResult,
    "export_medical_record": task_pb2.ExportMedicalRecordResult,
    **{kind: result for kind, _, result in CUSTOM_TASKS.values()},
}


def result_message(kind: str, result: bytes) -> Message | None:
    """A stored task result as its contract message (``None`` for an unknown kind)."""
    cls = _RESULT_TYPES.get(kind)
    return None if cls is None else cls.FromString(result)


def _stamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def to_task(task: Task, *, summary_only: bool = False) -> task_pb2.Task:
    """The contract's view of a stored task."""
    out = task_pb2.Task(
        task_id=task.task_id,
        idempotency_key=task.idempotency_key,
        kind=_KINDS.get(task.kind, task_pb2.TASK_KIND_UNSPECIFIED),
        state=_STATES[task.state],
        priority=task.priority,
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        trace_id=task.trace_id,
    )
    if task.last_error is not None:
        out.last_error.CopyFrom(
            status_pb2.Status(
                code=code_pb2.Code.Value(task.last_error.code), message=task.last_error.message
            )
        )
    if not summary_only:
        if task.kind == "retrieve_archived_report":
            out.retrieve_archived_report.ParseFromString(task.payload)
            if task.state is TaskState.SUCCEEDED and task.result is not None:
                out.retrieve_archived_report_result.ParseFromString(task.result)
        elif task.kind == "export_medical_record":
            out.export_medical_record.ParseFromString(task.payload)
            if task.state is TaskState.SUCCEEDED and task.result is not None:
                out.export_medical_record_result.ParseFromString(task.result)
        else:
            for _, (kind, spec_type, result_type) in CUSTOM_TASKS.items():
                if task.kind == kind:
                    out.kind = task_pb2.TASK_KIND_CUSTOM
                    out.custom.Pack(spec_type.FromString(task.payload))
                    if task.state is TaskState.SUCCEEDED and task.result is not None:
                        out.custom_result.Pack(result_type.FromString(task.result))
    for field, value in (
        ("create_time", task.create_time),
        ("start_time", task.start_time),
        ("update_time", task.update_time),
        ("complete_time", task.complete_time),
        ("deadline", task.deadline),
    ):
        stamp = _stamp(value)
        if stamp is not None:
            getattr(out, field).CopyFrom(stamp)
    if task.state is TaskState.QUEUED and task.attempts:
        out.next_attempt_time.FromNanoseconds(round(task.next_attempt_at * 1e9))
    return out


@HOSPITAL_ERRORS.servicer
class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    """Accepts non-real-time work into the queue and reports on it.

    Args:
        hospital: the servicers' collaborators.
    """

    def __init__(self, hospital: Hospital) -> None:
        self._h = hospital

    async def SubmitTask(
        self,
        request: task_pb2.SubmitTaskRequest,
        context: Ctx[task_pb2.SubmitTaskRequest, task_pb2.SubmitTaskResponse],
    ) -> task_pb2.SubmitTaskResponse:
        """Accepts a task at once (a repeat of the key returns the original task)."""
        require_key(request.idempotency_key)
        case = request.WhichOneof("spec")
        if case is None:
            raise InvalidRequest([("spec", "required")])
        if case == "custom":
            return await self._submit_custom(request)
        if request.kind and _KIND_NAMES.get(request.kind) != case:
            raise InvalidRequest([("kind", f"does not match the spec ({case})")])
        if not 0 <= request.priority <= 9:
            raise InvalidRequest([("priority", "must be 0..9")])
        require_mode(self._h.profile, case)
        spec = getattr(request, case)
        if not spec.patient.patient_id:
            raise InvalidRequest([(f"spec.{case}.patient.patient_id", "required")])
        if case == "retrieve_archived_report" and not spec.report_id:
            raise InvalidRequest([("spec.retrieve_archived_report.report_id", "required")])
        deadline = None
        if request.HasField("deadline"):
            deadline = request.deadline.ToNanoseconds() / 1e9
        task, _ = await self._h.queue.submit(
            idempotency_key=request.idempotency_key,
            kind=case,
            payload=spec.SerializeToString(deterministic=True),
            priority=request.priority,
            deadline=deadline,
        )
        return task_pb2.SubmitTaskResponse(task=to_task(task))

    async def _submit_custom(
        self, request: task_pb2.SubmitTaskRequest
    ) -> task_pb2.SubmitTaskResponse:
        """A custom task this edge knows (`CUSTOM_TASKS`): a report lookup."""
        type_name = request.custom.TypeName()
        known = CUSTOM_TASKS.get(type_name)
        if known is None:
            raise InvalidRequest(
                [("spec.custom", f"this edge runs no custom tasks of type {type_name!r}")]
            )
        if request.kind not in (task_pb2.TASK_KIND_UNSPECIFIED, task_pb2.TASK_KIND_CUSTOM):
            raise InvalidRequest([("kind", "does not match the spec (custom)")])
        if not 0 <= request.priority <= 9:
            raise InvalidRequest([("priority", "must be 0..9")])
        kind, spec_type, _ = known
        require_mode(self._h.profile, kind)
        spec = spec_type()
        if not request.custom.Unpack(spec):
            raise InvalidRequest([("spec.custom", "undecodable")])
        patient = getattr(spec, "patient", None)
        if patient is None or not patient.patient_id:
            raise InvalidRequest([("spec.custom.patient.patient_id", "required")])
        if kind == "get_report" and not getattr(spec, "report_id", ""):
            raise InvalidRequest([("spec.custom.report_id", "required")])
        deadline = None
        if request.HasField("deadline"):
            deadline = request.deadline.ToNanoseconds() / 1e9
        task, _ = await self._h.queue.submit(
            idempotency_key=request.idempotency_key,
            kind=kind,
            payload=spec.SerializeToString(deterministic=True),
            priority=request.priority,
            deadline=deadline,
        )
        return task_pb2.SubmitTaskResponse(task=to_task(task))

    async def GetTask(
        self,
        request: task_pb2.GetTaskRequest,
        context: Ctx[task_pb2.GetTaskRequest, task_pb2.GetTaskResponse],
    ) -> task_pb2.GetTaskResponse:
        """A task by id or by its SubmitTask's key (with the key's operation record)."""
        if not request.task_id and not request.idempotency_key:
            raise InvalidRequest([("task_id", "task_id or idempotency_key")])
        queue = self._h.queue
        out = task_pb2.GetTaskResponse()
        if request.idempotency_key:
            task = await queue.get_by_key(request.idempotency_key)
            if task is None:
                out.operation.CopyFrom(
                    common_pb2.OperationRecord(
                        idempotency_key=request.idempotency_key,
                        state=common_pb2.OPERATION_STATE_NOT_RECEIVED,
                    )
                )
                return out
            if request.task_id and request.task_id != task.task_id:
                raise InvalidRequest([("task_id", "names another task than the key")])
            received = _stamp(task.create_time)
            out.operation.CopyFrom(
                common_pb2.OperationRecord(
                    idempotency_key=request.idempotency_key,
                    method="hplus.hospital.v1.TaskService/SubmitTask",
                    state=common_pb2.OPERATION_STATE_SUCCEEDED,
                    receive_time=received,
                    complete_time=received,
                    trace_id=task.trace_id,
                )
            )
        else:
            found = await queue.get(request.task_id)
            if found is None:
                raise errors.NotFound("no such task", reason="TASK_NOT_FOUND")
            task = found
        out.task.CopyFrom(to_task(task))
        return out

    async def ListTasks(
        self,
        request: task_pb2.ListTasksRequest,
        context: Ctx[task_pb2.ListTasksRequest, task_pb2.ListTasksResponse],
    ) -> task_pb2.ListTasksResponse:
        """Tasks newest first, by state and kind."""
        size = min(request.page_size or 100, 1000)
        before = None
        if request.page_token:
            try:
                before = int(request.page_token)
            except ValueError:
                raise InvalidRequest([("page_token", "malformed")]) from None
        listed = await self._h.queue.list_tasks(
            states=[_STATE_NAMES[s] for s in request.states if s in _STATE_NAMES],
            kinds=[_KIND_NAMES[k] for k in request.kinds if k in _KIND_NAMES],
            limit=size + 1,
            before_seq=before,
        )
        created_after = (
            request.created_after.ToNanoseconds() / 1e9
            if request.HasField("created_after")
            else None
        )
        rows = [
            (seq, t) for seq, t in listed if created_after is None or t.create_time >= created_after
        ]
        more = len(rows) > size
        rows = rows[:size]
        return task_pb2.ListTasksResponse(
            tasks=[to_task(t, summary_only=request.summary_only) for _, t in rows],
            next_page_token=str(rows[-1][0]) if more and rows else "",
        )

    async def RetryTask(
        self,
        request: task_pb2.RetryTaskRequest,
        context: Ctx[task_pb2.RetryTaskRequest, task_pb2.RetryTaskResponse],
    ) -> task_pb2.RetryTaskResponse:
        """Requeues a PARKED or FAILED task with a fresh attempt budget."""
        require_key(request.idempotency_key)
        if not request.task_id:
            raise InvalidRequest([("task_id", "required")])
        deadline = request.deadline.ToNanoseconds() / 1e9 if request.HasField("deadline") else None
        task = await self._h.queue.retry(request.task_id, deadline=deadline)
        return task_pb2.RetryTaskResponse(task=to_task(task))


def task_executor(adapter: HisAdapter) -> Executor:
    """The queue's executor: runs one attempt of a task against the HIS.

    Args:
        adapter: the HIS adapter.

    Returns:
        An executor for :class:`~frontend_server.tasks.TaskQueue`.
    """

    async def execute(run: TaskRun) -> bytes:
        try:
            if run.kind == "list_reports":
                return await _list_reports(adapter, run)
            if run.kind == "get_report":
                return await _get_report(adapter, run)
            if run.kind != "retrieve_archived_report":
                raise PermanentTaskError(f"{run.kind} is not offered", code="UNIMPLEMENTED")
            return await _retrieve_archived(adapter, run)
        except (HisUnavailable, HisTimeout, HisProtocolError) as err:
            raise TransientTaskError(f"HIS: {type(err).__name__}") from err
        except HisRejected as err:
            recorded = rejection(err)
            if err.reason is RejectReason.UNKNOWN:
                raise TransientTaskError(recorded.message, code=recorded.code) from err
            raise PermanentTaskError(
                recorded.message, code=recorded.code, reason=recorded.reason
            ) from err

    return execute


async def _list_reports(adapter: HisAdapter, run: TaskRun) -> bytes:
    spec = report_pb2.ListReportsRequest.FromString(run.payload)
    found = await adapter.list_reports(spec.patient.patient_id)
    summaries = [convert.report_summary(r) for r in found]
    summaries.sort(key=lambda s: s.issue_time.ToNanoseconds(), reverse=True)
    return report_pb2.ListReportsResponse(reports=summaries).SerializeToString()


async def _get_report(adapter: HisAdapter, run: TaskRun) -> bytes:
    spec = report_pb2.GetReportRequest.FromString(run.payload)
    patient_id = spec.patient.patient_id
    summary = next(
        (
            convert.report_summary(r)
            for r in await adapter.list_reports(patient_id)
            if r.report_id == spec.report_id
        ),
        None,
    )
    if summary is None:
        raise PermanentTaskError("the patient has no such report", code="NOT_FOUND")
    if summary.availability == report_pb2.REPORT_AVAILABILITY_AVAILABLE:
        try:
            found = await adapter.get_report(spec.report_id, patient_id=patient_id)
        except HisRejected as err:
            if err.reason is not RejectReason.REPORT_ARCHIVED:
                raise
            found = await adapter.get_archived_report(spec.report_id, patient_id=patient_id)
    elif summary.availability == report_pb2.REPORT_AVAILABILITY_ARCHIVED:
        # In the queue anyway: read it from the archive at once.
        found = await adapter.get_archived_report(spec.report_id, patient_id=patient_id)
        summary.availability = report_pb2.REPORT_AVAILABILITY_AVAILABLE
    else:
        return report_pb2.GetReportResponse(
            report=report_pb2.Report(summary=summary)
        ).SerializeToString()
    return report_pb2.GetReportResponse(report=convert.report(found, summary)).SerializeToString()


async def _retrieve_archived(adapter: HisAdapter, run: TaskRun) -> bytes:
    spec = task_pb2.RetrieveArchivedReportSpec.FromString(run.payload)
    patient_id = spec.patient.patient_id
    found = await adapter.get_archived_report(spec.report_id, patient_id=patient_id)
    summary = report_pb2.ReportSummary(
        report_id=found.report_id,
        type=_REPORT_TYPES.get(found.report_type, report_pb2.REPORT_TYPE_OTHER),
        title=found.title,
        patient=common_pb2.PatientRef(patient_id=patient_id),
        status=report_pb2.REPORT_STATUS_FINAL,
        availability=report_pb2.REPORT_AVAILABILITY_AVAILABLE,
    )
    issued = convert.timestamp(found.issued_at)
    if issued is not None:
        summary.issue_time.CopyFrom(issued)
    result = task_pb2.RetrieveArchivedReportResult(report=convert.report(found, summary))
    return result.SerializeToString()

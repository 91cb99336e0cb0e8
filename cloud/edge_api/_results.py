"""ReportTaskResults: bounded, idempotent per task, each result routed to its submitter."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping

import grpc
from google.rpc import status_pb2

from cloud.edge_api._auth import EdgeCaller
from cloud.edgeconfig import EdgeApiConfig
from cloud.errors import ERROR_DOMAIN
from hplus.cloud.v1 import edge_pb2
from mesh import errors

__all__ = ["Accepted", "Rejected", "ResultSink", "TaskResultsHandler", "Verdict"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Accepted:
    """The result is stored durably (now or before): the edge may delete it."""


@dataclasses.dataclass(frozen=True)
class Rejected:
    """The result is not taken.

    NOT_FOUND and INVALID_ARGUMENT make the edge drop it, UNAVAILABLE makes it keep it and
    try again.
    """

    code: grpc.StatusCode
    """Why, as the contract lists it."""
    message: str
    """What to tell the edge (no patient data)."""


Verdict = Accepted | Rejected
"""What a sink says about one result."""

ResultSink = Callable[[str, edge_pb2.TaskResult], Awaitable[Verdict]]
"""Takes one result pushed by an edge of the hospital (first argument) and stores it."""


def _status(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=message)


class TaskResultsHandler:
    """Serves ReportTaskResults for the parts of the cloud that submit tasks.

    A result is routed by its ``idempotency_key``'s prefix (``<prefix>-…``) to the sink
    registered for it; the sink looks the task up *within the calling hospital*, so a
    hospital can never complete another hospital's task (NOT_FOUND). Bounds: at most
    ``max_results_per_call`` results and ``max_results_bytes`` of them per call (else the
    call fails with INVALID_ARGUMENT naming the field); a result over ``max_result_bytes``
    is rejected alone.

    Args:
        sinks: sink by idempotency key prefix (e.g. ``"rpt"`` for report lookups).
        config: the bounds.
    """

    def __init__(self, sinks: Mapping[str, ResultSink], config: EdgeApiConfig) -> None:
        self._sinks = dict(sinks)
        self._config = config

    async def handle(
        self, caller: EdgeCaller, request: edge_pb2.ReportTaskResultsRequest
    ) -> edge_pb2.ReportTaskResultsResponse:
        """Acknowledge every result a sink stored; reject the others with a reason."""
        cfg = self._config
        if len(request.results) > cfg.max_results_per_call:
            log.warning(
                "edge api: %s/%s pushed %d results (limit %d)",
                caller.hospital_id,
                caller.edge_id,
                len(request.results),
                cfg.max_results_per_call,
            )
            raise errors.InvalidArgument(
                "too many results in one call",
                reason="TOO_MANY_RESULTS",
                domain=ERROR_DOMAIN,
                field_violations=[("results", f"at most {cfg.max_results_per_call} per call")],
            )
        total = sum(r.ByteSize() for r in request.results)
        if total > cfg.max_results_bytes:
            log.warning(
                "edge api: %s/%s pushed %d bytes of results (limit %d)",
                caller.hospital_id,
                caller.edge_id,
                total,
                cfg.max_results_bytes,
            )
            raise errors.InvalidArgument(
                "results too large",
                reason="RESULTS_TOO_LARGE",
                domain=ERROR_DOMAIN,
                field_violations=[("results", f"at most {cfg.max_results_bytes} bytes per call")],
            )
        out = edge_pb2.ReportTaskResultsResponse()
        for index, result in enumerate(request.results):
            verdict = await self._one(caller, index, result)
            if isinstance(verdict, Accepted):
                out.acknowledged_task_ids.append(result.task_id)
            else:
                out.rejections.append(
                    edge_pb2.TaskResultRejection(
                        task_id=result.task_id, status=_status(verdict.code, verdict.message)
                    )
                )
        return out

    async def _one(self, caller: EdgeCaller, index: int, result: edge_pb2.TaskResult) -> Verdict:
        where = f"results[{index}]"
        problem = ""
        if not result.task_id:
            problem = f"{where}.task_id: required"
        elif len(result.task_id) > 64:
            problem = f"{where}.task_id: at most 64 characters"
        elif not result.idempotency_key or len(result.idempotency_key) > 128:
            problem = f"{where}.idempotency_key: required, at most 128 characters"
        elif result.outcome == edge_pb2.TASK_OUTCOME_UNSPECIFIED:
            problem = f"{where}.outcome: required"
        elif result.outcome == edge_pb2.TASK_OUTCOME_SUCCEEDED and not result.HasField("result"):
            problem = f"{where}.result: required for TASK_OUTCOME_SUCCEEDED"
        elif result.result.ByteSize() > self._config.max_result_bytes:
            problem = f"{where}.result: larger than {self._config.max_result_bytes} bytes"
        if problem:
            log.warning(
                "edge api: %s/%s: rejected task %s: %s",
                caller.hospital_id,
                caller.edge_id,
                result.task_id[:64],
                problem,
            )
            return Rejected(grpc.StatusCode.INVALID_ARGUMENT, problem)
        prefix = result.idempotency_key.partition("-")[0]
        sink = self._sinks.get(prefix)
        if sink is None:
            return Rejected(grpc.StatusCode.NOT_FOUND, "no task of this cloud has that key")
        try:
            return await sink(caller.hospital_id, result)
        except errors.StatusError as err:
            log.warning("edge api: storing task %s failed: %s", result.task_id, err)
            return Rejected(grpc.StatusCode.UNAVAILABLE, "the result could not be stored now")

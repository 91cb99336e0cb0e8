"""The edge's uplink against an EdgeService over real TLS: results are deleted only once
acknowledged (an edge killed between sending and the acknowledgement sends them again),
rejections follow the contract, health reports carry the edge's state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, status_pb2

from frontend_server.dialer import DialerConfig, SlotState
from frontend_server.tasks import QueueConfig, TaskQueue, TaskRun, TaskState, TaskStore
from frontend_server.uplink import Uplink, UplinkConfig, task_result
from hplus.cloud.v1 import edge_pb2, edge_pb2_grpc
from hplus.hospital.v1 import report_pb2, task_pb2
from mesh import errors
from mesh.tls import ensure_dev_pki, load_server_credentials
from tests.support.waiting import until

TOKEN = "hpc1.c1.secret"


class Cloud(edge_pb2_grpc.EdgeServiceServicer):
    """The cloud side of the contract, as a test double at a seam we own."""

    def __init__(self) -> None:
        self.batches: list[edge_pb2.ReportTaskResultsRequest] = []
        self.reports: list[edge_pb2.ReportHealthRequest] = []
        self.tokens: list[str] = []
        self.received = asyncio.Event()
        self.hold: asyncio.Event | None = None
        self.reject: dict[str, int] = {}
        self.fail = False

    def _token(self, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        self.tokens.extend(
            v for k, v in context.invocation_metadata() or () if k == "authorization"
        )

    async def ReportTaskResults(self, request, context):  # type: ignore[no-untyped-def]
        self._token(context)
        self.batches.append(request)
        self.received.set()
        if self.fail:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if self.hold is not None:
            await self.hold.wait()  # the answer never leaves: the edge dies first
        out = edge_pb2.ReportTaskResultsResponse()
        for r in request.results:
            code = self.reject.get(r.task_id)
            if code is None:
                out.acknowledged_task_ids.append(r.task_id)
            else:
                out.rejections.add(task_id=r.task_id, status=status_pb2.Status(code=code))
        return out

    async def ReportHealth(self, request, context):  # type: ignore[no-untyped-def]
        self._token(context)
        self.reports.append(request)
        self.received.set()
        return edge_pb2.ReportHealthResponse(next_report_interval=duration_pb2.Duration(seconds=7))


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[tuple[Cloud, DialerConfig]]:
    pki = ensure_dev_pki(tmp_path / "tls")
    server = grpc.aio.server()
    servicer = Cloud()
    edge_pb2_grpc.add_EdgeServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", load_server_credentials(pki))
    await server.start()
    dialer = DialerConfig(
        gateways=(f"localhost:{port}",),
        hospital_id="h1",
        edge_id="e1",
        credential=TOKEN,
        ca_cert=pki.ca_cert.read_bytes(),
    )
    try:
        yield servicer, dialer
    finally:
        if servicer.hold is not None:
            servicer.hold.set()
        await server.stop(0)


async def _never(run: TaskRun) -> bytes:
    raise AssertionError("the queue does not run here")


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[TaskQueue]:
    store = TaskStore.open(tmp_path / "tasks.db")
    q = TaskQueue(store, _never, QueueConfig(), owns_store=True)
    await q.start()
    try:
        yield q
    finally:
        await q.aclose()


async def finish(queue: TaskQueue, key: str, *, ok: bool = True) -> str:
    spec = task_pb2.RetrieveArchivedReportSpec(report_id=key)
    task, _ = await queue.submit(
        idempotency_key=key, kind="retrieve_archived_report", payload=spec.SerializeToString()
    )
    claimed = await queue.store.claim(owner="w", lease_seconds=30)
    assert claimed is not None
    assert claimed.task_id == task.task_id
    result = task_pb2.RetrieveArchivedReportResult(
        report=report_pb2.Report(summary=report_pb2.ReportSummary(report_id=key))
    )
    await queue.store.finish(
        task.task_id,
        owner="w",
        state=TaskState.SUCCEEDED if ok else TaskState.FAILED,
        result=result.SerializeToString() if ok else None,
    )
    return task.task_id


def uplink(dialer: DialerConfig, queue: TaskQueue, **kw: object) -> Uplink:
    return Uplink(dialer, UplinkConfig(**kw), edge_id="e1", queue=queue)  # type: ignore[arg-type]


async def test_results_killed_between_send_and_ack_are_sent_again_not_lost(
    cloud: tuple[Cloud, DialerConfig], queue: TaskQueue
) -> None:
    servicer, dialer = cloud
    ids = {await finish(queue, "rpt-a"), await finish(queue, "rpt-b")}
    servicer.hold = asyncio.Event()
    first = uplink(dialer, queue)
    push = asyncio.create_task(first.push_results())
    await servicer.received.wait()
    push.cancel()  # the edge dies after sending, before the acknowledgement arrives
    with pytest.raises(asyncio.CancelledError):
        await push
    await first.aclose()
    assert {t.task_id for t in await queue.pending_results()} == ids

    servicer.hold.set()
    servicer.hold = None
    second = uplink(dialer, queue)
    try:
        assert await second.push_results() == 2
    finally:
        await second.aclose()
    assert [{r.task_id for r in b.results} for b in servicer.batches] == [ids, ids]
    assert await queue.pending_results() == []
    for task_id in ids:
        task = await queue.get(task_id)
        assert task is not None
        assert task.delivered_time is not None
        assert task.result is None
    assert set(servicer.tokens) == {f"Bearer {TOKEN}"}
    sent = servicer.batches[-1].results[0]
    assert sent.outcome == edge_pb2.TASK_OUTCOME_SUCCEEDED
    assert sent.result.Is(task_pb2.RetrieveArchivedReportResult.DESCRIPTOR)
    assert sent.task_kind == "TASK_KIND_RETRIEVE_ARCHIVED_REPORT"


async def test_rejections_drop_or_keep_as_the_contract_says(
    cloud: tuple[Cloud, DialerConfig], queue: TaskQueue
) -> None:
    servicer, dialer = cloud
    gone = await finish(queue, "rpt-gone")
    later = await finish(queue, "rpt-later", ok=False)
    ok = await finish(queue, "rpt-ok")
    servicer.reject = {gone: code_pb2.NOT_FOUND, later: code_pb2.UNAVAILABLE}
    up = uplink(dialer, queue)
    try:
        assert await up.push_results() == 1
        assert [t.task_id for t in await queue.pending_results()] == [later]
        # A batch whose call failed is resent with the same request_id; one that was
        # answered is done, and what it kept goes in a new batch.
        servicer.reject = {later: code_pb2.UNAVAILABLE}
        await up.push_results()
        servicer.fail = True
        with pytest.raises(errors.Unavailable):
            await up.push_results()
        servicer.fail = False
        servicer.reject = {}
        assert await up.push_results() == 1
        ids = [b.request_id for b in servicer.batches]
        assert ids[-1] == ids[-2] != ids[-3] != ids[-4]
    finally:
        await up.aclose()
    assert await queue.pending_results() == []
    failed = next(r for b in servicer.batches for r in b.results if r.task_id == later)
    assert failed.outcome == edge_pb2.TASK_OUTCOME_FAILED
    assert ok in {r.task_id for r in servicer.batches[0].results}


async def test_batches_are_bounded(cloud: tuple[Cloud, DialerConfig], queue: TaskQueue) -> None:
    servicer, dialer = cloud
    for i in range(5):
        await finish(queue, f"rpt-{i}")
    one = task_result((await queue.pending_results())[0]).ByteSize()
    up = uplink(dialer, queue, max_batch_results=3, max_batch_bytes=2 * one + 1)
    try:
        while await queue.pending_results():
            await up.push_results()
    finally:
        await up.aclose()
    assert [len(b.results) for b in servicer.batches] == [2, 2, 1]


async def test_health_reports_state_and_follow_the_clouds_interval(
    cloud: tuple[Cloud, DialerConfig], queue: TaskQueue, tmp_path: Path
) -> None:
    servicer, dialer = cloud
    await queue.submit(idempotency_key="k", kind="retrieve_archived_report", payload=b"x")
    slots = [SlotState(index=0, gateway="g1", connected=True, connects=2)]
    up = Uplink(
        dialer,
        UplinkConfig(watch_interval=0.05),
        edge_id="e1",
        queue=queue,
        tunnels=lambda: slots,
        data_dir=tmp_path,
    )
    runner = asyncio.create_task(up.run())
    try:
        await until(lambda: up.reports_sent >= 1)
        first = servicer.reports[0]
        assert first.edge_id == "e1"
        assert first.state == edge_pb2.EDGE_HEALTH_STATE_HEALTHY
        assert [(t.gateway_node, t.connected, t.reconnects) for t in first.tunnels] == [
            ("g1", True, 1)
        ]
        assert [(q.queue, q.backlog) for q in first.queues] == [("retrieve_archived_report", 1)]
        assert first.resources.disk_total_bytes > 0
        assert up.report_interval == 7.0
        # A tunnel going down is reported at once, not after the interval.
        started = time.monotonic()
        slots[0].connected = False
        await until(lambda: any(not r.tunnels[0].connected for r in servicer.reports))
        assert time.monotonic() - started < 7.0
        down = next(r for r in servicer.reports if not r.tunnels[0].connected)
        assert down.state == edge_pb2.EDGE_HEALTH_STATE_UNHEALTHY
    finally:
        await up.shutdown()
        await runner

"""Pushes task results and health reports to the cloud's ``EdgeService``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2

from frontend_server.dialer import DialerConfig, SlotState, dial
from frontend_server.services import result_message
from frontend_server.tasks import Task, TaskQueue, TaskState
from frontend_server.uplink._his import HisCheck
from hplus.cloud.v1 import edge_pb2, edge_pb2_grpc
from hplus.hospital.v1 import task_pb2
from mesh import errors
from mesh.retry import RetryPolicy
from mesh.version import SOFTWARE_VERSION

__all__ = ["Uplink", "UplinkConfig", "task_result"]

log = logging.getLogger(__name__)

_MIB = 1024 * 1024

_KIND_NAMES = {
    "retrieve_archived_report": task_pb2.TaskKind.Name(task_pb2.TASK_KIND_RETRIEVE_ARCHIVED_REPORT),
    "export_medical_record": task_pb2.TaskKind.Name(task_pb2.TASK_KIND_EXPORT_MEDICAL_RECORD),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class UplinkConfig:
    """How the edge talks to ``EdgeService`` (address, TLS and credential: the dialer's)."""

    report_interval: float = 30.0
    """Seconds between health reports until the cloud answers its own
    ``next_report_interval``."""
    watch_interval: float = 1.0
    """Seconds between looks at the edge's state (a change is reported at once)."""
    results_poll: float = 10.0
    """Seconds between looks for undelivered results when no task finishes (results from
    before the start, ones the cloud asked to resend); a finished task is looked for at once."""
    results_linger: float = 1.0
    """Seconds to wait after a task finishes, so results close together go in one call."""
    max_batch_results: int = 100
    """Results per ReportTaskResults call (the contract allows 100)."""
    max_batch_bytes: int = 1 * _MIB
    """Bytes of results per call (below the cloud's message limit)."""
    call_timeout: float = 10.0
    """Deadline of each call."""
    his_timeout: float = 5.0
    """Deadline of the HIS check; no answer by then is UNREACHABLE."""
    his_slow_seconds: float = 2.0
    """A HIS check slower than this is SLOW."""
    backoff_initial: float = 1.0
    """First backoff window after a failed call, seconds."""
    backoff_max: float = 60.0
    """Largest backoff window, seconds."""

    def __post_init__(self) -> None:
        for name in (
            "report_interval",
            "watch_interval",
            "results_poll",
            "results_linger",
            "max_batch_results",
            "max_batch_bytes",
            "call_timeout",
            "his_timeout",
            "his_slow_seconds",
            "backoff_initial",
            "backoff_max",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"uplink.{name} must be > 0")
        if self.max_batch_results > 100:
            raise ValueError("uplink.max_batch_results must be <= 100 (the contract's limit)")


def _stamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def task_result(task: Task) -> edge_pb2.TaskResult:
    """A finished task as the contract's ``TaskResult``."""
    out = edge_pb2.TaskResult(
        task_id=task.task_id,
        idempotency_key=task.idempotency_key,
        task_kind=_KIND_NAMES.get(task.kind, task_pb2.TaskKind.Name(task_pb2.TASK_KIND_CUSTOM)),
        attempts=task.attempts,
        trace_id=task.trace_id,
    )
    if task.state is TaskState.SUCCEEDED:
        out.outcome = edge_pb2.TASK_OUTCOME_SUCCEEDED
        message = result_message(task.kind, task.result or b"")
        if message is not None:
            packed = any_pb2.Any()
            packed.Pack(message)
            out.result.CopyFrom(packed)
    elif task.state is TaskState.FAILED:
        out.outcome = edge_pb2.TASK_OUTCOME_FAILED
    else:
        out.outcome = edge_pb2.TASK_OUTCOME_PARKED
    if task.last_error is not None and task.state is not TaskState.SUCCEEDED:
        out.error.code = code_pb2.Code.Value(task.last_error.code)
        out.error.message = task.last_error.message
    for field, value in (("accept_time", task.create_time), ("complete_time", task.complete_time)):
        stamp = _stamp(value)
        if stamp is not None:
            getattr(out, field).CopyFrom(stamp)
    return out


class Uplink:
    """Task results and health reports, over the edge's own connection to the cloud.

    Results: finished tasks are pushed in batches (at most ``max_batch_results`` and
    ``max_batch_bytes``); a task is marked delivered (its result deleted) only when its id
    comes back acknowledged, or rejected as NOT_FOUND / INVALID_ARGUMENT (the contract's
    "drop it", logged); an edge killed between sending and acknowledging sends it again,
    and the cloud takes it twice harmlessly. A batch resent unchanged reuses its
    ``request_id``.

    Health: a report every ``next_report_interval`` (the cloud's answer, else
    ``report_interval``) and at once when the state changes (tunnels, HIS reachability,
    store damage, overall state).

    Args:
        dialer: where the cloud is, TLS and the credential (the tunnels' settings).
        config: intervals, batch bounds, deadlines.
        edge_id: this edge's id.
        queue: the pending-task queue (``None``: no results, no queue health).
        his: the HIS check (``None``: no HIS).
        tunnels: the dialer's slots, for the report.
        damage: each store's damage (``None``: healthy).
        data_dir: the volume whose free space is reported.
        upgrade: the upgrade agent's state for the report (``None``: no agent).
        rng: randomness for backoff jitter.
    """

    def __init__(
        self,
        dialer: DialerConfig,
        config: UplinkConfig,
        *,
        edge_id: str,
        queue: TaskQueue | None = None,
        his: HisCheck | None = None,
        tunnels: Callable[[], Sequence[SlotState]] = list,
        damage: Callable[[], Mapping[str, str | None]] = dict,
        data_dir: Path | None = None,
        upgrade: Callable[[], edge_pb2.UpgradeHealth | None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self._dialer = dialer
        self._upgrade = upgrade
        self.config = config
        self.edge_id = edge_id
        self._queue = queue
        self.his = his
        self._tunnels = tunnels
        self._damage = damage
        self._data_dir = data_dir
        self._rng = rng or random.Random()
        self._policy = RetryPolicy(
            initial=config.backoff_initial, maximum=config.backoff_max, deadline=None
        )
        self._gateway = 0
        self._channel: grpc.aio.Channel | None = None
        self._stop = asyncio.Event()
        self._started = time.monotonic()
        self._batch: tuple[frozenset[str], str] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self.report_interval = config.report_interval
        """The interval in force (the cloud's last answer)."""
        self.reports_sent = 0
        """Health reports the cloud accepted."""
        self.results_acknowledged = 0
        """Task results the cloud acknowledged."""

    # -- the connection -------------------------------------------------------------------

    def _stub(self) -> edge_pb2_grpc.EdgeServiceAsyncStub:
        if self._channel is None:
            target = self._dialer.gateways[self._gateway % len(self._dialer.gateways)]
            self._channel = dial(self._dialer, target)
        return errors.wrap(edge_pb2_grpc.EdgeServiceStub(self._channel))

    async def _next_gateway(self) -> None:
        channel, self._channel = self._channel, None
        self._gateway += 1
        if channel is not None:
            await channel.close()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._dialer.credential}"),)

    async def aclose(self) -> None:
        """Close the connection."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- results --------------------------------------------------------------------------

    async def push_results(self) -> int:
        """Push one batch of unacknowledged results; the number the cloud acknowledged.

        Raises:
            mesh.errors.StatusError: the call failed (nothing is marked delivered).
        """
        if self._queue is None:
            return 0
        cfg = self.config
        tasks = await self._queue.pending_results(limit=cfg.max_batch_results)
        if not tasks:
            return 0
        batch: list[edge_pb2.TaskResult] = []
        size = 0
        for task in tasks:
            result = task_result(task)
            if batch and size + result.ByteSize() > cfg.max_batch_bytes:
                break
            batch.append(result)
            size += result.ByteSize()
        ids = frozenset(r.task_id for r in batch)
        if self._batch is None or self._batch[0] != ids:
            self._batch = (ids, str(uuid.uuid4()))
        request = edge_pb2.ReportTaskResultsRequest(
            request_id=self._batch[1], edge_id=self.edge_id, results=batch
        )
        reply = await self._stub().ReportTaskResults(
            request, timeout=cfg.call_timeout, metadata=self._metadata()
        )
        done = list(reply.acknowledged_task_ids)
        for rejection in reply.rejections:
            code = rejection.status.code
            if code in (code_pb2.NOT_FOUND, code_pb2.INVALID_ARGUMENT):
                log.warning(
                    "the cloud refused the result of task %s (%s: %s); dropping it",
                    rejection.task_id,
                    code_pb2.Code.Name(code),
                    rejection.status.message,
                )
                done.append(rejection.task_id)
        mine = [t for t in done if t in ids]
        await self._queue.ack(mine)
        self._batch = None
        acked = len(reply.acknowledged_task_ids)
        self.results_acknowledged += acked
        return acked

    async def _results_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            delay = 0.0
            try:
                pushed = await self.push_results()
                failures = 0
                if pushed >= self.config.max_batch_results:
                    continue
                await self._until_finished()
            except errors.StatusError as err:
                failures += 1
                delay = self._policy.delay(failures, self._rng)
                self._log_failure("ReportTaskResults", err, failures)
                if err.code is grpc.StatusCode.UNAVAILABLE:
                    await self._next_gateway()
            except Exception:
                # A store failure: logged, the loop goes on (results stay until delivered).
                failures += 1
                delay = self._policy.delay(failures, self._rng)
                log.exception("pushing task results failed")
            await self._pause(delay)

    async def _until_finished(self) -> None:
        """Wait for a task to finish (or ``results_poll``), then linger to batch results."""
        assert self._queue is not None
        waiter = asyncio.ensure_future(self._queue.wait_finished())
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait(
                {waiter, stopper},
                timeout=self.config.results_poll,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopper.cancel()
            waiter.cancel()
        if waiter.done() and not waiter.cancelled():
            await self._pause(self.config.results_linger)

    # -- health ---------------------------------------------------------------------------

    async def build_report(self) -> edge_pb2.ReportHealthRequest:
        """The health report of now (the HIS status is the last check's)."""
        out = edge_pb2.ReportHealthRequest(
            request_id=str(uuid.uuid4()),
            edge_id=self.edge_id,
            software_version=SOFTWARE_VERSION,
            contract_release=self._dialer.contract_release,
        )
        out.report_time.FromDatetime(dt.datetime.now(dt.UTC))
        out.uptime.FromNanoseconds(round((time.monotonic() - self._started) * 1e9))
        for slot in self._tunnels():
            out.tunnels.append(
                edge_pb2.TunnelHealth(
                    gateway_node=slot.gateway,
                    connected=slot.connected,
                    reconnects=max(slot.connects - 1, 0),
                )
            )
        parked = 0
        if self._queue is not None:
            stats = await self._queue.stats()
            parked = stats.parked
            for kind, k in stats.by_kind.items():
                queue = edge_pb2.QueueHealth(
                    queue=kind,
                    backlog=k.backlog,
                    dead_letters=k.parked,
                    drain_rate_per_minute=round(stats.drain_rate_per_second * 60),
                )
                queue.oldest_age.FromNanoseconds(round(k.oldest_queued_age_seconds * 1e9))
                out.queues.append(queue)
        if self.his is not None:
            out.his_interfaces.append(self.his.interface_health())
        if self._data_dir is not None:
            with contextlib.suppress(OSError):
                usage = shutil.disk_usage(self._data_dir)
                out.resources.disk_free_bytes = usage.free
                out.resources.disk_total_bytes = usage.total
                out.resources.local_store_bytes = sum(
                    p.stat().st_size for p in self._data_dir.glob("*.db") if p.is_file()
                )
        out.resources.memory_rss_bytes = _rss()
        upgrade = self._upgrade()
        if upgrade is not None:
            out.upgrade.CopyFrom(upgrade)
        out.state = self._state(out, parked)  # type: ignore[assignment]
        return out

    def _state(self, report: edge_pb2.ReportHealthRequest, parked: int) -> int:
        reach = [i.reachability for i in report.his_interfaces]
        if any(self._damage().values()) or edge_pb2.HIS_REACHABILITY_UNREACHABLE in reach:
            return edge_pb2.EDGE_HEALTH_STATE_UNHEALTHY
        if report.tunnels and not any(t.connected for t in report.tunnels):
            return edge_pb2.EDGE_HEALTH_STATE_UNHEALTHY
        if (
            any(not t.connected for t in report.tunnels)
            or edge_pb2.HIS_REACHABILITY_SLOW in reach
            or edge_pb2.HIS_REACHABILITY_ERRORING in reach
            or parked
        ):
            return edge_pb2.EDGE_HEALTH_STATE_DEGRADED
        return edge_pb2.EDGE_HEALTH_STATE_HEALTHY

    def _signature(self) -> tuple[object, ...]:
        return (
            tuple(s.connected for s in self._tunnels()),
            None if self.his is None else self.his.status.reachability,
            tuple(sorted((k, bool(v)) for k, v in self._damage().items())),
        )

    async def report_health(self) -> edge_pb2.ReportHealthResponse:
        """Send one health report now; adopts the cloud's ``next_report_interval``.

        Raises:
            mesh.errors.StatusError: the call failed.
        """
        request = await self.build_report()
        reply = await self._stub().ReportHealth(
            request, timeout=self.config.call_timeout, metadata=self._metadata()
        )
        interval = reply.next_report_interval.ToNanoseconds() / 1e9
        if interval > 0:
            self.report_interval = max(interval, 1.0)
        self.reports_sent += 1
        return reply

    # -- upgrades (the updater's seam) ----------------------------------------------------

    async def get_upgrade_manifest(
        self, request: edge_pb2.GetUpgradeManifestRequest
    ) -> edge_pb2.GetUpgradeManifestResponse:
        """``EdgeService.GetUpgradeManifest`` over this connection."""
        return await self._stub().GetUpgradeManifest(
            request, timeout=self.config.call_timeout, metadata=self._metadata()
        )

    async def download_upgrade(
        self, request: edge_pb2.DownloadUpgradeRequest
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        """``EdgeService.DownloadUpgrade``: the stream's chunks.

        No deadline: the agent bounds a stalled stream itself and resumes from its offset.
        """
        async for chunk in self._stub().DownloadUpgrade(request, metadata=self._metadata()):
            yield chunk

    async def report_upgrade(self, upgrade: edge_pb2.UpgradeHealth) -> None:
        """Send a health report now: the upgrade state changed (it is in every report)."""
        del upgrade  # the report reads the agent's current state through ``upgrade``
        try:
            await self.report_health()
        except errors.StatusError as err:
            self._log_failure("ReportHealth", err, 1)

    async def _health_loop(self) -> None:
        failures = 0
        next_report = 0.0
        next_check = 0.0
        sent: tuple[object, ...] | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            if self.his is not None and now >= next_check:
                await self.his.check()
                next_check = now + self.report_interval
            signature = self._signature()
            if now >= next_report or signature != sent:
                try:
                    await self.report_health()
                    failures = 0
                    sent = signature
                    next_report = now + self.report_interval
                except errors.StatusError as err:
                    failures += 1
                    self._log_failure("ReportHealth", err, failures)
                    next_report = now + self._policy.delay(failures, self._rng)
                    sent = signature  # retried on the backoff, not every watch tick
                    if err.code is grpc.StatusCode.UNAVAILABLE:
                        await self._next_gateway()
            await self._pause(self.config.watch_interval)

    # -- running --------------------------------------------------------------------------

    def _log_failure(self, method: str, err: errors.StatusError, failures: int) -> None:
        level = logging.ERROR if err.code is grpc.StatusCode.UNAUTHENTICATED else logging.WARNING
        if failures == 1 or failures % 20 == 0:
            log.log(level, "EdgeService.%s failed (%d in a row): %s", method, failures, err)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def run(self) -> None:
        """Push results and report health until `shutdown`."""
        try:
            async with asyncio.TaskGroup() as group:
                self._loops = [group.create_task(self._health_loop(), name="uplink-health")]
                if self._queue is not None:
                    self._loops.append(
                        group.create_task(self._results_loop(), name="uplink-results")
                    )
        finally:
            await self.aclose()

    async def shutdown(self) -> None:
        """Stop now, cancelling a call in flight.

        A result whose acknowledgement did not arrive is sent again next time; a health
        report is simply sent again.
        """
        self._stop.set()
        for loop in self._loops:
            loop.cancel()


def _rss() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")

"""What every simulator shares: lifecycle, the admin API, faults and the request log."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Self, TypeVar

from aiohttp import web

from tools.his_sim._core import HisCore
from tools.his_sim._faults import (
    Fault,
    FaultState,
    Outage,
    RequestRecord,
    fault_from_json,
    fault_to_json,
    now_cst,
)
from tools.his_sim._model import HisError

__all__ = ["SimBase", "Work", "guarded"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


def guarded(fn: Callable[[dict[str, Any]], _T], params: dict[str, Any]) -> _T:
    """Runs a dialect operation, turning a simulator bug into the vendor's internal error.

    Args:
        fn: The operation.
        params: Its parameters.

    Returns:
        Its result.

    Raises:
        HisError: The operation's own refusal, or INTERNAL for any unexpected exception
            (logged), so a bad request never crashes the simulator.
    """
    try:
        return fn(params)
    except HisError:
        raise
    except Exception as err:
        _log.exception("his_sim operation failed")
        raise HisError("INTERNAL", "系统内部错误") from err


Work = Callable[[], tuple[web.StreamResponse, bool, str]]
"""Runs one operation: returns (response, committed a change?, log outcome)."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


class SimBase:
    """Base of the three simulators: owns the core, the faults and the admin HTTP server.

    Args:
        seed: Seed of the generated data (same seed, same data).
        host: Interface to listen on.
        port: Port of the simulator's HTTP server (0 picks a free one). The database HIS
            serves only the admin API there.
        admin_port: Optional second port serving only the admin API, which stays up during a
            "refuse" outage; None for none.
        today: First day of the schedule horizon; defaults to today in UTC+8.
        clock: Source of the current time, for tests.
    """

    dialect: ClassVar[str] = ""

    def __init__(
        self,
        *,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_port: int | None = None,
        today: dt.date | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.core = HisCore(seed, today=today, clock=clock)
        self.faults = FaultState()
        self.request_log: list[RequestRecord] = []
        """Every non-admin request, in arrival order."""
        self._host = host
        self._port = port
        self._admin_port = admin_port
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._admin_runner: web.AppRunner | None = None
        self._bound_admin_port = 0
        self._closing = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Starts the HTTP server(s) and any background work."""
        self._closing.clear()
        app = web.Application()
        app.add_routes(self._admin_routes())
        app.add_routes(self._routes())
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await self._start_site()
        self._port = int(self._runner.addresses[0][1])
        if self._admin_port is not None:
            admin = web.Application()
            admin.add_routes(self._admin_routes())
            self._admin_runner = web.AppRunner(admin, shutdown_timeout=0.5, access_log=None)
            await self._admin_runner.setup()
            site = web.TCPSite(self._admin_runner, self._host, self._admin_port)
            await site.start()
            self._bound_admin_port = int(self._admin_runner.addresses[0][1])

    async def stop(self) -> None:
        """Stops everything; requests held by a "hang" fault are released at once."""
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
            self._admin_runner = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def _start_site(self) -> None:
        assert self._runner is not None
        if self._site is None:
            self._site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
            await self._site.start()

    async def _stop_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def port(self) -> int:
        """The bound port of the simulator's HTTP server."""
        return self._port

    @property
    def admin_port(self) -> int:
        """The bound separate admin port, or the main port when there is none."""
        return self._bound_admin_port or self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the simulator's HTTP server."""
        return f"http://{self._host}:{self._port}"

    # ----------------------------------------------------------------- faults

    async def inject(self, fault: Fault) -> None:
        """Puts a fault in force (see the README for each kind).

        Args:
            fault: The fault.
        """
        self.faults.add(fault, self.core)
        if isinstance(fault, Outage) and fault.mode == "refuse":
            await self._on_refuse(fault)
        self._on_faults_changed()

    async def clear_faults(self) -> None:
        """Ends every fault (and reopens the socket after a "refuse" outage)."""
        self.faults.clear()
        if self._runner is not None:
            await self._start_site()
        self._on_faults_changed()

    async def _on_refuse(self, fault: Outage) -> None:
        await self._stop_site()
        if fault.duration is not None:
            duration = fault.duration

            async def reopen() -> None:
                await asyncio.sleep(duration)
                if not self.faults.outage_active() and self._runner is not None:
                    await self._start_site()

            self._spawn(reopen())

    def _on_faults_changed(self) -> None:
        """Hook for dialects that mirror faults elsewhere (the database views)."""

    # ----------------------------------------------------------------- dispatch

    async def _serve(
        self,
        request: web.Request,
        operation: str,
        work: Work,
        *,
        outage: Callable[[], web.StreamResponse],
        traceparent: str | None = None,
    ) -> web.StreamResponse:
        """Runs one dialect operation under the faults in force and logs it.

        Args:
            request: The HTTP request.
            operation: Canonical operation name.
            work: The operation.
            outage: Renders the vendor's service-unavailable answer.
            traceparent: The trace context the request carried in its body (SOAP header);
                default: its ``traceparent`` HTTP header.

        Returns:
            The response.
        """
        record = RequestRecord(time.monotonic(), now_cst(), operation)
        record.traceparent = (
            traceparent if traceparent is not None else request.headers.get("traceparent", "")
        )
        self.request_log.append(record)
        if self.faults.outage_active():
            record.outcome = "outage"
            assert self.faults.outage is not None
            if self.faults.outage.mode == "refuse" and request.transport is not None:
                # A connection kept alive from before the outage: reset it like a dead host.
                request.transport.abort()
            return outage()
        delay = self.faults.latency_for(operation)
        if delay > 0:
            await asyncio.sleep(delay)
        self.faults.apply_archives(self.core)
        response, committed, outcome = work()
        record.outcome = outcome
        if committed:
            fault = self.faults.take_timeout(operation)
            if fault is not None:
                record.outcome = "lost"
                if fault.mode == "hang":
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), fault.hang_seconds)
                elif request.transport is not None:
                    request.transport.abort()
        return response

    # ----------------------------------------------------------------- admin API

    def _routes(self) -> list[web.RouteDef]:
        """Dialect routes; the database HIS has none."""
        return []

    def _admin_routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_admin/info", self._admin_info),
            web.get("/_admin/faults", self._admin_faults),
            web.post("/_admin/faults", self._admin_add_fault),
            web.delete("/_admin/faults", self._admin_clear_faults),
            web.get("/_admin/counts", self._admin_counts),
            web.get("/_admin/requests", self._admin_requests),
            web.delete("/_admin/requests", self._admin_clear_requests),
            web.post("/_admin/bills", self._admin_add_bill),
            web.post("/_admin/schedules/{schedule_id}/suspend", self._admin_suspend),
            web.get("/_admin/patients", self._admin_patients),
            web.get("/_admin/appointments", self._admin_appointments),
            web.get("/_admin/bookable_slot", self._admin_bookable_slot),
        ]

    async def _admin_json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as err:
            raise web.HTTPBadRequest(text=f"body is not JSON: {err}") from err
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body must be a JSON object")
        return body

    async def _admin_info(self, request: web.Request) -> web.Response:
        patients = sorted(self.core.patients)[:5]
        return _json(
            {
                "dialect": self.dialect,
                "seed": self.core.seed,
                "today": self.core.today.isoformat(),
                "port": self.port,
                "sample_patient_ids": patients,
                **self._extra_info(),
            }
        )

    async def _admin_patients(self, request: web.Request) -> web.Response:
        return _json(
            {
                "patients": [
                    {
                        "patient_id": p.patient_id,
                        "name": p.name,
                        "gender": p.gender,
                        "birth_date": p.birth_date.isoformat(),
                        "id_type": p.id_type,
                        "id_number": p.id_number,
                        "phone": p.phone,
                    }
                    for p in sorted(self.core.patients.values(), key=lambda p: p.patient_id)
                ]
            }
        )

    async def _admin_appointments(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "")
        return _json(
            {
                "appointments": [
                    {
                        "appt_id": a.appt_id,
                        "hold_id": a.hold_id,
                        "status": a.status,
                        "patient_id": a.patient_id,
                        "slot_id": a.slot_id,
                        "fee_cash": a.fee_cash,
                        "receipt_number": a.receipt_number,
                        "paid": a.payment.amount if a.payment is not None else 0,
                        "merchant_order_id": a.payment.merchant_order_id
                        if a.payment is not None
                        else "",
                        "refund_receipt": a.refund_receipt,
                    }
                    for a in self.core.bookings(status=status)
                ]
            }
        )

    async def _admin_bookable_slot(self, request: web.Request) -> web.Response:
        try:
            slot = self.core.bookable_slot(
                patient_id=request.query.get("patient_id", ""),
                min_days_ahead=int(request.query.get("min_days_ahead", "1")),
                skip=int(request.query.get("skip", "0")),
            )
        except ValueError as err:
            return _json({"error": f"min_days_ahead, skip: {err}"}, status=400)
        except HisError as err:
            return _json({"error": err.message}, status=404)
        return _json(
            {
                "slot_id": slot.slot_id,
                "schedule_id": slot.schedule_id,
                "start": slot.start.isoformat(),
            }
        )

    def _extra_info(self) -> dict[str, Any]:
        return {}

    async def _admin_faults(self, request: web.Request) -> web.Response:
        return _json({"faults": [fault_to_json(f) for f in self.faults.active()]})

    async def _admin_add_fault(self, request: web.Request) -> web.Response:
        body = await self._admin_json(request)
        try:
            fault = fault_from_json(body)
        except ValueError as err:
            return _json({"error": str(err)}, status=400)
        await self.inject(fault)
        return _json({"faults": [fault_to_json(f) for f in self.faults.active()]})

    async def _admin_clear_faults(self, request: web.Request) -> web.Response:
        await self.clear_faults()
        return _json({"faults": []})

    async def _admin_counts(self, request: web.Request) -> web.Response:
        counts = self.core.counts()
        out: dict[str, Any] = dict(counts.__dict__)
        patient_id = request.query.get("patient_id", "")
        slot_id = request.query.get("slot_id", "")
        if patient_id or slot_id:
            out["matching_bookings"] = len(
                self.core.bookings(patient_id=patient_id, slot_id=slot_id)
            )
        if patient_id:
            out["matching_charges"] = len(self.core.charges_of(patient_id))
        return _json(out)

    async def _admin_requests(self, request: web.Request) -> web.Response:
        records = self.request_log
        operation = request.query.get("operation")
        if operation:
            records = [r for r in records if r.operation == operation]
        return _json(
            {
                "requests": [
                    {
                        "monotonic": r.monotonic,
                        "time": r.time.isoformat(),
                        "operation": r.operation,
                        "outcome": r.outcome,
                    }
                    for r in records
                ]
            }
        )

    async def _admin_clear_requests(self, request: web.Request) -> web.Response:
        self.request_log.clear()
        return _json({"requests": []})

    async def _admin_add_bill(self, request: web.Request) -> web.Response:
        body = await self._admin_json(request)
        try:
            bill = self.core.add_bill(str(body.get("patient_id", "")))
        except HisError as err:
            return _json({"error": err.message}, status=404)
        self._on_faults_changed()
        return _json({"bill_id": bill.bill_id, "total_fen": bill.total})

    async def _admin_suspend(self, request: web.Request) -> web.Response:
        body = await self._admin_json(request)
        try:
            sched = self.core.suspend_schedule(
                request.match_info["schedule_id"], str(body.get("reason", "医生临时停诊"))
            )
        except HisError as err:
            return _json({"error": err.message}, status=404)
        self._on_faults_changed()
        return _json({"schedule_id": sched.schedule_id, "version": sched.version})

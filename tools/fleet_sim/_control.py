"""The fleet's control API: a small local HTTP/JSON server (bind it to loopback).

======================  ======================================================================
``GET /status``         counts, faults in force, changes applied, memory per edge
``GET /hospitals``      every edge (``?id=`` one): id, name, region, connected, faults
``POST /faults``        ``{"fault": F, <selection>, "latency": s}`` puts fault F on the
                        selection: ``offline`` (drop the tunnel, stay down), ``slow`` (every
                        call waits ``latency`` s, default 1), ``renamed``/``garbage``/``rewind``
                        (malformed GetChanges); answers ``{"applied": [ids]}``
``DELETE /faults``      ``{<selection>}`` (empty body: all) ends every fault; offline edges
                        dial again
``POST /changes``       ``{"changes": n, <selection>}`` applies n random directory changes to
                        each selected hospital at once (a burst)
``POST /rate``          ``{"changes_per_second": r}`` sets the change rate per hospital
======================  ======================================================================

A selection is one of ``"hospitals": [ids]``, ``"fraction": 0.1``, ``"count": 20``,
``"all": true``; fractions and counts take the same seeded order every time. Errors are
HTTP 400 (bad request) or 404 (unknown hospital) with ``{"error": "…"}``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tools.fleet_sim._edge import SimEdge
from tools.fleet_sim._fleet import Fleet, FleetError

__all__ = ["control_app"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def _body(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw and empty_ok:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise FleetError(f"body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise FleetError("body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FleetError(f"{key} must be a number")
    if kind is int and not float(value).is_integer():
        raise FleetError(f"{key} must be an integer")
    return kind(value)


def _select(fleet: Fleet, body: dict[str, Any]) -> list[SimEdge]:
    hospitals = body.get("hospitals", [])
    if not isinstance(hospitals, list) or not all(isinstance(h, str) for h in hospitals):
        raise FleetError("hospitals must be a list of hospital ids")
    everyone = body.get("all", False)
    if not isinstance(everyone, bool):
        raise FleetError("all must be true or false")
    return fleet.select(
        hospitals=hospitals,
        fraction=_number(body, "fraction", float),
        count=_number(body, "count", int),
        everyone=everyone,
    )


def control_app(fleet: Fleet) -> web.Application:
    """The control API of ``fleet`` as an aiohttp application.

    Args:
        fleet: the fleet to control.

    Returns:
        The application (serve it on a loopback port).
    """

    @web.middleware
    async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except FleetError as err:
            status = 404 if str(err).startswith("unknown hospital") else 400
            return _json({"error": str(err)}, status=status)
        return response

    async def status(request: web.Request) -> web.Response:
        return _json(fleet.status())

    async def hospitals(request: web.Request) -> web.Response:
        wanted = request.query.get("id")
        edges = fleet.select(hospitals=[wanted]) if wanted else list(fleet.edges.values())
        return _json({"hospitals": [fleet.describe(e) for e in edges]})

    async def add_fault(request: web.Request) -> web.Response:
        body = await _body(request)
        fault = body.get("fault")
        if not isinstance(fault, str):
            raise FleetError("fault is required")
        edges = _select(fleet, body)
        latency = _number(body, "latency", float)
        await fleet.fault(edges, fault, latency=1.0 if latency is None else latency)
        return _json({"applied": [e.hospital.hospital_id for e in edges]})

    async def clear_faults(request: web.Request) -> web.Response:
        body = await _body(request, empty_ok=True)
        edges = _select(fleet, body) if body else list(fleet.edges.values())
        await fleet.clear(edges)
        return _json({"cleared": [e.hospital.hospital_id for e in edges]})

    async def changes(request: web.Request) -> web.Response:
        body = await _body(request)
        count = _number(body, "changes", int)
        if count is None:
            raise FleetError("changes is required")
        edges = _select(fleet, body)
        return _json({"applied": fleet.burst(edges, count)})

    async def rate(request: web.Request) -> web.Response:
        body = await _body(request)
        value = _number(body, "changes_per_second", float)
        if value is None or not 0 <= value <= 1000:
            raise FleetError("changes_per_second must be in [0, 1000]")
        fleet.change_rate = value
        return _json({"changes_per_second": value})

    app = web.Application(middlewares=[errors])
    app.add_routes(
        [
            web.get("/status", status),
            web.get("/hospitals", hospitals),
            web.post("/faults", add_fault),
            web.delete("/faults", clear_faults),
            web.post("/changes", changes),
            web.post("/rate", rate),
        ]
    )
    return app

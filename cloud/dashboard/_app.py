"""The operators' dashboard: server-rendered pages behind a login, refreshed live.

An aiohttp application the node serves on its own port (``[dashboard] listen``; HTTPS with
the node's certificate, plaintext only on loopback like every other listener). Operators
sign in with the dashboard password (``DATA_DIR/dashboard-password``, made on first start,
mode 0600, or the file ``[dashboard] password_file`` names); the session is an HMAC-signed
cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) that expires after 12 hours. Sign-in
attempts are rate-limited per address, and request bodies are bounded.

Pages: ``/`` all hospitals at a glance (hospitals that are down first, in red), refreshed
from ``/api/overview`` every ``refresh_seconds`` without reloading the page,
``/hospital/{id}`` (with its recent failed calls, each linking to its trace), and
``/trace/{request id}`` (``/api/trace/{id}`` in JSON): one request's hops across nodes, the
edge and the HIS, as the node's ``LookupTrace`` joins them — the tree ``hplus trace``
prints. Every page has the request-id search box. Templates are Jinja2 with autoescaping on.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import jinja2
from aiohttp import web

from cloud.dashboard._overview import Overview
from cloud.dashboard._templates import TEMPLATES
from cloud.traces import REQUEST_ID_FORMAT, FailedCall, TraceTree, parse_request_id, trace_tree
from hplus.cloud.v1 import operations_pb2
from mesh import errors
from mesh.files import create_private_file

__all__ = ["COOKIE", "SESSION_SECONDS", "Dashboard", "Traces"]

log = logging.getLogger(__name__)

COOKIE = "hplus_dashboard"
SESSION_SECONDS = 12 * 3600
_MAX_BODY = 16 * 1024
_LOGIN_ATTEMPTS = 10
"""Sign-in attempts per address per minute."""
_TRACKED_ADDRESSES = 10_000
_USER = "operator"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Traces(Protocol):
    """Where the trace page's spans come from (`cloud.traces.TraceLookup`)."""

    async def lookup(
        self, trace_id: str, *, local_only: bool
    ) -> operations_pb2.LookupTraceResponse:
        """The whole trace; raises ``errors.NotFound`` / ``errors.InvalidArgument``."""
        ...

    async def recent_failures(self, hospital_id: str, *, limit: int = 20) -> list[FailedCall]:
        """The newest failed calls concerning a hospital."""
        ...


def _secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """Read a secret file, creating it (mode 0600) with ``make()`` the first time."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        create_private_file(path, make())
        log.info("dashboard: created %s (mode 0600)", path)
    except FileExistsError:  # another process made it first
        pass
    return path.read_bytes()


class _Attempts:
    """Sign-in attempts per address in the current minute, bounded in addresses."""

    def __init__(self) -> None:
        self._counts: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def allow(self, address: str) -> bool:
        minute = int(time.monotonic() // 60)
        seen_minute, count = self._counts.pop(address, (minute, 0))
        if seen_minute != minute:
            count = 0
        self._counts[address] = (minute, count + 1)
        while len(self._counts) > _TRACKED_ADDRESSES:
            self._counts.popitem(last=False)
        return count < _LOGIN_ATTEMPTS


class Dashboard:
    """The dashboard's web application and its server.

    Args:
        overview: where the rows come from.
        data_dir: where the password and the session key live.
        password_file: the password's file (default ``DATA_DIR/dashboard-password``).
        refresh_seconds: how often the pages refresh themselves.
        node_id: this node (shown in the pages).
        traces: the trace lookup (``None``: the node keeps no spans; the trace page says so).
    """

    def __init__(
        self,
        overview: Overview,
        *,
        data_dir: Path,
        password_file: Path | None = None,
        refresh_seconds: float = 5.0,
        node_id: str = "",
        traces: Traces | None = None,
    ) -> None:
        self.overview = overview
        self.traces = traces
        self.refresh_seconds = refresh_seconds
        self.node_id = node_id
        self.password_file = password_file or data_dir / "dashboard-password"
        if password_file is None:
            _secret_file(self.password_file, lambda: secrets.token_urlsafe(18).encode() + b"\n")
        self._key = _secret_file(data_dir / "dashboard.key", lambda: secrets.token_bytes(32))
        self._attempts = _Attempts()
        self._env = jinja2.Environment(
            loader=jinja2.DictLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
        )
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.scheme = "http"

    # -- sessions ----------------------------------------------------------------------

    def _password(self) -> bytes:
        try:
            return self.password_file.read_bytes().strip()
        except OSError as err:
            log.error("dashboard: cannot read %s: %s", self.password_file, err.strerror)
            return b""

    def _sign(self, payload: bytes) -> str:
        mac = hmac.new(self._key, payload, hashlib.sha256).digest()
        return (
            base64.urlsafe_b64encode(payload).decode()
            + "."
            + base64.urlsafe_b64encode(mac).decode()
        )

    def session_cookie(self, now: float | None = None) -> str:
        """A signed session value (what a successful sign-in sets)."""
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        return self._sign(json.dumps({"u": _USER, "exp": expires}).encode())

    def _valid(self, value: str | None) -> bool:
        if not value or len(value) > 512 or "." not in value:
            return False
        body, _, mac = value.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body.encode())
            given = base64.urlsafe_b64decode(mac.encode())
        except ValueError:
            return False
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(given, expected):
            return False
        try:
            claims = json.loads(payload)
        except ValueError:
            return False
        return isinstance(claims, dict) and int(claims.get("exp", 0)) > time.time()

    # -- application -------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=_MAX_BODY, middlewares=[self._auth])
        app.router.add_get("/login", self._login_page)
        app.router.add_post("/login", self._login)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/", self._index)
        app.router.add_get("/api/overview", self._api_overview)
        app.router.add_get("/hospital/{hospital_id}", self._hospital)
        app.router.add_get("/trace", self._trace_search)
        app.router.add_get("/trace/{request_id}", self._trace)
        app.router.add_get("/api/trace/{request_id}", self._api_trace)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login" or self._valid(request.cookies.get(COOKIE)):
            response = await handler(request)
            response.headers.setdefault("Cache-Control", "no-store")
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            return response
        if request.path.startswith("/api/"):
            return web.json_response({"error": "sign in first"}, status=401)
        raise web.HTTPSeeOther("/login")

    def _render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        body = self._env.get_template(name).render(
            node_id=self.node_id, refresh_ms=int(self.refresh_seconds * 1000), **context
        )
        return web.Response(text=body, content_type="text/html", status=status)

    async def _login_page(self, request: web.Request) -> web.Response:
        return self._render("login.html", error="")

    async def _login(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or "unknown"
        if not self._attempts.allow(address):
            log.warning("dashboard: too many sign-in attempts from %s", address)
            return self._render("login.html", status=429, error="Too many attempts; wait a minute.")
        form = await request.post()
        given = str(form.get("password", "")).encode()
        expected = self._password()
        if not expected or not hmac.compare_digest(given, expected):
            log.warning("dashboard: failed sign-in from %s", address)
            return self._render("login.html", status=401, error="Wrong password.")
        log.info("dashboard: operator signed in from %s", address)
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(
            COOKIE,
            self.session_cookie(),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(status=303, headers={"Location": "/login"})
        response.del_cookie(COOKIE)
        return response

    async def _index(self, request: web.Request) -> web.Response:
        rows, failed = await self.overview.rows()
        return self._render(
            "overview.html", rows=rows, columns=self.overview.columns, failed=failed
        )

    async def _api_overview(self, request: web.Request) -> web.Response:
        rows, failed = await self.overview.rows()
        return web.json_response(
            {
                "rows": [r.to_json() for r in rows],
                "columns": [c.field for c in self.overview.columns],
                "failed": failed,
                "up": sum(r.state == "up" for r in rows),
                "total": len(rows),
            }
        )

    async def _hospital(self, request: web.Request) -> web.Response:
        hospital_id = request.match_info["hospital_id"]
        rows, failed = await self.overview.rows()
        found = [r for r in rows if r.hospital_id == hospital_id]
        if not found:
            return self._render("missing.html", status=404, hospital_id=hospital_id)
        failures: list[FailedCall] = []
        if self.traces is not None:
            try:
                failures = await self.traces.recent_failures(hospital_id)
            except Exception:
                log.exception("dashboard: recent failures of %s failed", hospital_id)
                failed = [*failed, "recent failures"]
        return self._render(
            "hospital.html",
            row=found[0],
            columns=self.overview.columns,
            failed=failed,
            failures=[
                {
                    "trace_id": f.trace_id,
                    "name": f.name,
                    "node": f.node,
                    "at": dt.datetime.fromtimestamp(f.start_ns / 1e9, dt.UTC).isoformat(
                        sep=" ", timespec="milliseconds"
                    ),
                    "message": f.message,
                }
                for f in failures
            ],
        )

    # -- traces ------------------------------------------------------------------------

    async def _find_trace(self, raw: str) -> tuple[int, TraceTree | None, str]:
        """(HTTP status, the tree or None, the message shown instead)."""
        trace_id = parse_request_id(raw)
        if trace_id is None:
            return 400, None, f"Not a request id: expected {REQUEST_ID_FORMAT}."
        if self.traces is None:
            return 503, None, "This node keeps no spans: trace lookup is not available here."
        try:
            answer = await self.traces.lookup(trace_id, local_only=False)
        except errors.NotFound:
            return (
                404,
                None,
                f"No span of request {trace_id} is known. Failed calls keep their spans; "
                "successful ones only when sampled (span_sample_rate), and every span only "
                "for span_retention_seconds.",
            )
        except errors.InvalidArgument:
            return 400, None, f"Not a request id: expected {REQUEST_ID_FORMAT}."
        except Exception as err:
            log.exception("dashboard: trace %s failed", trace_id)
            return 503, None, f"The trace lookup failed ({type(err).__name__}); see the node's log."
        return 200, trace_tree(answer), ""

    async def _trace_search(self, request: web.Request) -> web.Response:
        raw = request.query.get("id", "")
        trace_id = parse_request_id(raw)
        if trace_id is None:
            return self._render(
                "trace.html",
                status=400,
                request_id=raw,
                tree=None,
                error=f"Not a request id: expected {REQUEST_ID_FORMAT}.",
            )
        raise web.HTTPSeeOther(f"/trace/{trace_id}")

    async def _trace(self, request: web.Request) -> web.Response:
        raw = request.match_info["request_id"]
        status, tree, error = await self._find_trace(raw)
        return self._render(
            "trace.html",
            status=status,
            request_id=raw,
            tree=tree,
            error=error,
            hospitals=sorted({h.span.hospital_id for h in tree.hops if h.span.hospital_id})
            if tree is not None
            else [],
        )

    async def _api_trace(self, request: web.Request) -> web.Response:
        status, tree, error = await self._find_trace(request.match_info["request_id"])
        if tree is None:
            return web.json_response({"error": error}, status=status)
        culprit = tree.culprit
        return web.json_response(
            {
                "trace_id": tree.trace_id,
                "started": tree.started.isoformat(timespec="milliseconds"),
                "total_ms": round(tree.total_ms, 3),
                "complete": tree.complete,
                "incomplete": tree.incomplete,
                "pending_hospital_ids": tree.pending_hospital_ids,
                "failing_span_id": culprit.span.span_id if culprit is not None else "",
                "hops": [
                    {
                        "span_id": h.span.span_id,
                        "parent_span_id": h.span.parent_span_id,
                        "depth": h.depth,
                        "name": h.name,
                        "kind": h.kind,
                        "tier": h.tier,
                        "node": h.node,
                        "hospital_id": h.span.hospital_id,
                        "offset_ms": round(h.offset_ms, 3),
                        "duration_ms": round(h.duration_ms, 3),
                        "code": h.code,
                        "message": h.message,
                        "owner": h.span.owner,
                        "failed_here": h.culprit,
                        "attributes": dict(h.span.attributes),
                    }
                    for h in tree.hops
                ],
            }
        )

    # -- server ------------------------------------------------------------------------

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Serve on ``host:port`` (0: any free port); returns the bound port."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        server = site._server  # aiohttp exposes the bound sockets only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self.scheme = "https" if ssl_context is not None else "http"
        log.info(
            "dashboard: %s://%s:%d/ (password in %s)",
            self.scheme,
            host,
            self.port,
            self.password_file,
        )
        return self.port

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

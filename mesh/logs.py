"""Log lines of every process: the request id on each, JSON as an option, identifiers masked.

`configure_logging` is called once by each process's entry point (``hplus cloud run``,
``hplus edge run``, the simulators); it installs on the root handler:

* `RequestIdFilter`: every record gets ``request_id``, the W3C trace id of the call being
  served (the current span's trace: `CURRENT_SPAN`, which ``mesh.observability`` sets for
  each call it serves, else the current OpenTelemetry span's, else one set with
  `bind_request_id`), or ``-`` outside any call;
* `MaskingFilter`: mobile numbers and resident ID numbers in the message are masked
  (``138****8000``, ``1101**********1234``) whatever code wrote them;
* the text format (``time LEVEL logger: message request_id=…``) or, with ``format="json"``,
  `JsonFormatter` (one object per line: ``time``, ``level``, ``logger``, ``message``,
  ``request_id``, and ``exc`` when there is a traceback).

`PeerLimitedLog` bounds lines a peer can trigger (refusals, protocol violations): per peer,
a few lines then one summary per interval, with a bounded number of peers remembered.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
import time
from collections import OrderedDict
from typing import Any, Protocol

from opentelemetry import trace

__all__ = [
    "CURRENT_SPAN",
    "LOG_FORMATS",
    "JsonFormatter",
    "MaskingFilter",
    "PeerLimitedLog",
    "RequestIdFilter",
    "TextFormatter",
    "bind_request_id",
    "configure_logging",
    "current_request_id",
    "mask_identifiers",
]

LOG_FORMATS = ("text", "json")
"""The values of the ``log_format`` settings."""

_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("hplus_request_id", default="")


class _Traced(Protocol):
    @property
    def trace_hex(self) -> str:
        """The trace id, 32 lower-case hex digits."""


CURRENT_SPAN: contextvars.ContextVar[Any] = contextvars.ContextVar("hplus_span", default=None)
"""The span of the call being served (a ``mesh.observability`` ``CallSpan``: its
``trace_hex`` is the request id), or ``None``. Set and reset by the observability hooks
around each call: a context variable costs far less per call than an OpenTelemetry
context switch."""


def current_request_id() -> str:
    """The request id (W3C trace id, 32 hex digits) of the work in progress, or ``""``."""
    span: _Traced | None = CURRENT_SPAN.get()
    if span is not None:
        return span.trace_hex
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        return format(ctx.trace_id, "032x")
    return _REQUEST_ID.get()


def bind_request_id(request_id: str) -> contextvars.Token[str]:
    """Names the request id of the current task where no span is open (reset with the token)."""
    return _REQUEST_ID.set(request_id)


# Mainland mobile numbers (optionally +86) and resident ID numbers (17 digits + check).
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{4})(\d{12})(\d{1}[0-9Xx])(?![0-9A-Za-z])")
_PHONE = re.compile(r"(?<![0-9])(\+?86)?(1[3-9]\d)(\d{4})(\d{4})(?![0-9])")


def mask_identifiers(text: str) -> str:
    """``text`` with resident ID numbers and mobile numbers masked."""
    if not any(c.isdigit() for c in text):
        return text
    text = _ID_NUMBER.sub(lambda m: f"{m[1]}{'*' * 12}{m[3]}", text)
    return _PHONE.sub(lambda m: f"{m[2]}****{m[4]}", text)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``-`` outside any request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


class MaskingFilter(logging.Filter):
    """Masks patient identifiers in the formatted message (the record is rewritten once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler's error path
            return True
        masked = mask_identifiers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (structured logs for collectors)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            out["exc"] = mask_identifiers(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message request_id=…`` (the id only when there is one).

    The id goes last so the line's start keeps the form tools parse.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text."""
        line = super().format(record)
        request_id = getattr(record, "request_id", "-")
        if request_id == "-":
            return line
        head, sep, tail = line.partition("\n")  # a traceback follows the first line
        return f"{head} request_id={request_id}{sep}{tail}"


def configure_logging(
    *, level: int = logging.INFO, log_format: str = "text", stream: Any = None
) -> logging.Handler:
    """Installs the one root handler of this process (replacing earlier ones of ours).

    Args:
        level: the root level.
        log_format: ``"text"`` or ``"json"``.
        stream: where lines go (default: standard error).

    Returns:
        The handler.

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format: {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler._hplus = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_hplus", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


class PeerLimitedLog:
    """Log lines a peer can trigger, bounded per peer.

    Each peer (an address, a credential) may cause ``burst`` lines per ``interval``
    seconds; beyond that its lines are counted, and the next line after the interval says
    how many were suppressed. At most ``max_peers`` peers are remembered (least recently
    seen forgotten first), so the limiter itself is bounded.

    Args:
        logger: where lines go.
        burst: lines per peer per interval.
        interval: seconds.
        max_peers: peers remembered.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval: float = 60.0,
        max_peers: int = 10_000,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._interval = interval
        self._max = max_peers
        self._peers: OrderedDict[str, list[float]] = OrderedDict()
        """peer -> [window start, lines in window, suppressed]."""

    def log(self, level: int, peer: str, msg: str, *args: Any) -> bool:
        """Logs ``msg % args`` for ``peer`` unless over its budget; True when written."""
        now = time.monotonic()
        state = self._peers.get(peer)
        if state is None:
            state = [now, 0.0, 0.0]
            self._peers[peer] = state
            if len(self._peers) > self._max:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        if now - state[0] >= self._interval:
            suppressed = int(state[2])
            state[0], state[1], state[2] = now, 0.0, 0.0
            if suppressed:
                self._log.log(
                    level, "%d more line(s) for peer %s were suppressed", suppressed, peer
                )
        if state[1] >= self._burst:
            state[2] += 1
            return False
        state[1] += 1
        self._log.log(level, msg, *args)
        return True

    def warning(self, peer: str, msg: str, *args: Any) -> bool:
        """`log` at WARNING."""
        return self.log(logging.WARNING, peer, msg, *args)

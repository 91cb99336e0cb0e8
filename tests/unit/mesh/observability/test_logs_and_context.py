"""Log lines (request id, JSON, masking, per-peer bounds) and W3C trace context parsing."""

from __future__ import annotations

import io
import json
import logging
import secrets

import pytest
from opentelemetry import trace

import mesh.logs
import mesh.observability
from mesh.logs import (
    JsonFormatter,
    MaskingFilter,
    PeerLimitedLog,
    RequestIdFilter,
    bind_request_id,
    configure_logging,
    mask_identifiers,
)
from mesh.observability import Tracing, context_from_traceparent, traceparent_of


def test_public_surfaces_are_pinned() -> None:
    assert mesh.logs.__all__ == [
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
    assert "Tracing" in mesh.observability.__all__
    assert sorted(mesh.observability.__all__) == sorted(set(mesh.observability.__all__))


def test_patient_identifiers_are_masked() -> None:
    text = "book for 110101199003071234 phone 13800138000 or +8613912345678, order 42"
    masked = mask_identifiers(text)
    assert "110101199003071234" not in masked
    assert "1101************34" in masked
    assert "13800138000" not in masked
    assert "138****8000" in masked
    assert "139****5678" in masked
    assert masked.endswith("order 42")
    # Ids and hex that are not identifiers stay as they are.
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert mask_identifiers(trace_id) == trace_id


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args, None)


def test_every_line_carries_the_request_id_of_the_current_span() -> None:
    tracing = Tracing(service="test", node="n", sink=None)
    record = _record("outside")
    RequestIdFilter().filter(record)
    assert record.request_id == "-"  # type: ignore[attr-defined]
    with tracing.tracer.start_as_current_span("call") as span:
        record = _record("inside")
        RequestIdFilter().filter(record)
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert record.request_id == trace_id  # type: ignore[attr-defined]
    token = bind_request_id("a" * 32)
    try:
        record = _record("bound")
        RequestIdFilter().filter(record)
        assert record.request_id == "a" * 32  # type: ignore[attr-defined]
    finally:
        mesh.logs._REQUEST_ID.reset(token)


def test_json_lines_are_one_object_with_the_request_id_and_masked_text() -> None:
    stream = io.StringIO()
    handler = configure_logging(log_format="json", stream=stream)
    try:
        tracing = Tracing(service="test", node="n", sink=None)
        with tracing.tracer.start_as_current_span("call") as span:
            logging.getLogger("hplus.test").warning("patient %s failed", "13800138000")
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert line["request_id"] == format(span.get_span_context().trace_id, "032x")
        assert line["message"] == "patient 138****8000 failed"
        assert (line["level"], line["logger"]) == ("WARNING", "hplus.test")
    finally:
        logging.getLogger().removeHandler(handler)
    stream = io.StringIO()
    handler = configure_logging(log_format="text", stream=stream)
    try:
        logging.getLogger("hplus.test").warning("outside a call")
        with tracing.tracer.start_as_current_span("call") as span:
            logging.getLogger("hplus.test").warning("inside a call")
        first, second = stream.getvalue().splitlines()
        assert first.endswith(" WARNING hplus.test: outside a call")
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert second.endswith(f" WARNING hplus.test: inside a call request_id={trace_id}")
    finally:
        logging.getLogger().removeHandler(handler)
    with pytest.raises(ValueError, match="log_format: 'xml' is not one of text, json"):
        configure_logging(log_format="xml")


def test_masking_filter_rewrites_the_record_once() -> None:
    record = _record("id %s", "110101199003071234")
    MaskingFilter().filter(record)
    assert record.getMessage() == "id 1101************34"
    formatted = JsonFormatter().format(record)
    assert "110101199003071234" not in formatted


def test_peer_limited_log_bounds_lines_per_peer_and_peers_remembered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("hplus.peers")
    limited = PeerLimitedLog(logger, burst=3, interval=3600.0, max_peers=2)
    with caplog.at_level(logging.WARNING, logger="hplus.peers"):
        written = [limited.warning("1.2.3.4", "refused %d", i) for i in range(50)]
        assert written.count(True) == 3
        assert limited.warning("5.6.7.8", "other peer") is True
        # A third peer pushes out the least recently seen: the limiter stays bounded.
        limited.warning("9.9.9.9", "third peer")
        assert len(limited._peers) == 2
    assert [r.getMessage() for r in caplog.records][:3] == ["refused 0", "refused 1", "refused 2"]
    assert len(caplog.records) == 5


def test_peer_limited_log_reports_what_it_suppressed_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = PeerLimitedLog(logging.getLogger("hplus.peers"), burst=1, interval=0.0)
    with caplog.at_level(logging.WARNING, logger="hplus.peers"):
        limited.warning("p", "first")
        limited._peers["p"][1] = 1.0  # the burst is spent ...
        limited._peers["p"][2] = 7.0  # ... and 7 lines were held back
        limited.warning("p", "again")
    messages = [r.getMessage() for r in caplog.records]
    assert "7 more line(s) for peer p were suppressed" in messages
    assert messages[-1] == "again"


def test_traceparent_round_trip_and_rejections() -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    ctx = context_from_traceparent(f"00-{trace_id}-{parent}-01")
    assert ctx is not None
    span_ctx = trace.get_current_span(ctx).get_span_context()
    assert format(span_ctx.trace_id, "032x") == trace_id
    assert format(span_ctx.span_id, "016x") == parent
    assert span_ctx.is_remote
    assert span_ctx.trace_flags.sampled
    tracing = Tracing(service="test", node="n", sink=None)
    child = tracing.tracer.start_span("child", context=ctx)
    header = traceparent_of(child)
    assert header.startswith(f"00-{trace_id}-")
    assert not header.endswith(f"{parent}-01")
    for bad in [
        "",
        "garbage",
        f"ff-{trace_id}-{parent}-01",  # version ff is invalid
        f"00-{'0' * 32}-{parent}-01",  # all-zero trace id
        f"00-{trace_id}-{'0' * 16}-01",  # all-zero parent
        f"00-{trace_id.upper()}-{parent}-01",  # upper case
        f"00-{trace_id}-{parent}-01-extra",  # version 00 has exactly four fields
        f"00-{trace_id[:-1]}-{parent}-01",
    ]:
        assert context_from_traceparent(bad) is None, bad
    # A later version may append fields.
    assert context_from_traceparent(f"01-{trace_id}-{parent}-00-more") is not None

"""The tree of hops `hplus trace` and the dashboard's trace page both show."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import status_pb2

from cloud.traces import failing_span, parse_request_id, trace_tree
from hplus.cloud.v1 import operations_pb2
from tools.cli._trace import render_trace

T0 = 1_780_000_000_000_000_000


def span(
    span_id: str,
    parent: str,
    start_ms: float,
    took_ms: float,
    *,
    code: int = 0,
    message: str = "",
    node: str = "node-a",
    tier: int = operations_pb2.SPAN_TIER_CLOUD,
    name: str = "svc/M",
) -> operations_pb2.Span:
    start = timestamp_pb2.Timestamp()
    start.FromNanoseconds(T0 + int(start_ms * 1e6))
    took = duration_pb2.Duration()
    took.FromNanoseconds(int(took_ms * 1e6))
    service, _, method = name.partition("/")
    return operations_pb2.Span(
        span_id=span_id,
        parent_span_id=parent,
        tier=tier,
        service=service,
        method=method,
        node=node,
        start_time=start,
        duration=took,
        status=status_pb2.Status(code=code, message=message),
    )


def answer(
    *spans: operations_pb2.Span, complete: bool = True
) -> operations_pb2.LookupTraceResponse:
    return operations_pb2.LookupTraceResponse(
        trace_id="ab" * 16, spans=list(spans), complete=complete
    )


def test_request_ids_are_taken_as_pasted_or_refused() -> None:
    tid = secrets.token_hex(16)
    assert parse_request_id(tid) == tid
    assert parse_request_id(f"  {tid.upper()}\n") == tid
    assert parse_request_id(f"00-{tid}-{secrets.token_hex(8)}-01") == tid
    for bad in ("", "xyz", tid[:-1], tid + "0", "0" * 32, "g" * 32, f"00-{tid}", "<script>"):
        assert parse_request_id(bad) is None, bad


def test_hops_come_depth_first_with_offsets_and_the_failing_leaf_marked() -> None:
    # Out of order on purpose: the tree follows parents, children by start time.
    spans = answer(
        span("c2", "b1", 6, 1, code=14, message="UNAVAILABLE: HIS down", tier=3, node="e"),
        span("a1", "", 0, 10, code=14, message="UNAVAILABLE: UNAVAILABLE: HIS down"),
        span("b1", "a1", 2, 6, code=14, node="node-b"),
        span("c1", "b1", 3, 2, node="e", tier=2),
    )
    tree = trace_tree(spans)
    assert [(h.span.span_id, h.depth) for h in tree.hops] == [
        ("a1", 0),
        ("b1", 1),
        ("c1", 2),
        ("c2", 2),
    ]
    assert [h.offset_ms for h in tree.hops] == [0, 2, 3, 6]
    assert tree.total_ms == 10
    assert failing_span(spans.spans) == "c2"
    culprit = tree.culprit
    assert culprit is not None
    assert (culprit.span.span_id, culprit.tier, culprit.code) == ("c2", "his", "UNAVAILABLE")
    assert culprit.detail == "HIS down"
    assert tree.hops[0].detail == "HIS down"
    assert tree.incomplete == ""
    lines = render_trace(spans)
    assert lines[0] == f"trace {'ab' * 16}  started 2026-05-28T20:26:40.000+00:00  4 span(s)"
    assert lines[4] == (
        "      svc/M  [his:e]  +6.0ms  1.0ms  code 14: UNAVAILABLE: HIS down   <== failed here"
    )


def test_an_orphan_is_a_second_root_and_the_trace_says_it_is_incomplete() -> None:
    tree = trace_tree(answer(span("a1", "", 0, 5), span("x1", "gone", 1, 1), complete=False))
    assert [(h.span.span_id, h.depth) for h in tree.hops] == [("a1", 0), ("x1", 0)]
    assert tree.culprit is None
    assert tree.incomplete == "some parents are missing"
    pending = answer(span("a1", "", 0, 5), complete=False)
    pending.pending_hospital_ids.append("h-001")
    assert trace_tree(pending).incomplete == "no answer from the edge of h-001"
    assert render_trace(pending)[-1] == "incomplete: no answer from the edge of h-001"


@pytest.mark.parametrize("code", [0, 5])
def test_a_single_span_is_its_own_tree(code: int) -> None:
    tree = trace_tree(answer(span("a1", "", 0, 0, code=code)))
    assert len(tree.hops) == 1
    assert tree.total_ms == 0
    assert (tree.culprit is not None) == (code != 0)


def test_hplus_trace_names_the_expected_format_before_asking_any_node(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tools.cli import main
    from tools.cli._base import EXIT_BAD_INPUT

    # No node is configured here: the id is refused before anything is asked.
    code = main(["trace", "not-a-request-id", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "REQUEST_ID: 'not-a-request-id' is not a request id" in err
    assert "32 hexadecimal digits" in err

"""A hostile edge against a real cloud node process (``hplus cloud run``, TLS).

One node and one well-behaved edge process (hospital ``good-hospital``) serve the whole
module; each test runs one attack from a fresh ``python -m tools.hostile`` process with the
credential of ``hostile-hospital`` and checks what `expectations.check` states. The node's
ping interval is 0.5 s, so "three intervals" bounds are a few seconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.hostile.expectations import check
from tools.hostile import NodeArena

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NodeArena]:
    async with NodeArena(Path(tmp_path_factory.mktemp("node-arena"))) as running:
        yield running


async def test_ping_flood_is_closed_with_resource_exhausted(arena: NodeArena) -> None:
    m = await arena.measure("ping-flood")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0, detail="flood")


async def test_frames_that_carry_nothing_are_closed_with_resource_exhausted(
    arena: NodeArena,
) -> None:
    m = await arena.measure("empty-frames")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0, detail="flood")


@pytest.mark.slow
async def test_an_edge_that_never_reads_is_closed_with_resource_exhausted(
    arena: NodeArena,
) -> None:
    # 16 calls of 1 MiB to an edge that announced a 2 GiB window and reads nothing: the
    # node queues at most its outbound bound and ends the tunnel after 3 ping intervals.
    m = await arena.measure("no-read", seconds=8.0)
    check(m, code="RESOURCE_EXHAUSTED", within=6.0, detail="does not read")
    assert set(m.target_calls) == {"UNAVAILABLE"}  # the calls failed with the tunnel


async def test_an_outer_message_over_the_tunnel_limit_is_refused_by_grpc(
    arena: NodeArena,
) -> None:
    # The public port's limit is the tunnel's (2 MiB), not the registry's 32 MiB.
    m = await arena.measure("big-outer")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0)
    assert "larger than max" in m.result["details"]


async def test_garbage_is_a_protocol_violation(arena: NodeArena) -> None:
    m = await arena.measure("garbage")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="does not decode")
    assert m.result["code"] == "INVALID_ARGUMENT"  # the edge is told, not just the log


async def test_a_hello_over_its_field_limits_is_refused_naming_the_field(
    arena: NodeArena,
) -> None:
    m = await arena.measure("huge-handshake")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="hello.edge_id: 1048576 bytes")
    assert "limit of 128" in m.result["details"]


async def test_a_window_of_two_to_the_32_is_refused(arena: NodeArena) -> None:
    m = await arena.measure("window-handshake")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="hello.initial_window_bytes")


async def test_a_window_update_overflow_is_a_protocol_violation(arena: NodeArena) -> None:
    m = await arena.measure("window-overflow")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="overflows")


async def test_flow_control_holds_one_message_and_refuses_a_chunk_beyond_credit(
    arena: NodeArena,
) -> None:
    # The attack: a unary call answered with 1 MiB messages in 100 KB chunks. The
    # node grants credit for the one message it holds and no more until it is read.
    m = await arena.measure("flow-control")
    check(m, code="INVALID_ARGUMENT", within=5.0, detail="exceeds credit")
    assert m.result["notes"]["bytes_accepted"] <= 2 * 1024 * 1024


async def test_partial_messages_never_completed_end_at_their_deadline(
    arena: NodeArena,
) -> None:
    # 300 calls answered with the start of a 4 MiB message: 100 streams at a time (the
    # rest wait at the node), each holding at most its window; the tunnel stays up.
    m = await arena.measure("partial-messages", seconds=4.0, close_within=0.5)
    check(m, code="", within=None, tunnel_closed=False)
    assert set(m.target_calls) == {"DEADLINE_EXCEEDED"}, m.target_calls
    assert m.result["notes"]["partial_messages"] == 100


async def test_an_edge_opening_a_stream_is_a_protocol_violation(arena: NodeArena) -> None:
    m = await arena.measure("opens")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="never opened")


async def test_huge_response_metadata_fails_only_those_calls(arena: NodeArena) -> None:
    m = await arena.measure("huge-metadata", seconds=4.0, close_within=0.5)
    check(m, code="RESOURCE_EXHAUSTED", within=None, tunnel_closed=False)
    assert set(m.target_calls) == {"RESOURCE_EXHAUSTED"}, m.target_calls
    assert len(m.offences) == 1  # twenty calls refused, one line

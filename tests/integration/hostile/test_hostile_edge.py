"""A fake gateway against a real edge process (``hplus edge run``, TLS).

Each test starts a hostile gateway (``python -m tools.hostile ATTACK --listen``) and a fresh
edge process that dials it first and a well-behaved in-process gateway second; the attack
starts once the edge's good tunnel answers, and the good tunnel's calls are watched (see
`expectations.check`). The hostile welcome sets a 0.5 s ping interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.hostile.expectations import check
from tools.hostile import EdgeArena

# A fresh edge process per attack (its hostile tunnel moves to the good gateway once it is
# closed): a few seconds each on a shared machine.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(120),
    pytest.mark.slow,
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def arena(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EdgeArena]:
    async with EdgeArena(Path(tmp_path_factory.mktemp("edge-arena"))) as running:
        yield running


async def test_ping_flood_is_closed_with_resource_exhausted(arena: EdgeArena) -> None:
    m = await arena.measure("ping-flood")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0, detail="flood")


async def test_frames_that_carry_nothing_are_closed_with_resource_exhausted(
    arena: EdgeArena,
) -> None:
    m = await arena.measure("empty-frames")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0, detail="flood")


async def test_a_gateway_that_never_reads_is_closed_with_resource_exhausted(
    arena: EdgeArena,
) -> None:
    # The gateway calls the edge over and over and reads nothing: the edge's replies stop
    # at its outbound bound, then the tunnel ends after three ping intervals.
    m = await arena.measure("no-read", seconds=10.0)
    check(m, code="RESOURCE_EXHAUSTED", within=10.0, detail="does not read")


async def test_an_outer_message_over_the_tunnel_limit_is_refused(arena: EdgeArena) -> None:
    m = await arena.measure("big-outer")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0, detail="larger than max")


async def test_garbage_is_a_protocol_violation(arena: EdgeArena) -> None:
    m = await arena.measure("garbage")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="does not decode")
    assert m.result["code"] == "INVALID_ARGUMENT"  # the edge told the gateway why


async def test_a_welcome_over_its_field_limits_is_refused(arena: EdgeArena) -> None:
    m = await arena.measure("huge-handshake")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="welcome.node_id: 1048576 bytes")


async def test_a_window_of_two_to_the_32_is_refused(arena: EdgeArena) -> None:
    m = await arena.measure("window-handshake")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="welcome.initial_window_bytes")


async def test_a_window_update_overflow_is_a_protocol_violation(arena: EdgeArena) -> None:
    m = await arena.measure("window-overflow")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="overflows")


async def test_flow_control_holds_one_message_and_refuses_a_chunk_beyond_credit(
    arena: EdgeArena,
) -> None:
    # A 4 MiB request held one byte short: the edge lends the credit for that message
    # from its large-message budget, grants nothing more, and a chunk beyond is a violation.
    m = await arena.measure("flow-control")
    check(m, code="INVALID_ARGUMENT", within=5.0, detail="exceeds credit")
    assert m.result["notes"]["bytes_accepted"] < 4 * 1024 * 1024


async def test_thousands_of_partial_messages_are_refused_then_a_violation(
    arena: EdgeArena,
) -> None:
    # 100 streams hold the start of a 4 MiB message each; the opens beyond are refused
    # (RESOURCE_EXHAUSTED) and a gateway that keeps opening is a protocol violation.
    m = await arena.measure("partial-messages")
    check(m, code="INVALID_ARGUMENT", within=5.0, detail="beyond max_concurrent_streams")
    assert [o[1] for o in m.offences] == ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"]


async def test_opens_without_end_are_refused_then_a_violation(arena: EdgeArena) -> None:
    m = await arena.measure("opens")
    check(m, code="INVALID_ARGUMENT", within=3.0, detail="beyond max_concurrent_streams")


async def test_open_and_cancel_bursts_are_closed_with_resource_exhausted(
    arena: EdgeArena,
) -> None:
    m = await arena.measure("rapid-reset")
    check(m, code="RESOURCE_EXHAUSTED", within=3.0, detail="cancel")


async def test_huge_request_metadata_refuses_only_those_streams(arena: EdgeArena) -> None:
    m = await arena.measure("huge-metadata", close_within=0.5)
    check(m, code="RESOURCE_EXHAUSTED", within=None, tunnel_closed=False)
    assert m.result["notes"]["refused"] == {"RESOURCE_EXHAUSTED": 50}
    assert len(m.offences) == 1  # fifty streams refused, one line


@pytest.mark.timeout(60)
async def test_a_gateway_that_drains_at_once_does_not_cause_a_reconnect_storm(
    arena: EdgeArena,
) -> None:
    # Welcome then go-away on every connection, for 4 s: the edge backs off (1 s, 2 s,
    # 4 s windows with jitter) instead of redialling at once (652 times in 12 s before).
    result = await arena.drain_storm(seconds=4.0)
    assert 2 <= result["notes"]["connections"] <= 10, result


@pytest.mark.timeout(60)
async def test_the_edge_waits_the_reconnect_after_a_draining_node_asks_for(
    arena: EdgeArena,
) -> None:
    result = await arena.drain_storm(seconds=4.0, reconnect_after=1.5)
    gaps = result["notes"]["gaps"]
    assert gaps, result
    assert all(gap >= 1.4 for gap in gaps), result
    assert result["notes"]["connections"] <= 3, result

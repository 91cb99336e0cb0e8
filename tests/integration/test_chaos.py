"""The chaos run over real processes, small and seeded (``python -m bench.chaos``).

A node on PostgreSQL and Redis, three HIS simulators with their edges and the payment
simulator, as processes; journeys through the patient API over gRPC with TLS; every fault
kind injected at least once (HIS timeouts after commit, a tunnel dropped mid-call, an edge
and the node SIGKILLed and restarted, notifications lost and duplicated, Redis cut,
PostgreSQL connections terminated). Every order settles, every invariant is 0 — checked
against the simulators' own records and the three-way reconciliation.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import FAULTS, JOURNEY_FAULTS, main, schedule


# Ten processes, one node restart and one edge restart: ~90 s measured on this 2-core
# machine shared with other sessions.
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_a_small_seeded_chaos_run_over_processes_keeps_every_invariant(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    report = await main(
        orders=12,
        seed=5,
        concurrency=4,
        kinds=frozenset(FAULTS),
        rate=0.5,
        settle_seconds=180.0,
        postgres_url=postgres_url,
        redis_url=redis_url,
        keep=tmp_path / "var",
    )
    lines = "\n".join(report.lines())
    assert report.orders == 12, lines
    assert {kind for kind in FAULTS if report.faults[kind] >= 1} == set(FAULTS), lines
    assert report.invariants == dict.fromkeys(report.invariants, 0), lines
    assert sum(report.states.values()) == 12
    assert report.states["confirmed"] + report.states["cancelled"] >= 6, lines


def test_the_seed_decides_the_fault_schedule() -> None:
    kinds = frozenset(FAULTS) - {"redis_cut"}
    one = schedule(7, 1000, kinds, 1.2)
    assert one == schedule(7, 1000, kinds, 1.2)
    assert one != schedule(8, 1000, kinds, 1.2)
    platform = {b.kind for b in one}
    assert platform == kinds - JOURNEY_FAULTS  # each chosen platform kind, no other
    assert len(one) == 120
    assert [b.after for b in one] == sorted(b.after for b in one)
    assert schedule(7, 12, frozenset({"node_killed"}), 0.5)[0].kind == "node_killed"

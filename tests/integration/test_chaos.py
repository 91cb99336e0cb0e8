"""A small seeded chaos run (``python -m bench.chaos``): journeys under HIS timeouts after
commit, lost and duplicated notifications, lost refund answers and a replaced coordinator;
every money invariant holds and every order settles."""

from __future__ import annotations

from bench.chaos._run import _main


async def test_a_small_seeded_chaos_run_keeps_every_invariant() -> None:
    report = await _main(orders=10, seed=5, concurrency=4)
    assert sum(report.faults.values()) >= 3, report.faults
    assert report.orders == 10
    assert report.invariants == dict.fromkeys(report.invariants, 0), report.lines()
    assert sum(report.states.values()) == 10

from __future__ import annotations

import random

import pytest

from frontend_server.dialer import Backoff
from mesh.retry import RetryPolicy


def test_full_jitter_grows_to_the_cap() -> None:
    b = Backoff(RetryPolicy(initial=1.0, maximum=8.0), rng=random.Random(1))
    windows = []
    for _ in range(6):
        windows.append(b.window())
        delay = b.next_delay()
        assert 0.0 <= delay <= windows[-1]
    assert windows == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_delays_are_spread_not_lock_step() -> None:
    # 2,000 edges losing the same node at the same moment must not come back together.
    policy = RetryPolicy(initial=1.0, maximum=60.0)
    delays = [Backoff(policy, rng=random.Random(i)).next_delay() for i in range(2000)]
    buckets = [0] * 10
    for d in delays:
        buckets[min(int(d * 10), 9)] += 1
    assert min(buckets) > 120  # roughly uniform over [0, 1): 200 per tenth expected
    assert max(buckets) < 280


def test_reset_only_after_a_stable_connection() -> None:
    b = Backoff(RetryPolicy(initial=1.0, maximum=60.0), stable_after=30.0, rng=random.Random(2))
    for _ in range(4):
        b.next_delay()
    assert b.window() == 16.0
    b.next_delay(connected_for=5.0)  # flapping: no reset, the window keeps growing
    assert b.window() == 32.0
    b.next_delay(connected_for=31.0)  # was stable: start over
    assert b.failures == 1
    assert b.window() == 2.0


def test_a_day_of_failures_still_gets_a_delay() -> None:
    b = Backoff(RetryPolicy(initial=1.0, maximum=60.0), rng=random.Random(3))
    for _ in range(5000):  # the window's exponent once overflowed after 1,024 failures
        assert 0.0 <= b.next_delay() <= 60.0
    assert b.window() == 60.0


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="need stable_after >= 0"):
        Backoff(RetryPolicy(), stable_after=-1)

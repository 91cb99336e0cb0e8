"""Real-time HIS calls start within the profile's rate, burst and concurrency."""

from __future__ import annotations

import asyncio
import bisect
import time

from frontend_server.adapters import HisAdapter
from frontend_server.profile import HisLimits
from frontend_server.services import paced


class Recording:
    """A fake adapter (a seam we own) that records when calls start and how many overlap."""

    dialect = "rest"
    capabilities = None

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.running = 0
        self.most = 0
        self.closed = False

    async def list_departments(self) -> tuple[()]:
        self.starts.append(time.monotonic())
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.01)
        self.running -= 1
        return ()

    async def aclose(self) -> None:
        self.closed = True


async def test_a_burst_of_calls_never_exceeds_rate_burst_or_concurrency() -> None:
    fake = Recording()
    adapter: HisAdapter = paced(fake, HisLimits(rate_per_second=100.0, burst=5, max_concurrency=3))  # type: ignore[arg-type]
    await asyncio.gather(*(adapter.list_departments() for _ in range(60)))
    assert len(fake.starts) == 60
    assert fake.most <= 3
    times = sorted(fake.starts)
    window = 0.2
    busiest = max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))
    # Slack for calls that got their token on time but started late on a loaded machine;
    # without pacing, all 60 start in the same window.
    assert busiest <= 5 + 100 * window + 5
    # (60 - 5) / 100 = 0.55 s at the rate; the first call may itself start late.
    assert times[-1] - times[0] >= 0.3
    assert adapter.dialect == "rest"
    await adapter.aclose()
    assert fake.closed

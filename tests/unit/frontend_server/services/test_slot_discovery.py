"""The rule gate's slot discovery continues where a deadline cut it short.

Found by the chaos run: on a cold edge of a HIS without a change feed (SOAP), each HoldSlot
of an unlisted slot read the sessions in the same order until the call's deadline cut it
short, so the slot's session was never reached and every hold timed out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from frontend_server.adapters import HisCapabilityError, Slot
from frontend_server.profile import load_profile
from frontend_server.rules import RuleEngine
from frontend_server.services import SlotIndex
from frontend_server.services._rules import RuleGate

_PROFILE = Path(__file__).resolve().parents[4] / "frontend_server" / "profiles"


class _Session:
    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id


class _SlowHis:
    """Answers ``budget`` slot listings per attempt; the others wait until cancelled."""

    def __init__(self, sessions: int, budget: int) -> None:
        self.sessions = [f"S{n}" for n in range(1, sessions + 1)]
        self.budget = budget
        self.waiting = 0
        self.stalled = asyncio.Event()
        self._never = asyncio.Event()

    def next_attempt(self) -> None:
        self.budget_left = self.budget
        self.waiting = 0
        self.stalled.clear()

    async def get_changes(self, since: Any) -> Any:
        raise HisCapabilityError("no change feed")

    async def list_schedules(self, *, start: dt.date, end: dt.date) -> list[_Session]:
        return [_Session(s) for s in self.sessions]

    async def list_slots(self, schedule_id: str) -> list[Slot]:
        if self.budget_left > 0:
            self.budget_left -= 1
            start = dt.datetime(2026, 12, 8, 8, 0, tzinfo=dt.UTC)
            slot = Slot(f"X{schedule_id[1:]}", schedule_id, 0, start, start, 0, 0, 0, "FREE")
            return [slot]
        self.waiting += 1
        if self.waiting >= 6:  # every reader of the gate is stuck: the deadline is next
            self.stalled.set()
        await self._never.wait()
        raise AssertionError("unreachable")


async def test_each_cut_short_discovery_reads_sessions_the_last_did_not() -> None:
    his = _SlowHis(sessions=9, budget=3)
    index = SlotIndex()
    profile = load_profile(_PROFILE / "city-first-hospital.toml")
    gate = RuleGate(
        RuleEngine(profile.appointment),
        his,  # type: ignore[arg-type]
        timezone="Asia/Shanghai",
        clock=lambda: dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.UTC),
        index=index,
    )
    found = []
    for _ in range(3):  # three holds, each cut short by its deadline
        his.next_attempt()
        attempt = asyncio.ensure_future(gate.check_hold(slot_id="X9", patient_id="P1"))
        await his.stalled.wait()
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        found.append(sum(index.indexed(s) for s in his.sessions))
    assert found == [3, 6, 9]
    assert index.get("X9") == ("S9", dt.date(2026, 12, 8))

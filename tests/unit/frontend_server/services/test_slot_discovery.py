"""The rule gate's slot discovery: one at a time, and it outlives a call cut short.

Found by the chaos run: on a cold edge of a HIS without a change feed (SOAP), concurrent
HoldSlot calls of unlisted slots each read every session, in the same order, until their
deadlines cut them short, so the slots' sessions were never reached and every hold timed out.
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
    """A HIS without a change feed whose slot listings wait until ``release`` is set."""

    def __init__(self, sessions: int) -> None:
        self.sessions = [f"S{n}" for n in range(1, sessions + 1)]
        self.schedule_reads = 0
        self.slot_reads: list[str] = []
        self.waiting = 0
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    async def get_changes(self, since: Any) -> Any:
        raise HisCapabilityError("no change feed")

    async def list_schedules(self, *, start: dt.date, end: dt.date) -> list[_Session]:
        self.schedule_reads += 1
        return [_Session(s) for s in self.sessions]

    async def list_slots(self, schedule_id: str) -> list[Slot]:
        self.slot_reads.append(schedule_id)
        self.waiting += 1
        if self.waiting >= 6:  # every reader the gate allows is waiting
            self.stalled.set()
        await self.release.wait()
        start = dt.datetime(2026, 12, 8, 8, 0, tzinfo=dt.UTC)
        return [Slot(f"X{schedule_id[1:]}", schedule_id, 0, start, start, 0, 0, 0, "FREE")]


def _gate(his: _SlowHis, index: SlotIndex) -> RuleGate:
    profile = load_profile(_PROFILE / "city-first-hospital.toml")
    return RuleGate(
        RuleEngine(profile.appointment),
        his,  # type: ignore[arg-type]
        timezone="Asia/Shanghai",
        clock=lambda: dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.UTC),
        index=index,
    )


async def test_concurrent_holds_share_one_discovery_that_outlives_their_deadlines() -> None:
    his = _SlowHis(sessions=9)
    index = SlotIndex()
    gate = _gate(his, index)
    holds = [
        asyncio.ensure_future(gate.check_hold(slot_id=f"X{n}", patient_id="P1")) for n in (9, 8, 7)
    ]
    await his.stalled.wait()
    for hold in holds:  # every call's deadline passes before the HIS answers
        hold.cancel()
    await asyncio.gather(*holds, return_exceptions=True)
    assert his.schedule_reads == 1  # one discovery for the three calls
    his.release.set()
    # The next call waits for that discovery (no second one) and finds the slot it reached
    # after the calls were gone; then it reads the slot's own session, as always.
    target = await gate._target("X9")
    assert target is not None
    assert target.slot.slot_id == "X9"
    assert index.get("X9") == ("S9", dt.date(2026, 12, 8))
    assert sorted(his.slot_reads[:9]) == his.sessions  # each session read once
    assert his.slot_reads[9:] == ["S9"]


def test_the_index_knows_which_sessions_it_has_seen() -> None:
    index = SlotIndex()
    start = dt.datetime(2026, 12, 8, 8, 0, tzinfo=dt.UTC)
    index.note([Slot("X1", "S1", 0, start, start, 0, 0, 0, "FREE")])
    assert index.indexed("S1")
    assert not index.indexed("S2")

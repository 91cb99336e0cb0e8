"""What must hold after every attack of the hostile-peer suite (issue 9), in one place.

Each test runs one attack from ``tools.hostile`` against a real process and checks: the
offender's tunnel was closed (or its streams refused) with the right status within a stated
time; the target's RSS stayed within ``RSS_BUDGET_MIB`` of its baseline; a well-behaved
hospital on the same process kept answering, with generous latency bounds (the machine is
shared); and the target logged the offence once, not once per frame.
"""

from __future__ import annotations

from tools.hostile import Measurement

RSS_BUDGET_MIB = 64.0
"""Peak RSS of the target above its baseline, during the attack."""

GOOD_P50_MS = 250.0
"""The well-behaved hospital's median latency during the attack (about 2 ms at rest)."""

GOOD_MAX_MS = 2500.0
"""Its slowest call during the attack (every call has a 5 s deadline)."""

MAX_LOG_LINES = 2
"""The target's warnings about one offender: the tunnel's end, and stream refusals before."""


def check(
    m: Measurement,
    *,
    code: str,
    within: float | None,
    tunnel_closed: bool = True,
    detail: str = "",
) -> None:
    """Asserts the four properties; ``within`` is the bound on the time to close."""
    where = f"{m.attack} against the {m.target}: {m.summary()}"
    if tunnel_closed:
        assert m.result["closed"], where
        assert m.code == code, where
        assert m.close_seconds is not None, where
        assert within is not None
        assert m.close_seconds <= within, where
    else:
        assert m.code == code, where
    if detail:
        details = m.tunnel_offence[2] if m.tunnel_offence else m.result.get("details", "")
        assert detail in details, where
    assert m.rss_growth_mib <= RSS_BUDGET_MIB, where
    assert not m.good_failures, where
    assert m.good_during_ms, where  # it was called during the attack, and answered
    assert Measurement.percentile(m.good_during_ms, 0.5) <= GOOD_P50_MS, where
    assert max(m.good_during_ms) <= GOOD_MAX_MS, where
    assert len(m.offences) <= MAX_LOG_LINES, m.target_log

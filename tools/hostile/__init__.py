"""Hostile peers for the tunnel: scripted attacks from either end, and the arena to run them.

``python -m tools.hostile ATTACK --target HOST:PORT --credential FILE --ca PEM`` attacks a
cloud node as a misbehaving edge; ``python -m tools.hostile ATTACK --listen HOST:PORT`` serves
as a misbehaving gateway for an edge to dial. Each prints one JSON object (an `AttackResult`)
on its last line. `ATTACKS` lists the attack classes (one function each, in ``_attacks``);
the hostile-peer tests and ``bench.hostile`` run them through `NodeArena` and `EdgeArena`,
which also measure the target's memory and a well-behaved hospital's latency.
"""

from __future__ import annotations

from tools.hostile._arena import EdgeArena, Measurement, NodeArena, rss_kib
from tools.hostile._attacks import ATTACKS, Attack, AttackResult, Options, run_attack
from tools.hostile._peer import HostileGateway, Peer, dial, hello

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackResult",
    "EdgeArena",
    "HostileGateway",
    "Measurement",
    "NodeArena",
    "Options",
    "Peer",
    "dial",
    "hello",
    "rss_kib",
    "run_attack",
]

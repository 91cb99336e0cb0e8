"""``python -m bench.observability [--quick]``: the cost of tracing + metrics.

Two figures, each measured with and without observability in alternating rounds of one
run (so load on a shared machine hits both alike), reported as the median of the
per-round throughput ratios:

* tunnel, unary c=64: ``bench.tunnel``'s arrangement; one edge process without hooks, one
  with the edge's (SERVER span per call, spans to a ring), and on the cloud side a plain
  channel against one with the node's tunnel hook (CLIENT span, traceparent in the open
  frame, metrics) and its span table (SQLite) flushed on the same loop;
* a hospital call through a node, c=16: a cloud node, an edge (EdgeApp) and a REST HIS
  simulator, all observed (``observability.enabled``) against the same three unobserved;
  the call enters the node's internal endpoint (as ``hplus cloud call`` does).

Also the span storage per call: bytes of the span files (SQLite, with index and WAL)
divided by the observed calls. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.observability._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short rounds (< 60 s in total)")
    parser.add_argument("--rounds", type=int, help="rounds per figure (default 4 quick, 8)")
    args = parser.parse_args()
    rounds = args.rounds or (4 if args.quick else 8)
    asyncio.run(run(seconds=1.5 if args.quick else 4.0, rounds=rounds))


if __name__ == "__main__":
    main()

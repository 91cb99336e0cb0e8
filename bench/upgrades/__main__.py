"""``python -m bench.upgrades [--edges 50] [--distance 20] [--node-rate BYTES]``.

Fleet upgrades through the real download path: the cloud's upgrade handlers on a TLS port
(with the node's shared byte bucket at ``--node-rate``), and ``--edges`` upgrade agents
(the fleet simulator's, without tunnels) that download, apply, verify and "install". Each
release is a package of this repository's sources at a commit (``git archive``), so deltas
are between real builds. Half the edges run the previous release (consecutive), half one
``--distance`` commits older (distant). Two rollouts side by side in the same run, waves
``1,10%,50%,100%``: one where edges have their installed package (the cloud serves deltas),
the baseline where they do not (full packages). Prints bytes actually received per edge and
the time from wave start to 100 %; the last line is the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.upgrades._run import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upgrades", description=__doc__)
    parser.add_argument("--edges", type=int, default=50)
    parser.add_argument("--distance", type=int, default=20, help="commits between distant releases")
    parser.add_argument(
        "--node-rate",
        type=int,
        default=20_000_000,
        help="[upgrades] node_max_bytes_per_second (default: the setting's default)",
    )
    args = parser.parse_args()
    asyncio.run(run(edges=args.edges, distance=args.distance, node_rate=args.node_rate))


if __name__ == "__main__":
    main()

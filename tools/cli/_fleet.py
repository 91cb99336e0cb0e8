"""``hplus fleet …``: operate the fleet of front-end servers.

MINIMAL PLACEHOLDER from the ``liveconfig`` branch: it only hosts ``hplus fleet config``
(``tools/cli/_fleet_config.py``). The packages branch adds the full ``fleet`` group here
(keys, package, upgrade, …); when merging, keep that module and have its ``register`` call
``_fleet_config.register_config(<the fleet subparsers>)``.
"""

from __future__ import annotations

import argparse

from tools.cli._base import Parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Parser]) -> None:
    """Add the ``fleet`` command group."""
    from tools.cli import _fleet_config

    p = sub.add_parser("fleet", help="operate the fleet of front-end servers")
    fleet = p.add_subparsers(dest="fleet_cmd", metavar="COMMAND", parser_class=Parser)
    fleet.required = True
    _fleet_config.register_config(fleet)

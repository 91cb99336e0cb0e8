"""``python -m tools.cli`` runs the ``hplus`` command line."""

from __future__ import annotations

from tools.cli import main

raise SystemExit(main())

"""The operators' dashboard the node serves: every hospital at a glance, behind a login.

`Overview` assembles one row per hospital from presence, the read store's sync state and
any source another part adds (`Overview.add_source`); `Dashboard` serves it over HTTPS.
"""

from __future__ import annotations

from cloud.dashboard._app import COOKIE, SESSION_SECONDS, Dashboard
from cloud.dashboard._overview import Column, HospitalRow, Overview, Source

__all__ = ["COOKIE", "SESSION_SECONDS", "Column", "Dashboard", "HospitalRow", "Overview", "Source"]

"""The edge-admin service every front-end server offers the cloud."""

from __future__ import annotations

from frontend_server.admin.servicer import EdgeAdminServicer

__all__ = ["EdgeAdminServicer"]

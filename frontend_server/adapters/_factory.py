"""Builds the adapter of a settings' dialect."""

from __future__ import annotations

from frontend_server.adapters._db import DbHisAdapter
from frontend_server.adapters._protocol import HisAdapter
from frontend_server.adapters._rest import RestHisAdapter
from frontend_server.adapters._settings import DialectSettings
from frontend_server.adapters._soap import SoapHisAdapter

__all__ = ["make_adapter"]


def make_adapter(settings: DialectSettings) -> HisAdapter:
    """Builds the adapter for ``settings.dialect``.

    Args:
        settings: The HIS's settings.

    Returns:
        A :class:`RestHisAdapter`, :class:`SoapHisAdapter` or :class:`DbHisAdapter`.
    """
    if settings.dialect == "rest":
        return RestHisAdapter(settings)
    if settings.dialect == "soap":
        return SoapHisAdapter(settings)
    return DbHisAdapter(settings)

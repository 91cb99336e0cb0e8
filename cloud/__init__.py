"""The hplus cloud node: gateway, patient API, registry, fleet and operations services."""

from __future__ import annotations

from cloud.config import NodeConfig, TlsMode
from cloud.node import CloudNode, serve

__all__ = ["CloudNode", "NodeConfig", "TlsMode", "serve"]

"""Versions this build of hplus reports: its own, and the contract release it speaks."""

from __future__ import annotations

import importlib.metadata

__all__ = ["CONTRACT_RELEASE", "SOFTWARE_VERSION"]

CONTRACT_RELEASE = "1.3.0"
"""The newest frozen contract release that ``gen/`` was generated from (a test keeps this in
step with ``proto/releases``)."""

try:
    SOFTWARE_VERSION = importlib.metadata.version("hplus")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    SOFTWARE_VERSION = "0.0.0+source"
"""This build's version, from the installed package's metadata."""

"""Tunnel benchmark: the same servicer directly over ``grpc.aio`` and through the tunnel."""

from __future__ import annotations

from bench.tunnel._edge import SERVICE

__all__ = ["SERVICE"]

"""Operations: what operators ask a cloud node (connected hospitals, traces)."""

from __future__ import annotations

from cloud.operations.servicer import OperationsServicer

__all__ = ["OperationsServicer"]

"""CRC32C of download chunks (``DownloadUpgradeResponse.crc32c``), the same on both sides."""

from __future__ import annotations

import google_crc32c

__all__ = ["crc32c"]


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``: catches a chunk damaged in transit before it is stored."""
    return int(google_crc32c.value(data))

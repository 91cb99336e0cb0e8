"""The patient API package's public surface is pinned."""

from __future__ import annotations

import cloud.patient_api


def test_the_public_surface_is_pinned() -> None:
    assert sorted(cloud.patient_api.__all__) == [
        "DEFAULT_CACHE_BYTES",
        "DEFAULT_CACHE_ENTRIES",
        "DEFAULT_CACHE_SECONDS",
        "DEFAULT_PAGE_SIZE",
        "MAX_DATE_DISTANCE_DAYS",
        "MAX_PAGE_SIZE",
        "OrderApi",
        "PAGE_TOKEN_LIFETIME",
        "PageTokens",
        "PatientApiServicer",
        "ReadCache",
        "ReportApi",
        "TokenError",
    ]

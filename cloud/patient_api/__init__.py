"""The patient API (``hplus.cloud.v1.PatientApiService``) on the node's public endpoint.

Reads of reference data come from the public read store (`cloud.readstore`), never from a
hospital, paged with signed AIP-158 tokens (`PageTokens`) and, for the hot ListSlots,
through a short bounded cache (`ReadCache`). Orders and reports are parts of their own
that the servicer delegates to once the caller is signed in (`OrderApi`, `ReportApi`).
"""

from __future__ import annotations

from cloud.patient_api._cache import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_ENTRIES,
    DEFAULT_CACHE_SECONDS,
    ReadCache,
)
from cloud.patient_api._parts import OrderApi, ReportApi
from cloud.patient_api._tokens import PAGE_TOKEN_LIFETIME, PageTokens, TokenError
from cloud.patient_api._validate import (
    DEFAULT_PAGE_SIZE,
    MAX_DATE_DISTANCE_DAYS,
    MAX_PAGE_SIZE,
)
from cloud.patient_api.servicer import PatientApiServicer

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_ENTRIES",
    "DEFAULT_CACHE_SECONDS",
    "DEFAULT_PAGE_SIZE",
    "MAX_DATE_DISTANCE_DAYS",
    "MAX_PAGE_SIZE",
    "PAGE_TOKEN_LIFETIME",
    "OrderApi",
    "PageTokens",
    "PatientApiServicer",
    "ReadCache",
    "ReportApi",
    "TokenError",
]

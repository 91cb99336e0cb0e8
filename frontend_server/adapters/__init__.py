"""HIS adapters: one per vendor dialect, configured by settings, no hospital-specific code.

Every adapter implements :class:`HisAdapter` over dialect-neutral records
(:mod:`~frontend_server.adapters._domain`) and raises the :class:`HisError` tree. A
hospital's differences (endpoint, deadlines, renamed fields, code tables, trade codes,
paths, table prefix, missing capabilities) are all :class:`DialectSettings` values::

    async with make_adapter(DialectSettings(dialect="rest", url="http://his:8080")) as his:
        departments = await his.list_departments()
"""

from __future__ import annotations

from frontend_server.adapters._codec import mask_identifier
from frontend_server.adapters._db import DbHisAdapter
from frontend_server.adapters._domain import (
    Appointment,
    Bill,
    BillItem,
    Capabilities,
    Changes,
    Charge,
    DailyLedger,
    DeletedEntity,
    Department,
    Doctor,
    ImagingResult,
    LabResult,
    LedgerEntry,
    Money,
    Observation,
    Patient,
    PatientCard,
    PatientRegistration,
    Payment,
    Quote,
    Refund,
    RegisteredPatient,
    Report,
    ReportSummary,
    Schedule,
    Slot,
)
from frontend_server.adapters._errors import (
    HisCapabilityError,
    HisError,
    HisProtocolError,
    HisRejected,
    HisTimeout,
    HisUnavailable,
    RejectReason,
)
from frontend_server.adapters._factory import make_adapter
from frontend_server.adapters._fieldmaps import DOCUMENTED_FIELDS
from frontend_server.adapters._protocol import HisAdapter
from frontend_server.adapters._rest import RestHisAdapter
from frontend_server.adapters._settings import CAPABILITY_NAMES, DialectName, DialectSettings
from frontend_server.adapters._soap import SoapHisAdapter
from frontend_server.adapters._vendors import (
    DEFAULT_CODE_TABLES,
    DEFAULT_REST_PATHS,
    DEFAULT_SOAP_TRADE_CODES,
    NEUTRAL_CODES,
)

__all__ = [
    "CAPABILITY_NAMES",
    "DEFAULT_CODE_TABLES",
    "DEFAULT_REST_PATHS",
    "DEFAULT_SOAP_TRADE_CODES",
    "DOCUMENTED_FIELDS",
    "NEUTRAL_CODES",
    "Appointment",
    "Bill",
    "BillItem",
    "Capabilities",
    "Changes",
    "Charge",
    "DailyLedger",
    "DbHisAdapter",
    "DeletedEntity",
    "Department",
    "DialectName",
    "DialectSettings",
    "Doctor",
    "HisAdapter",
    "HisCapabilityError",
    "HisError",
    "HisProtocolError",
    "HisRejected",
    "HisTimeout",
    "HisUnavailable",
    "ImagingResult",
    "LabResult",
    "LedgerEntry",
    "Money",
    "Observation",
    "Patient",
    "PatientCard",
    "PatientRegistration",
    "Payment",
    "Quote",
    "Refund",
    "RegisteredPatient",
    "RejectReason",
    "Report",
    "ReportSummary",
    "RestHisAdapter",
    "Schedule",
    "Slot",
    "SoapHisAdapter",
    "make_adapter",
    "mask_identifier",
]

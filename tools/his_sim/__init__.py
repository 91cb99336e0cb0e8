"""Simulated hospital information systems (HIS) to develop and test the edge adapters against.

Three vendors, three dialects, one shared business core:

* :class:`RestHis`: REST/JSON over HTTP (camelCase, ``deptCode``), with incremental sync and
  query by the caller's order number.
* :class:`SoapHis`: SOAP 1.1 over HTTP with trade codes and pinyin element names (``KSDM``),
  query by the caller's serial number, no incremental sync.
* :class:`DbHis`: database views (``V_HIS_DOCTOR_SCHEDULE``) and procedure-like request and
  response tables through SQLAlchemy, with incremental sync, no query by the caller's key.

Each runs in-process (``async with RestHis(seed=1) as his: his.base_url``) or from the command
line (``python -m tools.his_sim --dialect rest --port 8081 --seed 1``), injects faults on
command and reports what it holds. See README.md beside this file.
"""

from __future__ import annotations

from tools.his_sim._base import SimBase
from tools.his_sim._cli import main, make_simulator
from tools.his_sim._core import HisCore, HisCounts
from tools.his_sim._db import DbHis
from tools.his_sim._faults import (
    WRITE_OPERATIONS,
    ArchiveReport,
    Fault,
    Latency,
    Outage,
    RenameField,
    RequestRecord,
    TimeoutAfterCommit,
    fault_from_json,
)
from tools.his_sim._idcard import id_card_check_digit, is_valid_id_card
from tools.his_sim._model import HisError
from tools.his_sim._rest import RestHis
from tools.his_sim._soap import SOAP_NS, SOAP_PATH, WS_NS, SoapHis

__all__ = [
    "SOAP_NS",
    "SOAP_PATH",
    "WRITE_OPERATIONS",
    "WS_NS",
    "ArchiveReport",
    "DbHis",
    "Fault",
    "HisCore",
    "HisCounts",
    "HisError",
    "Latency",
    "Outage",
    "RenameField",
    "RequestRecord",
    "RestHis",
    "SimBase",
    "SoapHis",
    "TimeoutAfterCommit",
    "fault_from_json",
    "id_card_check_digit",
    "is_valid_id_card",
    "main",
    "make_simulator",
]

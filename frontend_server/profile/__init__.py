"""Hospital configuration profiles: vendor template + hospital overrides, validated at load.

A hospital's TOML file names its vendor template (``extends = "vendors/acme-rest.toml"``);
:func:`load_profile` merges the two (the hospital wins), validates everything into a frozen
:class:`Profile`, and computes the digest the edge reports to the cloud. Every error is a
:class:`~mesh.config.ConfigError` naming the parameter (dotted path), the file and the line.
"""

from __future__ import annotations

from frontend_server.profile._diff import (
    ChangeKind,
    ParameterChange,
    Risk,
    diff_profiles,
    format_changes,
)
from frontend_server.profile._load import (
    FIELD_ENTITIES,
    REQUIRED_CODES,
    REQUIRED_FIELDS,
    canonical_json,
    load_profile,
    load_profile_content,
    profile_digest,
)
from frontend_server.profile._model import (
    CAPABILITIES,
    OPERATIONS,
    QUEUEABLE_OPERATIONS,
    BusinessHours,
    Capabilities,
    CodeTables,
    DbSettings,
    Dialect,
    Fees,
    HisConfig,
    HisEndpoint,
    HisLimits,
    HisTimeouts,
    OperationMode,
    Profile,
    RestSettings,
    SoapSettings,
)
from mesh.config import ConfigError

__all__ = [
    "CAPABILITIES",
    "FIELD_ENTITIES",
    "OPERATIONS",
    "QUEUEABLE_OPERATIONS",
    "REQUIRED_CODES",
    "REQUIRED_FIELDS",
    "BusinessHours",
    "Capabilities",
    "ChangeKind",
    "CodeTables",
    "ConfigError",
    "DbSettings",
    "Dialect",
    "Fees",
    "HisConfig",
    "HisEndpoint",
    "HisLimits",
    "HisTimeouts",
    "OperationMode",
    "ParameterChange",
    "Profile",
    "RestSettings",
    "Risk",
    "SoapSettings",
    "canonical_json",
    "diff_profiles",
    "format_changes",
    "load_profile",
    "load_profile_content",
    "profile_digest",
]

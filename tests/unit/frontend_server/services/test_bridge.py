"""The profile is the source of truth for the adapter's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontend_server.adapters import DEFAULT_CODE_TABLES, make_adapter
from frontend_server.profile import load_profile
from frontend_server.services import CAPABILITY_FLAGS, dialect_settings

PROFILES = Path(__file__).resolve().parents[4] / "frontend_server" / "profiles"
EXAMPLES = ["city-first-hospital.toml", "river-county-hospital.toml", "lakeside-clinic.toml"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_settings_follow_the_profile(name: str) -> None:
    profile = load_profile(PROFILES / name)
    settings = dialect_settings(profile)
    assert settings.dialect == profile.his.dialect.value
    assert settings.url == profile.his.endpoints[0].url
    assert settings.write_timeout_seconds == profile.his.timeouts.write_seconds
    assert settings.max_connections == profile.his.limits.max_concurrency
    assert settings.timezone == profile.business_hours.timezone
    for capability, (resource, flag) in CAPABILITY_FLAGS.items():
        declared = profile.capabilities.can(resource, flag)
        assert (capability in settings.disabled_capabilities) is not declared
    # The profile may teach the adapter new codes, never redefine the vendor's own.
    for table, entries in settings.code_tables.items():
        documented = DEFAULT_CODE_TABLES[settings.dialect].get(table, {})
        assert not set(entries) & set(documented)


def test_undeclared_capabilities_are_off_in_the_adapter() -> None:
    profile = load_profile(PROFILES / "river-county-hospital.toml")
    adapter = make_adapter(dialect_settings(profile))
    # The SOAP dialect can query by key, but this hospital's profile does not declare it.
    assert not adapter.capabilities.appointment_query_by_key
    assert not adapter.capabilities.charge_query_by_key
    assert adapter.capabilities.hold


def test_overrides_win_and_bad_values_name_the_parameter() -> None:
    profile = load_profile(PROFILES / "lakeside-clinic.toml")
    assert dialect_settings(profile, table_prefix="H3_").table_prefix == "H3_"
    with pytest.raises(ValueError, match="table_prefix"):
        dialect_settings(profile, table_prefix="not valid")

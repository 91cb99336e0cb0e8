"""The profile is the source of truth for the adapter's settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from frontend_server.adapters import (
    DEFAULT_CODE_TABLES,
    DEFAULT_REST_PATHS,
    DEFAULT_SOAP_TRADE_CODES,
    DOCUMENTED_FIELDS,
    make_adapter,
)
from frontend_server.profile import (
    FIELD_ENTITIES,
    OPERATIONS,
    REQUIRED_FIELDS,
    ConfigError,
    load_profile,
)
from frontend_server.services import CAPABILITY_FLAGS, dialect_settings
from frontend_server.services._bridge import (
    DB_PROCEDURES,
    DB_VIEWS,
    FIELD_RENAMES,
    OPERATION_NAMES,
)

PROFILES = Path(__file__).resolve().parents[4] / "frontend_server" / "profiles"
EXAMPLES = ["city-first-hospital.toml", "river-county-hospital.toml", "lakeside-clinic.toml"]
TEMPLATES = {"rest": "acme-rest.toml", "soap": "hanlin-soap.toml", "db": "mediview-db.toml"}
DIALECTS = tuple(TEMPLATES)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(PROFILES / "vendors", tmp_path / "vendors")
    return tmp_path


def hospital(root: Path, dialect: str, body: str) -> Path:
    """A hospital profile on the dialect's vendor template, with ``body`` appended."""
    path = root / f"{dialect}-hospital.toml"
    path.write_text(
        f'extends = "vendors/{TEMPLATES[dialect]}"\n'
        '[profile]\nid = "h-9"\nhospital_id = "test"\n' + body,
        encoding="utf-8",
    )
    return path


def line_of(path: Path, needle: str) -> int:
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() == needle:
            return no
    raise AssertionError(f"{needle!r} not in {path}")


def bridge_error(path: Path) -> ConfigError:
    profile = load_profile(path)  # loads: the vocabulary is the adapter's to check
    with pytest.raises(ConfigError) as info:
        dialect_settings(profile)
    assert "\n" not in str(info.value)
    return info.value


# -- the examples ------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_settings_follow_the_profile(name: str) -> None:
    profile = load_profile(PROFILES / name)
    settings = dialect_settings(profile)
    assert settings.dialect == profile.his.dialect.value
    endpoint = profile.his.endpoints[0].url
    if settings.dialect == "soap":  # the URL's path is the service's path
        assert settings.url + settings.soap_path == endpoint
    else:
        assert settings.url == endpoint
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


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_templates_describe_the_simulated_vendors(name: str) -> None:
    """Every name a template gives is the one the simulated vendor (and adapter) documents."""
    profile = load_profile(PROFILES / name)
    settings = dialect_settings(profile)
    assert settings.entity_fields  # the profile's mappings are carried over ...
    assert dict(settings.resolved_field_names()) == {}  # ... and rename nothing
    for operation in DEFAULT_REST_PATHS:
        assert settings.rest_path(operation) == DEFAULT_REST_PATHS[operation]
    for operation in DEFAULT_SOAP_TRADE_CODES:
        assert settings.trade_code(operation) == DEFAULT_SOAP_TRADE_CODES[operation]
    assert settings.table_prefix == ""
    # Reads the profile does not name (lookups by key, the mirror's bulk slot read) keep
    # the vendor's documented path or trade code.
    adapter_only = {"find_charge", "find_refund", "list_slots_between"}
    if settings.dialect == "rest":
        assert set(settings.rest_paths) == set(DEFAULT_REST_PATHS) - adapter_only
    if settings.dialect == "soap":
        assert set(settings.soap_trade_codes) == set(DEFAULT_SOAP_TRADE_CODES) - adapter_only
        assert settings.soap_namespace == "urn:huakang:his:ws"


def test_the_rename_table_reaches_documented_fields_in_every_dialect() -> None:
    for dialect in DIALECTS:
        documented = DOCUMENTED_FIELDS[dialect]
        assert set(FIELD_ENTITIES) <= set(documented)
        for (entity, name), (target, attribute) in FIELD_RENAMES.items():
            assert name not in documented[entity], (dialect, entity, name)
            assert attribute in documented[target], (dialect, target, attribute)
        for entity, names in REQUIRED_FIELDS.items():
            for name in names:
                target, attribute = FIELD_RENAMES.get((entity, name), (entity, name))
                assert attribute in documented[target], (dialect, entity, name)
    assert set(OPERATION_NAMES) <= set(OPERATIONS)
    assert set(OPERATION_NAMES.values()) <= set(DEFAULT_REST_PATHS)
    assert set(DB_PROCEDURES) <= set(OPERATIONS)
    assert set(REQUIRED_FIELDS) <= set(DB_VIEWS)


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


# -- a hospital fixes its HIS in TOML ------------------------------------------------------


def test_rest_hospital_renames_fields_and_paths(root: Path) -> None:
    path = hospital(
        root,
        "rest",
        '[fields.department]\nname = "deptTitle"\n'
        '[fields.patient]\nid_card_number = "idNo"\n'
        '[fields.charge]\npayment_method = "pay.mode"\n'
        '[his.rest]\nbase_path = "/his/v4"\n'
        '[his.rest.paths]\nbook_appointment = "/reg/confirm"\nfind_patient = "/pats"\n',
    )
    settings = dialect_settings(load_profile(path))
    assert dict(settings.resolved_field_names()) == {
        "deptName": "deptTitle",
        "certNo": "idNo",  # patient.id_card_number is the adapter's patient.id_number
        "payment": "pay",
        "payMode": "mode",
    }
    assert settings.rest_base_path == "/his/v4"
    assert settings.rest_path("book") == "/reg/confirm"
    assert settings.rest_path("find_patients") == "/pats"
    assert settings.rest_path("hold") == "/registrations/lock"


def test_soap_hospital_renames_elements_and_trade_codes(root: Path) -> None:
    path = hospital(
        root,
        "soap",
        '[fields.schedule]\nquota = "ZHS2"\n'
        '[fields.report]\nissued_time = "BGRQ"\n'
        '[his.soap.actions]\nbook_appointment = "2103"\n',
    )
    settings = dialect_settings(load_profile(path))
    assert dict(settings.resolved_field_names()) == {"ZHS": "ZHS2", "BGSJ": "BGRQ"}
    assert settings.trade_code("book") == "2103"
    assert settings.trade_code("hold") == "2001"


def test_db_hospital_renames_views_procedures_and_columns(root: Path) -> None:
    path = hospital(
        root,
        "db",
        '[his.db]\ntable_prefix = "H7_"\n'
        '[his.db.views]\nschedule = "V_SCHED"\n'
        '[his.db.procedures]\nbook_appointment = "P_REG2"\n'
        '[fields.charge]\namount = "TOTAL_COST_FEN"\n',
    )
    settings = dialect_settings(load_profile(path))
    assert settings.table_prefix == "H7_"
    assert dict(settings.resolved_field_names()) == {
        "V_HIS_DOCTOR_SCHEDULE": "V_SCHED",
        "P_REGISTER": "P_REG2",
        "TOTAL_FEN": "TOTAL_COST_FEN",
    }


# -- a mapping the adapter cannot use is refused before any call, with its location --------


@pytest.mark.parametrize(
    ("dialect", "body", "marker", "expected"),
    [
        (
            "rest",
            '[fields.patient]\nshoe_size = "shoeSize"\n',
            'shoe_size = "shoeSize"',
            "fields.patient.shoe_size: unknown field: the rest adapter has no patient.shoe_size",
        ),
        (
            "db",
            '[fields.report]\nimaging = "PACS"\n',  # a REST-only nested object
            'imaging = "PACS"',
            "fields.report.imaging: unknown field: the db adapter has no report.imaging",
        ),
        (
            "rest",
            '[fields.patient]\nid_number = "idNo"\n',  # the adapter's name, not the contract's
            'id_number = "idNo"',
            "fields.patient.id_number: unknown field: patient.id_number is written "
            "patient.id_card_number",
        ),
        (
            "soap",
            '[his.soap.actions]\nget_changes = "1005"\n',
            'get_changes = "1005"',
            "his.soap.actions.get_changes: unknown operation: the soap adapter has no call",
        ),
        (
            "rest",
            '[his.rest.paths]\nexport_medical_record = "/emr"\n',
            'export_medical_record = "/emr"',
            "his.rest.paths.export_medical_record: unknown operation",
        ),
        (
            "rest",
            '[his.rest.paths]\nget_report = "reports/{id}"\n',
            'get_report = "reports/{id}"',
            "his.rest.paths.get_report: invalid value 'reports/{id}': a path below base_path",
        ),
        (
            "db",
            '[his.db.views]\nward = "V_WARD"\n',
            'ward = "V_WARD"',
            "his.db.views.ward: unknown view: the db adapter has no view for 'ward'",
        ),
        (
            "db",
            '[his.db.procedures]\nget_charge = "P_Q"\n',
            'get_charge = "P_Q"',
            "his.db.procedures.get_charge: unknown procedure",
        ),
        (
            "db",
            '[his.db.views]\ncharge = "V-SETTLE"\n',
            'charge = "V-SETTLE"',
            "his.db.views.charge: invalid mapping: field_names['V_HIS_SETTLE']: 'V-SETTLE' is "
            "not a valid identifier",
        ),
        (
            "db",
            '[his.db]\nschema = "his"\n',
            'schema = "his"',
            "his.db.schema: invalid value 'his': the db adapter reads the default schema only",
        ),
        (
            "soap",
            '[fields.patient]\nname = "X M"\n',
            'name = "X M"',
            "fields.patient.name: invalid mapping: entity_fields.patient.name: 'X M' is not a "
            "valid identifier",
        ),
        (
            "rest",
            '[fields.charge]\npayment_method = "payMode"\n',
            'payment_method = "payMode"',
            "fields.charge.payment_method: invalid mapping 'payMode': the rest adapter reads "
            "'payment.payMode' here",
        ),
    ],
)
def test_unknown_or_invalid_mapping_names_parameter_file_and_line(
    root: Path, dialect: str, body: str, marker: str, expected: str
) -> None:
    path = hospital(root, dialect, body)
    err = bridge_error(path)
    line = line_of(path, marker)
    assert err.path == str(path)
    assert err.line == line, str(err)
    assert str(err).startswith(f"{path}:{line}: {expected}"), str(err)


def test_unknown_mapping_in_the_template_names_the_template(root: Path) -> None:
    template = root / "vendors" / "acme-rest.toml"
    text = template.read_text(encoding="utf-8")
    template.write_text(text.replace('quota = "totalNum"', 'quota_total = "totalNum"'))
    err = bridge_error(hospital(root, "rest", '[fields.schedule]\nquota = "totalNum"\n'))
    line = line_of(template, 'quota_total = "totalNum"')
    assert str(err).startswith(f"{template}:{line}: fields.schedule.quota_total: unknown field"), (
        str(err)
    )


def test_two_mappings_that_rename_one_vendor_name_differently_are_refused(root: Path) -> None:
    # The vendor calls both the department's id and the doctor's departments KSDM.
    path = hospital(root, "soap", '[fields.department]\ndepartment_id = "KS_ID"\n')
    err = bridge_error(path)
    template = root / "vendors" / "hanlin-soap.toml"
    assert err.path in (str(path), str(template))
    message = str(err)
    assert "conflicting mapping" in message
    assert "'KSDM'" in message
    assert "fields.doctor.department_id" in message or "fields.department.department_id" in (
        message
    )
    # Renaming both consistently is fine.
    path = hospital(
        root,
        "soap",
        '[fields.department]\ndepartment_id = "KS_ID"\n[fields.doctor]\ndepartment_id = "KS_ID"\n',
    )
    assert dialect_settings(load_profile(path)).resolved_field_names()["KSDM"] == "KS_ID"


def test_unknown_entity_is_refused_at_load(root: Path) -> None:
    path = hospital(root, "rest", '[fields.ward]\nward_id = "wardId"\n')
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    line = line_of(path, "[fields.ward]")
    assert str(info.value).startswith(f"{path}:{line}: fields.ward: unknown entity"), str(
        info.value
    )

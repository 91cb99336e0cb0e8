from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from frontend_server.profile import (
    ConfigError,
    Dialect,
    OperationMode,
    Profile,
    canonical_json,
    load_profile,
    load_profile_content,
    profile_digest,
)
from frontend_server.rules import RuleVariant

PROFILES = Path(__file__).parents[4] / "frontend_server" / "profiles"
HEAD = 'extends = "vendors/acme-rest.toml"\n[profile]\nid = "h-9"\nhospital_id = "test"\n'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    shutil.copytree(PROFILES / "vendors", tmp_path / "vendors")
    return tmp_path


def write(root: Path, text: str, name: str = "hospital.toml") -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() == needle:
            return no
    raise AssertionError(f"{needle!r} not in {path}")


def edit_template(root: Path, old: str, new: str) -> Path:
    template = root / "vendors" / "acme-rest.toml"
    text = template.read_text(encoding="utf-8")
    assert old in text
    template.write_text(text.replace(old, new, 1), encoding="utf-8")
    return template


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    message = str(info.value)
    assert "\n" not in message
    return info.value


# -- the examples ------------------------------------------------------------------------


def test_example_profiles_load_one_per_dialect() -> None:
    loaded = {p.name: load_profile(p) for p in sorted(PROFILES.glob("*.toml"))}
    assert len(loaded) == 3
    assert {p.his.dialect for p in loaded.values()} == set(Dialect)
    for profile in loaded.values():
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", profile.digest)
        assert profile.sources[-1].parent == PROFILES
        assert profile.sources[0].parent.name == "vendors"
    assert len({p.digest for p in loaded.values()}) == 3


def test_hospital_overrides_template_and_arrays_are_replaced() -> None:
    profile = load_profile(PROFILES / "city-first-hospital.toml")
    assert profile.his.limits.rate_per_second == 15.0  # hospital
    assert profile.his.limits.burst == 5  # template
    assert [e.name for e in profile.his.endpoints] == ["primary", "standby"]
    assert profile.appointment.variant is RuleVariant.FIXED_SLOTS
    assert profile.appointment.slot_minutes == 10
    assert profile.appointment.cancel_cutoff_minutes == 60
    assert profile.code_tables.to_contract("department", "0301") == "pediatrics"
    assert profile.code_tables.to_contract("title", "999") == "DOCTOR_TITLE_OTHER"
    assert profile.code_tables.to_his("gender", "GENDER_FEMALE") == "2"
    assert profile.field("patient", "phone") == "mobile"
    assert profile.fees.registration_fen["CLINIC_TYPE_EXPERT"] == 2500
    assert profile.mode("export_medical_record") is OperationMode.UNSUPPORTED
    assert profile.mode("retrieve_archived_report") is OperationMode.QUEUED
    assert profile.mode("book_appointment") is OperationMode.REALTIME
    assert profile.capabilities.can("charge", "query_by_key") is False
    assert profile.capabilities.can("appointment", "query_by_key") is True
    assert profile.tasks.drain_rate_per_second == 2.0


def test_db_profile_without_hold_has_hold_operations_unsupported() -> None:
    profile: Profile = load_profile(PROFILES / "lakeside-clinic.toml")
    assert profile.his.db is not None
    assert profile.his.db.views["schedule"] == "V_HIS_DOCTOR_SCHEDULE"
    assert profile.mode("hold_slot") is OperationMode.UNSUPPORTED
    assert profile.appointment.variant is RuleVariant.HALVES
    assert profile.appointment.half_capacity == 40


def test_digest_is_canonical_and_tracks_content(root: Path) -> None:
    a = write(root, HEAD + "[his.limits]\nburst = 3\nmax_concurrency = 2\n", "a.toml")
    b = write(root, HEAD + "[his.limits]\nmax_concurrency = 2\nburst = 3\n", "b.toml")
    c = write(root, HEAD + "[his.limits]\nburst = 4\nmax_concurrency = 2\n", "c.toml")
    pa, pb, pc = load_profile(a), load_profile(b), load_profile(c)
    assert pa.digest == pb.digest != pc.digest
    assert pa.digest == profile_digest(pa.content)
    assert b'"burst":3' in canonical_json(pa.content)
    assert "extends" not in pa.content


# -- errors: parameter, file and line ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "marker", "expected"),
    [
        (
            '[his.limits]\nrate_per_second = "fast"\n',
            'rate_per_second = "fast"',
            "his.limits.rate_per_second: wrong type: expected number, got string 'fast'",
        ),
        (
            "[appointment]\nreal_name = 1\n",
            "real_name = 1",
            "appointment.real_name: wrong type: expected boolean, got integer 1",
        ),
        (
            "[his.timeouts]\nread_secs = 3\n",
            "read_secs = 3",
            "his.timeouts.read_secs: unknown parameter (known: connect_seconds, read_seconds,",
        ),
        (
            '[[his.endpoints]]\nname = "a"\nurl = "http://a"\n\n[[his.endpoints]]\nname = "b"\n'
            'url = "http://b"\nport = 8080\n',
            "port = 8080",
            "his.endpoints[1].port: unknown parameter",
        ),
        (
            "[appointment.numbered]\nslot_minutes = 5\n",
            "slot_minutes = 5",
            "appointment.numbered.slot_minutes: unknown parameter (known: minutes_per_ticket,",
        ),
        ("[hiss]\nx = 1\n", "[hiss]", "hiss: unknown section"),
        (
            "[appointment.fixed_slots]\nslot_minutes = 20\n",
            "slot_minutes = 20",
            "appointment.fixed_slots.slot_minutes: invalid value 20: must be one of 5, 10, 15, 30",
        ),
        (
            '[code_tables.gender]\n"1" = "GENDER_MALEE"\n',
            '"1" = "GENDER_MALEE"',
            "code_tables.gender.1: invalid value 'GENDER_MALEE': not a Gender value",
        ),
        (
            '[operations]\nbook_appointment = "queued"\n',
            'book_appointment = "queued"',
            "operations.book_appointment: invalid value 'queued': book_appointment must run in",
        ),
        (
            '[his.rest]\ntoken = "s3cr3t"\n',
            'token = "s3cr3t"',
            "his.rest.token: invalid value: secrets are written as references",
        ),
        (
            '[his.soap]\nnamespace = "x"\n',
            "[his.soap]",
            "his.soap: unknown parameter: [his.soap] is only for dialect 'soap'",
        ),
        (
            "[his.limits]\nmax_concurrency = 0\n",
            "max_concurrency = 0",
            "his.limits.max_concurrency: invalid value 0: must be >= 1",
        ),
        (
            "[tasks]\nbackoff_initial_seconds = 600\n",
            "backoff_initial_seconds = 600",
            "tasks.backoff_initial_seconds: invalid value 600.0: backoff_initial_seconds (600) "
            "must be <= backoff_max_seconds (300)",
        ),
        (
            '[business_hours]\ndays = ["mon", "funday"]\n',
            'days = ["mon", "funday"]',
            "business_hours.days[1]: invalid value 'funday'",
        ),
        (
            "[his.timeouts]\nread_seconds = nan\n",
            "read_seconds = nan",
            "his.timeouts.read_seconds: invalid value nan: must be a finite number",
        ),
        (
            "[his.limits]\nrate_per_second = inf\n",
            "rate_per_second = inf",
            "his.limits.rate_per_second: invalid value inf: must be a finite number",
        ),
        (
            "[tasks]\ndrain_rate_per_second = -inf\n",
            "drain_rate_per_second = -inf",
            "tasks.drain_rate_per_second: invalid value -inf: must be a finite number",
        ),
        (
            '[code_tables.clinic_type]\nMZ = "CLINIC_TYPE_SPECIALTY_DISEASE"\n',
            "[fees.registration]",  # the table that lacks the fee, in the template
            "fees.registration.specialty_disease: missing mapping: no registration fee for "
            "CLINIC_TYPE_SPECIALTY_DISEASE",
        ),
    ],
)
def test_errors_in_the_hospital_file_name_parameter_file_and_line(
    root: Path, body: str, marker: str, expected: str
) -> None:
    path = write(root, HEAD + body)
    err = load_error(path)
    in_template = marker == "[fees.registration]"
    where = root / "vendors" / "acme-rest.toml" if in_template else path
    line = line_of(where, marker)
    assert err.path == str(where)
    assert err.line == line, str(err)
    assert str(err).startswith(f"{where}:{line}: {expected}"), str(err)


def test_wrong_type_in_the_template_names_the_template(root: Path) -> None:
    template = edit_template(root, "read_seconds = 8.0", 'read_seconds = "8s"')
    err = load_error(write(root, HEAD))
    line = line_of(template, 'read_seconds = "8s"')
    assert str(err).startswith(
        f"{template}:{line}: his.timeouts.read_seconds: wrong type: expected number, got string"
    ), str(err)


def test_hospital_fixes_a_template_value(root: Path) -> None:
    edit_template(root, "read_seconds = 8.0", 'read_seconds = "8s"')
    profile = load_profile(write(root, HEAD + "[his.timeouts]\nread_seconds = 9\n"))
    assert profile.his.timeouts.read_seconds == 9.0


def test_missing_code_mapping(root: Path) -> None:
    template = edit_template(root, '"2" = "GENDER_FEMALE"\n', "")
    err = load_error(write(root, HEAD))
    line = line_of(template, "[code_tables.gender]")
    assert str(err) == (
        f"{template}:{line}: code_tables.gender: missing mapping: no HIS code maps to GENDER_FEMALE"
    )


def test_missing_field_mapping(root: Path) -> None:
    template = edit_template(root, 'phone = "mobile"\n', "")
    err = load_error(write(root, HEAD))
    line = line_of(template, "[fields.patient]")
    assert str(err) == (
        f"{template}:{line}: fields.patient.phone: missing mapping: no HIS field for patient.phone"
    )


def test_missing_required_parameter(root: Path) -> None:
    template = edit_template(root, 'dialect = "rest"\n', "")
    err = load_error(write(root, HEAD))
    assert (
        str(err)
        == f"{template}:{line_of(template, '[his]')}: his.dialect: missing required parameter"
    )


def test_missing_write_mapping_for_the_dialect(root: Path) -> None:
    template = edit_template(root, 'refund_charge = "/settlements/{id}/refund"\n', "")
    err = load_error(write(root, HEAD))
    line = line_of(template, "[his.rest.paths]")
    assert str(err).startswith(
        f"{template}:{line}: his.rest.paths.refund_charge: missing mapping"
    ), str(err)


def test_missing_hospital_identity(root: Path) -> None:
    path = write(root, 'extends = "vendors/acme-rest.toml"\n[profile]\nid = "h"\n')
    err = load_error(path)
    assert str(err) == f"{path}:2: profile.hospital_id: missing required parameter"


def test_extends_problems(root: Path) -> None:
    path = write(root, 'extends = "vendors/nope.toml"\n')
    assert str(load_error(path)).startswith(f"{path}:1: extends: template 'vendors/nope.toml'")
    loop = write(root, 'extends = "hospital.toml"\n')
    assert "loops" in str(load_error(loop))
    bad = write(root, "extends = 3\n")
    assert str(load_error(bad)).startswith(f"{bad}:1: extends: expected a file name")


def test_invalid_toml_names_line(root: Path) -> None:
    path = write(root, HEAD + "[his.limits\n")
    err = load_error(path)
    assert err.line == 5
    assert "invalid TOML" in str(err)


def test_content_from_the_cloud_round_trips_to_the_same_digest() -> None:
    import json

    profile = load_profile(PROFILES / "river-county-hospital.toml")
    # What ApplyConfig carries: JSON-like data in which every number is a float.
    as_struct = json.loads(json.dumps(profile.content), parse_int=float)
    again = load_profile_content(as_struct, source="ApplyConfig")
    assert again.digest == profile.digest
    assert again.appointment == profile.appointment
    as_struct["tasks"]["max_attempts"] = 2.5
    with pytest.raises(ConfigError) as info:
        load_profile_content(as_struct, source="ApplyConfig")
    assert str(info.value) == (
        "ApplyConfig: tasks.max_attempts: wrong type: expected integer, got number 2.5"
    )
    as_struct["tasks"]["max_attempts"] = float("nan")
    with pytest.raises(ConfigError) as info:
        load_profile_content(as_struct, source="ApplyConfig")
    assert (info.value.key, info.value.problem) == (
        "tasks.max_attempts",
        "invalid value nan: must be a finite number",
    )

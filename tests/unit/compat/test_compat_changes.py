from __future__ import annotations

import json

import pytest

import compat
from compat import ChangeKind, Severity

P3 = 'syntax = "proto3";\n\npackage hplus.clinic.v1;\n\n'

OLD = (
    P3
    + """
service Clinic {
  rpc Book(BookRequest) returns (BookResponse);
}
message BookRequest {
  Booking booking = 1;
}
message BookResponse {
  string booking_id = 1;
  string legacy = 2;
  Kind kind = 3;
}
message Booking {
  Patient patient = 1;
  map<string, Patient> companions = 2;
}
message Patient {
  string id_card = 1;
  int32 age = 2;
  string name = 3;
  int32 ward = 4;
}
enum Kind {
  KIND_UNSPECIFIED = 0;
  KIND_OUTPATIENT = 1;
  KIND_EMERGENCY = 2;
}
"""
)

NEW = (
    P3
    + """
service Clinic {
  rpc Book(BookRequest) returns (BookResponse);
  rpc Cancel(BookRequest) returns (BookResponse);
}
message BookRequest {
  Booking booking = 1;
}
message BookResponse {
  string booking_id = 1;
  reserved 2;
  Kind kind = 3;
}
message Booking {
  Patient patient = 1;
  map<string, Patient> companions = 2;
}
message Patient {
  bytes id_card = 1;
  int64 age = 2;
  string full_name = 3;
  int32 ward = 5;
  string phone = 6;
}
enum Kind {
  KIND_UNSPECIFIED = 0;
  KIND_OUTPATIENT = 1;
  KIND_INPATIENT = 3;
  reserved 2;
}
"""
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> compat.ChangeReport:
    tmp_path = tmp_path_factory.mktemp("changes")
    for name, text in (("old", OLD), ("new", NEW)):
        f = tmp_path / name / "hplus/clinic/v1/clinic.proto"
        f.parent.mkdir(parents=True)
        f.write_text(text)
    old = compat.load_input(str(tmp_path / "old")).schema
    new = compat.load_input(str(tmp_path / "new")).schema
    return compat.changes(old, new)


def _param(report, direction, parameter, kind):
    hits = [
        p
        for p in report.parameters
        if p.direction == direction and p.parameter == parameter and p.change.kind is kind
    ]
    assert len(hits) == 1, (direction, parameter, kind, [p.parameter for p in report.parameters])
    return hits[0]


def test_every_kind_of_change_is_listed_including_additions(report):
    rep = report
    kinds = {(c.element, c.kind, c.name) for c in rep.changes}
    assert ("field", ChangeKind.RETYPED, "id_card") in kinds
    assert ("field", ChangeKind.RENAMED, "full_name") in kinds
    assert ("field", ChangeKind.RENUMBERED, "ward") in kinds
    assert ("field", ChangeKind.ADDED, "phone") in kinds
    assert ("field", ChangeKind.REMOVED, "legacy") in kinds
    assert ("enum_value", ChangeKind.ADDED, "KIND_INPATIENT") in kinds
    assert ("enum_value", ChangeKind.REMOVED, "KIND_EMERGENCY") in kinds
    assert ("rpc", ChangeKind.ADDED, "Cancel") in kinds
    assert ("reserved", ChangeKind.RESERVED, "2") in kinds
    renumbered = next(c for c in rep.changes if c.kind is ChangeKind.RENUMBERED)
    assert (renumbered.old, renumbered.new, renumbered.severity) == ("4", "5", Severity.ERROR)
    added = next(c for c in rep.changes if c.name == "phone")
    assert added.severity is Severity.INFO
    assert added.path == "hplus/clinic/v1/clinic.proto"
    assert added.line > 1


def test_nested_parameter_paths_are_grouped_per_rpc_and_direction(report):
    rep = report
    p = _param(rep, "request", "booking.patient.id_card", ChangeKind.RETYPED)
    assert (p.service, p.rpc) == ("hplus.clinic.v1.Clinic", "Book")
    # map values are walked through to the value type
    _param(rep, "request", "booking.companions.id_card", ChangeKind.RETYPED)
    _param(rep, "response", "legacy", ChangeKind.REMOVED)
    _param(rep, "response", "kind", ChangeKind.ADDED)


def test_judgement_depends_on_the_direction(report):
    rep = report
    # string -> bytes: an older edge reading the cloud's bytes as string may fail ...
    assert (
        _param(rep, "request", "booking.patient.id_card", ChangeKind.RETYPED).severity
        is Severity.ERROR
    )
    # int32 -> int64: the older edge truncates the cloud's int64 ...
    assert (
        _param(rep, "request", "booking.patient.age", ChangeKind.RETYPED).severity is Severity.WARN
    )
    # a response field removed with its number reserved: the cloud ignores it
    assert _param(rep, "response", "legacy", ChangeKind.REMOVED).severity is Severity.INFO
    # a new enum value reaches older edges in requests only
    kind_added_resp = _param(rep, "response", "kind", ChangeKind.ADDED)
    assert kind_added_resp.severity is Severity.INFO
    new_rpc = next(p for p in rep.parameters if p.rpc == "Cancel")
    assert new_rpc.direction is None
    assert new_rpc.severity is Severity.WARN
    assert "UNIMPLEMENTED" in new_rpc.note
    # an addition is informational, and says why in its direction
    phone = _param(rep, "request", "booking.patient.phone", ChangeKind.ADDED)
    assert phone.severity is Severity.INFO
    assert "ignore" in phone.note


def test_the_reverse_direction_judges_the_same_change_the_other_way(report):
    rep = report
    # the response carries no patient, so build the reverse case from the request's view
    widening = [p for p in rep.parameters if p.change.name == "age"]
    assert {p.direction for p in widening} == {"request"}
    j = compat._judge.judge  # the table itself, both ways
    age = widening[0].change
    assert j(age, "request")[0] is Severity.WARN
    assert j(age, "response")[0] is Severity.INFO
    id_card = next(c for c in rep.changes if c.name == "id_card")
    assert j(id_card, "request")[0] is Severity.ERROR
    assert j(id_card, "response")[0] is Severity.INFO


def test_report_round_trips_to_json(report):
    rep = report
    data = rep.to_json()
    assert len(data["changes"]) == len(rep.changes)
    first = data["parameters"][0]
    assert set(first) >= {"service", "rpc", "direction", "parameter", "severity", "note", "change"}
    assert len(first["change"]["fingerprint"]) == 16


def _field_change(kind, severity, old="", new=""):
    return compat.Change(
        kind, "field", "p.M", "f", "msg", "p.proto", 3, 3, severity, old, new, number=1
    )


@pytest.mark.parametrize(
    ("kind", "severity", "old", "new", "in_request", "in_response"),
    [
        # a required field added: old edges ignore it, but the cloud rejects old responses
        (ChangeKind.ADDED, Severity.ERROR, "", "int32", Severity.WARN, Severity.ERROR),
        (ChangeKind.ADDED, Severity.INFO, "", "int32", Severity.INFO, Severity.INFO),
        # removed with the number reserved: old edges see a default; the cloud ignores it
        (ChangeKind.REMOVED, Severity.WARN, "int32", "", Severity.WARN, Severity.INFO),
        (ChangeKind.REMOVED, Severity.ERROR, "int32", "", Severity.ERROR, Severity.ERROR),
        (ChangeKind.RETYPED, Severity.WARN, "uint32", "uint64", Severity.WARN, Severity.INFO),
        (ChangeKind.RETYPED, Severity.ERROR, "bytes", "string", Severity.INFO, Severity.ERROR),
        (ChangeKind.RETYPED, Severity.ERROR, "string", "double", Severity.ERROR, Severity.ERROR),
        (ChangeKind.RENUMBERED, Severity.ERROR, "4", "5", Severity.ERROR, Severity.ERROR),
        (ChangeKind.RENAMED, Severity.WARN, "a", "b", Severity.WARN, Severity.WARN),
    ],
)
def test_judgement_table(kind, severity, old, new, in_request, in_response):
    change = _field_change(kind, severity, old, new)
    assert compat._judge.judge(change, "request")[0] is in_request
    assert compat._judge.judge(change, "response")[0] is in_response
    assert compat._judge.judge(change, "request")[1]


@pytest.mark.parametrize(
    ("kind", "severity", "old", "new", "in_request", "in_response"),
    [
        # the same table, mirrored: older clients write requests, the newer cloud responses
        (ChangeKind.ADDED, Severity.ERROR, "", "int32", Severity.ERROR, Severity.WARN),
        (ChangeKind.REMOVED, Severity.WARN, "int32", "", Severity.INFO, Severity.WARN),
        (ChangeKind.RETYPED, Severity.WARN, "uint32", "uint64", Severity.INFO, Severity.WARN),
        (ChangeKind.RETYPED, Severity.ERROR, "bytes", "string", Severity.ERROR, Severity.INFO),
    ],
)
def test_judgement_table_flips_for_services_the_cloud_serves(
    kind, severity, old, new, in_request, in_response
):
    change = _field_change(kind, severity, old, new)
    judge = compat._judge.judge
    assert judge(change, "request", served="cloud")[0] is in_request
    assert judge(change, "response", served="cloud")[0] is in_response
    assert judge(change, "request", served="edge")[0] is in_response


CLOUD_OLD = """syntax = "proto3";

package hplus.cloud.v1;

service Bookings {
  rpc Book(BookRequest) returns (BookResponse);
  rpc Legacy(BookRequest) returns (BookResponse);
}
message BookRequest {
  string patient_id = 1;
}
message BookResponse {
  string booking_id = 1;
  string ward = 2;
}
"""
CLOUD_NEW = (
    CLOUD_OLD.replace("  rpc Legacy(BookRequest) returns (BookResponse);\n", "")
    .replace("  rpc Book(", "  rpc Cancel(BookRequest) returns (BookResponse);\n  rpc Book(")
    .replace("  string patient_id = 1;\n", "  string patient_id = 1;\n  string channel = 2;\n")
    .replace("  string ward = 2;\n", "")
)


@pytest.fixture(scope="module")
def cloud_pair(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cloud")
    out = []
    for name, text in (("old", CLOUD_OLD), ("new", CLOUD_NEW)):
        f = tmp_path / name / "hplus/cloud/v1/bookings.proto"
        f.parent.mkdir(parents=True)
        f.write_text(text)
        out.append(compat.load_input(str(tmp_path / name)).schema)
    return out


def test_a_service_the_cloud_serves_is_judged_from_its_callers_side(cloud_pair):
    old, new = cloud_pair
    rep = compat.changes(old, new)
    assert {p.served_by for p in rep.parameters} == {"cloud"}
    # A request field added: older edges and apps never send it.
    channel = _param(rep, "request", "channel", ChangeKind.ADDED)
    assert (channel.severity, channel.note) == (
        Severity.INFO,
        "older clients never send it; the cloud must handle its absence",
    )
    # A response field removed: older clients still read it and now see ''.
    ward = _param(rep, "response", "ward", ChangeKind.REMOVED)
    assert (ward.severity, ward.note) == (
        Severity.ERROR,
        "older clients still read it and now see its default value",
    )
    # A new RPC breaks nobody; a removed one breaks every older caller.
    rpcs = {p.rpc: p for p in rep.parameters if p.direction is None}
    assert (rpcs["Cancel"].severity, rpcs["Cancel"].note) == (
        Severity.INFO,
        "older clients do not call it until they upgrade",
    )
    assert (rpcs["Legacy"].severity, rpcs["Legacy"].note) == (
        Severity.ERROR,
        "older clients still call it and get UNIMPLEMENTED",
    )
    # Who serves what is a parameter: as an edge service, the same change reads otherwise.
    as_edge = compat.changes(old, new, cloud_services=())
    assert {p.served_by for p in as_edge.parameters} == {"edge"}
    assert "older edges ignore it" in _param(as_edge, "request", "channel", ChangeKind.ADDED).note


def test_markdown_and_text_say_who_serves_each_service(cloud_pair):
    old, new = cloud_pair
    result = compat.diff(old, new)
    md = result.render("markdown")
    assert (
        "### `hplus.cloud.v1.Bookings` (served by the cloud: older edges and apps call the "
        "newer cloud)" in md
    )
    assert "| response | `ward` |" in md
    assert "older clients still read it and now see its default value" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert not [row for row in rows if "older edges" in row]
    text = result.render("text")
    assert "  service hplus.cloud.v1.Bookings (served by the cloud:" in text
    assert json.loads(result.render("json"))["parameters"][0]["served_by"] == "cloud"

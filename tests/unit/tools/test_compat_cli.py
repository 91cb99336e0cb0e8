"""``hplus compat …`` end to end through ``tools.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import compat
from tools.cli import main

HEAD = 'syntax = "proto3";\npackage hplus.clinic.v1;\n'
P3 = 'syntax = "proto3";\n\npackage hplus.clinic.{v};\n\n'

V1 = """
service Clinic {
  rpc Book(BookRequest) returns (BookResponse);
}
message BookRequest {
  string patient_id = 1;
  int32 legacy = 2;
}
message BookResponse {
  Status status = 1;
}
enum Status {
  STATUS_UNSPECIFIED = 0;
  STATUS_OK = 1;
  STATUS_FULL = 2;
}
"""
# 1.1.0: legacy removed (number reserved), STATUS_FULL removed without reserving 2.
V2 = V1.replace("  int32 legacy = 2;\n", "  reserved 2;\n").replace("  STATUS_FULL = 2;\n", "")
# candidate: 1.1.0 plus a new request field.
V3 = V2.replace("  reserved 2;\n", "  reserved 2;\n  string ward = 3;\n")


def _write(root: Path, body: str, version: str = "v1") -> Path:
    f = root / f"hplus/clinic/{version}/clinic.proto"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(P3.format(v=version) + body)
    return root


def _freeze(root: Path, releases: Path, version: str) -> None:
    releases.mkdir(parents=True, exist_ok=True)
    (releases / f"{version}.binpb").write_bytes(compat.compile_protos(root).SerializeToString())


@pytest.fixture
def env(tmp_path):
    releases = tmp_path / "releases"
    _freeze(_write(tmp_path / "r1", V1), releases, "1.0.0")
    _freeze(_write(tmp_path / "r2", V2), releases, "1.1.0")
    _freeze(_write(tmp_path / "r3", V2), releases, "1.2.0")
    cand = _write(tmp_path / "cand", V3)
    return tmp_path, releases, cand


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["compat", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_diff_compatible_exits_0(env, capsys):
    _, releases, cand = env
    code, out, _ = run(capsys, "diff", "release:1.2.0", str(cand), "--releases-dir", str(releases))
    assert code == 0
    assert "compatible" in out.splitlines()[0]
    assert "request ward: added" in out  # additions are listed, as information


def test_diff_breaking_exits_1_with_json_schema(env, capsys):
    _, releases, cand = env
    code, out, _ = run(
        capsys,
        "diff",
        "release:1.0.0",
        str(cand),
        "--releases-dir",
        str(releases),
        "--format",
        "json",
        "--category",
        "WIRE",
    )
    assert code == 1
    data = json.loads(out)
    assert data["schema"] == "hplus.compat.diff/v1"
    assert data["compatible"] is False
    assert data["categories"] == ["WIRE"]
    rules = [f["rule"] for f in data["findings"]]
    assert rules == ["ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED"]
    f = data["findings"][0]
    assert f["path"] == "hplus/clinic/v1/clinic.proto"
    assert f["line"] > 1
    assert f["column"] == 1
    assert {"end_line", "end_column", "fingerprint", "category", "severity"} <= set(f)
    params = {(p["rpc"], p["direction"], p["parameter"]) for p in data["parameters"]}
    assert ("Book", "response", "status") in params
    assert ("Book", "request", "legacy") in params


def test_diff_markdown_groups_per_service_and_rpc(env, capsys):
    _, releases, cand = env
    code, out, _ = run(
        capsys,
        "diff",
        "release:1.0.0",
        str(cand),
        "--releases-dir",
        str(releases),
        "--format",
        "markdown",
    )
    assert code == 1
    assert out.startswith("# Contract changes: `release:1.0.0`")
    assert "### `hplus.clinic.v1.Clinic`" in out
    assert "#### `Book`" in out
    assert "| request | `ward` |" in out


def test_fail_on_warn_and_never(env, capsys):
    _, releases, cand = env
    # vs 1.2.0 only additions: info. A new request field is info, so warn still passes ...
    assert (
        run(
            capsys,
            "diff",
            "release:1.2.0",
            str(cand),
            "--releases-dir",
            str(releases),
            "--fail-on",
            "warn",
        )[0]
        == 0
    )
    assert (
        run(
            capsys,
            "diff",
            "release:1.2.0",
            str(cand),
            "--releases-dir",
            str(releases),
            "--fail-on",
            "info",
        )[0]
        == 1
    )
    assert (
        run(
            capsys,
            "diff",
            "release:1.0.0",
            str(cand),
            "--releases-dir",
            str(releases),
            "--fail-on",
            "never",
        )[0]
        == 0
    )


def test_approvals_let_a_reviewed_break_pass_and_say_so(env, capsys, tmp_path):
    _, releases, cand = env
    code, out, _ = run(
        capsys,
        "diff",
        "release:1.0.0",
        str(cand),
        "--releases-dir",
        str(releases),
        "--format",
        "json",
    )
    doc = json.loads(out)
    fps = [f["fingerprint"] for f in doc["blocking"]]
    assert code == 1
    # STATUS_FULL removed unreserved: the rule findings, and the change an older edge's
    # response may still carry, judged ERROR; all of them must be approved to pass.
    assert {f["fingerprint"] for f in doc["findings"]} < set(fps)
    approvals = tmp_path / "approvals.txt"
    approvals.write_text(
        "# reviewed by the release manager\n"
        + "\n".join(f"{fp} STATUS_FULL retired" for fp in fps)
        + "\n"
    )
    code, out, _ = run(
        capsys,
        "diff",
        "release:1.0.0",
        str(cand),
        "--releases-dir",
        str(releases),
        "--approvals",
        str(approvals),
    )
    assert code == 0
    assert "(approved)" in out
    assert f"{len(fps)} approved" in out.splitlines()[0]


def test_bad_approvals_file_is_bad_input(env, capsys, tmp_path):
    _, releases, cand = env
    bad = tmp_path / "approvals.txt"
    bad.write_text("not-a-fingerprint\n")
    code, _, err = run(
        capsys,
        "diff",
        "release:1.0.0",
        str(cand),
        "--releases-dir",
        str(releases),
        "--approvals",
        str(bad),
    )
    assert code == 2
    assert (
        err.strip()
        == f"hplus: error: {bad}:1:1: expected a 16-hex-digit fingerprint, got 'not-a-fingerprint'"
    )


def test_per_element_ignores(env, capsys):
    _, releases, cand = env
    base = [
        "diff",
        "release:1.0.0",
        str(cand),
        "--releases-dir",
        str(releases),
        "--format",
        "json",
        "--category",
        "WIRE",
    ]
    code, out, _ = run(capsys, *base, "--ignore", "hplus.clinic.v1.Status")
    data = json.loads(out)
    assert code == 0
    assert data["findings"] == []
    assert data["summary"]["ignored"] == 1
    assert all(p["change"]["owner"] != "hplus.clinic.v1.Status" for p in data["parameters"])
    code, out, _ = run(capsys, *base, "--ignore", "ENUM_VALUE_NO_DELETE:hplus.clinic.v1.Status")
    assert code == 1
    assert [f["rule"] for f in json.loads(out)["findings"]] == [
        "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED"
    ]
    code, out, _ = run(capsys, *base, "--ignore", "hplus/clinic/")
    assert code == 0


def test_unstable_packages_are_ignored_on_request(tmp_path, capsys):
    old = _write(tmp_path / "old", V1, "v1beta1")
    new = _write(tmp_path / "new", V2, "v1beta1")
    assert run(capsys, "diff", str(old), str(new))[0] == 1
    code, out, _ = run(capsys, "diff", str(old), str(new), "--ignore-unstable")
    assert code == 0
    assert "ignored" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("files", "expect"),
    [
        (
            {"hplus/clinic/v1/clinic.proto": HEAD + "message {\n"},
            "clinic.proto:3:9: ",
        ),
        (
            {"hplus/clinic/v1/clinic.proto": HEAD + 'import "gone/v1/gone.proto";\n'},
            "gone/v1/gone.proto",
        ),
        ({}, "no .proto files found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(env, capsys, tmp_path, files, expect):
    _, _releases, cand = env
    bad = tmp_path / "bad"
    bad.mkdir()
    for path, text in files.items():
        (bad / path).parent.mkdir(parents=True, exist_ok=True)
        (bad / path).write_text(text)
    code, out, err = run(capsys, "diff", str(cand), str(bad))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("hplus: error: ")
    assert expect in err
    assert "Traceback" not in err


def test_corrupt_image_and_unknown_release_are_bad_input(env, capsys, tmp_path):
    _, releases, cand = env
    corrupt = tmp_path / "corrupt.binpb"
    corrupt.write_bytes(b"\x0a\xff\xff\xff\xff")
    code, _, err = run(capsys, "diff", str(corrupt), str(cand))
    assert code == 2
    assert "corrupt image" in err
    assert err.count("\n") == 1
    code, _, err = run(capsys, "diff", "release:0.0.1", str(cand), "--releases-dir", str(releases))
    assert code == 2
    assert err == "hplus: error: release:0.0.1: unknown release (frozen: 1.0.0, 1.1.0, 1.2.0)\n"
    code, _, err = run(capsys, "diff", str(cand), str(cand), "--category", "LOOSE")
    assert code == 2
    assert "unknown category" in err


def test_window_passes_inside_and_fails_beyond_the_window(env, capsys):
    _, releases, cand = env
    code, out, _ = run(
        capsys, "window", str(cand), "--releases", "2", "--releases-dir", str(releases)
    )
    assert code == 0, out
    assert out.startswith(f"window gate for {cand}: PASS")
    code, out, _ = run(
        capsys,
        "window",
        str(cand),
        "--releases",
        "5",
        "--releases-dir",
        str(releases),
        "--format",
        "json",
    )
    assert code == 1
    data = json.loads(out)
    assert data["passed"] is False
    matrix = {row["release"]: row for row in data["matrix"]}
    assert list(matrix) == ["release:1.0.0", "release:1.1.0", "release:1.2.0"]
    assert matrix["release:1.0.0"]["verdict"] == "breaking"
    # WIRE_JSON, as every gate: the number and the names (field and enum value) unreserved,
    # plus the removed enum value an older edge's response may still carry.
    assert matrix["release:1.0.0"]["breaking"] == 3
    assert matrix["release:1.0.0"]["blocking"] == 4
    assert matrix["release:1.0.0"]["response_errors"] >= 1  # older edges may still send STATUS_FULL
    assert matrix["release:1.1.0"]["verdict"] == "compatible"
    assert len(data["pairs"]) == 3


def test_window_text_prints_matrix_and_findings_per_pair(env, capsys):
    _, releases, cand = env
    code, out, _ = run(capsys, "window", str(cand), "--releases-dir", str(releases))
    assert code == 1
    lines = out.splitlines()
    assert lines[2].split()[:3] == ["release", "verdict", "blocking"]
    assert any(line.startswith("release:1.0.0") and "breaking" in line for line in lines)
    assert f"--- release:1.0.0 -> {cand}" in out
    assert "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED" in out


def test_window_without_releases_is_bad_input(capsys, tmp_path):
    cand = _write(tmp_path / "cand", V1)
    code, _, err = run(capsys, "window", str(cand), "--releases-dir", str(tmp_path / "none"))
    assert code == 2
    assert "no frozen releases" in err


def test_rules_lists_every_rule(capsys):
    code, out, _ = run(capsys, "rules")
    assert code == 0
    assert len(out.splitlines()) == len(compat.RULES)
    assert out.startswith("ENUM_NO_DELETE")

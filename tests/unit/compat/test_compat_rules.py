"""Each rule against its fixture pair; the expectations were produced by buf itself."""

from __future__ import annotations

from pathlib import Path

import pytest

import compat
from compat import Category

TESTDATA = Path(compat.__file__).parent / "testdata"
RULE_CASES = sorted(p.name for p in (TESTDATA / "current").iterdir() if p.is_dir())


def _found(rule: str) -> list[str]:
    prev = compat.load_input(str(TESTDATA / "previous" / rule))
    cur = compat.load_input(str(TESTDATA / "current" / rule))
    findings = compat.breaking(prev.schema, cur.schema, categories=(), include=[rule])
    return sorted(f"{f.path}:{f.line}:{f.column}:{f.rule}" for f in findings)


@pytest.mark.parametrize("rule", RULE_CASES)
def test_rule_fixture_matches_expected(rule):
    expected = (TESTDATA / "current" / rule / "expected.txt").read_text().split()
    assert _found(rule) == sorted(expected)


def test_every_rule_has_a_fixture():
    assert set(RULE_CASES) == set(compat.RULES)


def test_rule_ids_are_bufs_v2_ids_with_bufs_category_sizes():
    sizes = {c: sum(c in s.categories for s in compat.RULES.values()) for c in Category}
    # buf v2 configuration: FILE 51, PACKAGE 51, WIRE_JSON 22, WIRE 15 rules.
    assert sizes == {
        Category.FILE: 51,
        Category.PACKAGE: 51,
        Category.WIRE_JSON: 22,
        Category.WIRE: 15,
    }
    assert len(compat.RULES) == 64


def test_every_rule_has_a_purpose_and_a_least_strict_category():
    for spec in compat.RULES.values():
        assert spec.purpose, spec.id
        assert spec.category in spec.categories
    assert compat.RULES["FIELD_SAME_NAME"].category is Category.WIRE_JSON
    assert compat.RULES["FIELD_NO_DELETE"].category is Category.PACKAGE
    assert compat.RULES["FILE_NO_DELETE"].category is Category.FILE
    assert compat.RULES["RPC_SAME_REQUEST_TYPE"].category is Category.WIRE


def test_rules_for_selects_by_category_include_and_exclude():
    ids = {
        s.id
        for s in compat.rules_for(
            [Category.WIRE], include=["FIELD_SAME_NAME"], exclude=["FIELD_SAME_ONEOF"]
        )
    }
    assert "FIELD_SAME_NAME" in ids
    assert "FIELD_SAME_ONEOF" not in ids
    assert "FIELD_WIRE_COMPATIBLE_TYPE" in ids
    assert "FIELD_SAME_TYPE" not in ids
    with pytest.raises(ValueError, match="NOPE"):
        compat.rules_for([Category.WIRE], include=["NOPE"])


def test_category_parse_accepts_source_and_rejects_unknown():
    assert Category.parse("source") is Category.FILE
    assert Category.parse("wire-json") is Category.WIRE_JSON
    with pytest.raises(ValueError, match="unknown category"):
        Category.parse("LOOSE")


def test_findings_are_located_sorted_and_fingerprinted():
    prev = compat.load_input(str(TESTDATA / "previous" / "FIELD_SAME_TYPE"))
    cur = compat.load_input(str(TESTDATA / "current" / "FIELD_SAME_TYPE"))
    found = compat.breaking(prev.schema, cur.schema, categories=[Category.FILE])
    assert [f.line for f in found] == sorted(f.line for f in found)
    f = found[0]
    assert (f.rule, f.path, f.line, f.column, f.end_line, f.end_column) == (
        "FIELD_SAME_TYPE",
        "a/v1/a.proto",
        6,
        3,
        6,
        8,
    )
    assert f.severity is compat.Severity.ERROR
    assert f.subject == "a.v1.M#1"
    assert len(f.fingerprint) == 16
    again = compat.breaking(prev.schema, cur.schema, categories=[Category.FILE])
    assert [g.fingerprint for g in again] == [g.fingerprint for g in found]
    assert f.to_json()["category"] == "PACKAGE"


def test_fingerprints_survive_unrelated_edits(tmp_path):
    import shutil

    prev = compat.load_input(str(TESTDATA / "previous" / "FIELD_SAME_TYPE"))
    shifted = tmp_path / "current"
    shutil.copytree(TESTDATA / "current" / "FIELD_SAME_TYPE", shifted)
    proto = shifted / "a" / "v1" / "a.proto"
    proto.write_text(proto.read_text().replace("message M {", "// moved down\n\nmessage M {"))
    cur = compat.load_input(str(TESTDATA / "current" / "FIELD_SAME_TYPE"))
    moved = compat.load_input(str(shifted))
    before = compat.breaking(prev.schema, cur.schema, categories=[Category.FILE])
    after = compat.breaking(prev.schema, moved.schema, categories=[Category.FILE])
    assert [f.line + 2 for f in before] == [f.line for f in after]
    assert [f.fingerprint for f in before] == [f.fingerprint for f in after]

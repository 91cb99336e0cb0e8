"""Every compat gate runs the same rules and asks for the same fingerprints.

``compat diff``, ``compat window``, ``make breaking`` (buf, configured in ``buf.yaml``)
and the registry's push policy must refuse the same changes; the end-to-end check with a
live registry is ``tests/unit/cloud/registry/test_compat_gates.py``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import compat
from cloud.registry import PushPolicy
from tools.cli import main

REPO = Path(__file__).resolve().parents[3]

V1 = """syntax = "proto3";
package hplus.clinic.v1;

service Clinic {
  rpc Book(BookRequest) returns (BookResponse);
}
message BookRequest {
  string patient_id = 1;
  int32 ward = 2;
}
message BookResponse {
  string booking_id = 1;
}
"""
RENAMED = V1.replace("int32 ward = 2;", "int32 ward_id = 2;")  # same binary, other JSON
DELETED = V1.replace("  int32 ward = 2;\n", "")  # number not reserved


def _buf_breaking_use() -> list[str]:
    """``breaking.use`` of buf.yaml (no YAML parser is installed; the file is simple)."""
    lines = (REPO / "buf.yaml").read_text().splitlines()
    at = lines.index("breaking:")
    assert lines[at + 1].strip() == "use:"
    use = []
    for line in lines[at + 2 :]:
        if not line.strip().startswith("- "):
            break
        use.append(line.strip().removeprefix("- "))
    return use


def _tree(root: Path, text: str) -> Path:
    (root / "hplus/clinic/v1").mkdir(parents=True)
    (root / "hplus/clinic/v1/clinic.proto").write_text(text)
    return root


def _releases(tmp_path: Path) -> Path:
    releases = tmp_path / "releases"
    releases.mkdir()
    image = compat.compile_protos(_tree(tmp_path / "v1", V1)).SerializeToString()
    (releases / "1.0.0.binpb").write_bytes(image)
    return releases


def test_every_gate_defaults_to_the_same_categories() -> None:
    assert compat.DEFAULT_CATEGORIES == (compat.Category.WIRE_JSON,)
    assert _buf_breaking_use() == [c.value for c in compat.DEFAULT_CATEGORIES]  # make breaking
    assert PushPolicy().categories == compat.DEFAULT_CATEGORIES
    for func in (compat.diff, compat.window, compat.breaking, compat.rules_for):
        default = inspect.signature(func).parameters["categories"].default
        assert default == compat.DEFAULT_CATEGORIES, func.__name__


def test_window_refuses_a_json_breaking_rename_without_flags(tmp_path, capsys) -> None:
    releases = _releases(tmp_path)
    cand = _tree(tmp_path / "cand", RENAMED)
    code = main(["compat", "window", str(cand), "--releases-dir", str(releases)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FIELD_SAME_NAME" in out
    assert "FIELD_SAME_JSON_NAME" in out


def test_diff_names_every_fingerprint_that_blocks_in_text_and_json(tmp_path, capsys) -> None:
    releases = _releases(tmp_path)
    cand = _tree(tmp_path / "cand", DELETED)
    argv = ["compat", "diff", "release:1.0.0", str(cand), "--releases-dir", str(releases)]
    assert main([*argv, "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    blocking = {b["fingerprint"]: b["rule"] for b in doc["blocking"]}
    # The two rule findings, and the change list's removal judged ERROR for requests:
    # an older edge still reads `ward` and now sees 0.
    assert sorted(blocking.values()) == [
        "FIELD_NO_DELETE_UNLESS_NAME_RESERVED",
        "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED",
        "FIELD_REMOVED",
    ]
    assert doc["summary"]["blocking"] == 3
    assert doc["compatible"] is False
    assert main(argv) == 1
    text = capsys.readouterr().out
    for fp, rule in blocking.items():
        assert any(rule in line and f"({fp})" in line for line in text.splitlines()), fp

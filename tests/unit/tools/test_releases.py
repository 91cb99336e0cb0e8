from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tools.cli import main
from tools.releases import (
    RELEASES_DIR,
    ReleaseError,
    freeze,
    latest_release,
    list_releases,
    parse_version,
)

REPO = Path(__file__).resolve().parents[3]

SMALL = """syntax = "proto3";
package acme.thing.v1;
import "google/protobuf/timestamp.proto";
// A thing.
message Thing {
  // When.
  google.protobuf.Timestamp at = 1;
}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "proto"
    (root / "acme/thing/v1").mkdir(parents=True)
    (root / "acme/thing/v1/thing.proto").write_text(SMALL)
    return root


def test_freeze_writes_self_contained_image_with_digest(tree: Path, tmp_path: Path) -> None:
    rel = freeze("1.0.0", proto_root=tree, releases_dir=tmp_path / "rel")
    data = rel.image.read_bytes()
    assert rel.digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "rel/1.0.0.binpb.sha256").read_text().split()[0] == rel.digest
    fds = descriptor_pb2.FileDescriptorSet.FromString(data)
    names = [f.name for f in fds.file]
    # Imports are embedded so the image compiles nothing else to be read.
    assert names == ["google/protobuf/timestamp.proto", "acme/thing/v1/thing.proto"]
    thing = fds.file[1]
    assert thing.source_code_info.location, "source info must be kept for line numbers"
    assert any("A thing." in loc.leading_comments for loc in thing.source_code_info.location)


def test_freeze_is_deterministic(tree: Path, tmp_path: Path) -> None:
    a = freeze("1.0.0", proto_root=tree, releases_dir=tmp_path / "a")
    b = freeze("1.0.0", proto_root=tree, releases_dir=tmp_path / "b")
    assert a.digest == b.digest


def test_frozen_release_is_never_rewritten(tree: Path, tmp_path: Path) -> None:
    rel_dir = tmp_path / "rel"
    first = freeze("1.0.0", proto_root=tree, releases_dir=rel_dir)
    before = first.image.read_bytes()
    (tree / "acme/thing/v1/thing.proto").write_text(SMALL.replace("at = 1", "when = 1"))
    with pytest.raises(ReleaseError, match="frozen already"):
        freeze("1.0.0", proto_root=tree, releases_dir=rel_dir)
    assert first.image.read_bytes() == before


def test_versions_must_increase_and_be_semver(tree: Path, tmp_path: Path) -> None:
    rel_dir = tmp_path / "rel"
    freeze("1.2.0", proto_root=tree, releases_dir=rel_dir)
    with pytest.raises(ReleaseError, match=r"not newer than the latest frozen release 1\.2\.0"):
        freeze("1.1.9", proto_root=tree, releases_dir=rel_dir)
    with pytest.raises(ReleaseError, match="invalid release version 'v1'"):
        freeze("v1", proto_root=tree, releases_dir=rel_dir)
    freeze("1.10.0", proto_root=tree, releases_dir=rel_dir)
    assert [str(r.version) for r in list_releases(rel_dir)] == ["1.2.0", "1.10.0"]
    assert str(latest_release(rel_dir).version) == "1.10.0"


def test_syntax_error_names_file_line_and_column(tree: Path, tmp_path: Path) -> None:
    (tree / "acme/thing/v1/thing.proto").write_text(SMALL.replace("= 1;", "= ;"))
    with pytest.raises(ReleaseError) as info:
        freeze("1.0.0", proto_root=tree, releases_dir=tmp_path / "rel")
    assert "acme/thing/v1/thing.proto:7:" in str(info.value)
    assert not (tmp_path / "rel/1.0.0.binpb").exists()


def test_missing_import_is_reported(tree: Path, tmp_path: Path) -> None:
    text = SMALL.replace('import "google/protobuf/timestamp.proto";', 'import "nope/x.proto";')
    (tree / "acme/thing/v1/thing.proto").write_text(text)
    with pytest.raises(ReleaseError, match=r"nope/x\.proto"):
        freeze("1.0.0", proto_root=tree, releases_dir=tmp_path / "rel")


def test_tampered_image_is_detected(tree: Path, tmp_path: Path) -> None:
    rel = freeze("1.0.0", proto_root=tree, releases_dir=tmp_path / "rel")
    rel.image.write_bytes(rel.image.read_bytes() + b"\x00")
    with pytest.raises(ReleaseError, match="sha256 is"):
        list_releases(tmp_path / "rel")


def test_release_1_0_0_is_in_the_repo_and_cannot_be_refrozen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases = REPO / RELEASES_DIR
    versions = [str(r.version) for r in list_releases(releases)]
    assert "1.0.0" in versions
    # Work on a copy: the command must refuse before writing anything.
    copy = tmp_path / "releases"
    shutil.copytree(releases, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    code = main(
        ["contracts", "freeze", "1.0.0", "--proto", str(REPO / "proto"), "--releases", str(copy)]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"hplus: error: release 1.0.0 is frozen already ({copy / '1.0.0.binpb'}); "
        "a frozen release is never rewritten"
    ]
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


def test_parse_version_orders_by_semver() -> None:
    assert parse_version("1.0.0-rc.1") < parse_version("1.0.0") < parse_version("1.0.1")


def test_this_build_speaks_the_newest_frozen_release() -> None:
    from mesh.version import CONTRACT_RELEASE

    assert str(latest_release(REPO / RELEASES_DIR).version) == CONTRACT_RELEASE


def test_release_notes_exist_for_every_release_after_the_first() -> None:
    for rel in list_releases(REPO / RELEASES_DIR)[1:]:
        notes = rel.image.with_name(f"{rel.version}.md")
        assert notes.is_file(), f"missing release notes {notes}"
        assert "compatible" in notes.read_text()

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

import compat
from tools.cli import main

P3 = 'syntax = "proto3";\n\npackage a.v1;\n\n'


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def _freeze(src: Path, releases: Path, version: str) -> Path:
    fds = compat.compile_protos(src)
    releases.mkdir(parents=True, exist_ok=True)
    image = releases / f"{version}.binpb"
    data = fds.SerializeToString()
    image.write_bytes(data)
    (releases / f"{version}.binpb.sha256").write_text(
        f"{hashlib.sha256(data).hexdigest()}  {image.name}\n"
    )
    return image


@pytest.fixture
def tree(tmp_path):
    return _tree(
        tmp_path / "proto",
        {
            "a/v1/a.proto": P3 + 'import "google/protobuf/timestamp.proto";\n\n'
            "message A {\n  google.protobuf.Timestamp at = 1;\n}\n"
        },
    )


def test_directory_input_excludes_imports(tree):
    loaded = compat.load_input(str(tree))
    assert list(loaded.schema.files) == ["a/v1/a.proto"]
    assert "google.protobuf.Timestamp" not in loaded.schema.messages
    assert loaded.schema.message("google.protobuf.Timestamp") is not None
    assert loaded.label == str(tree)


def test_image_and_release_inputs_treat_bundled_files_as_imports(tree, tmp_path):
    releases = tmp_path / "releases"
    image = _freeze(tree, releases, "1.2.0")
    for ref in (str(image), "release:1.2.0"):
        loaded = compat.load_input(ref, releases_dir=releases)
        assert list(loaded.schema.files) == ["a/v1/a.proto"]
    assert compat.list_release_versions(releases) == ["1.2.0"]
    # the same tree as directory and as image compares equal
    a = compat.load_input(str(tree)).schema
    b = compat.load_input("release:1.2.0", releases_dir=releases).schema
    assert compat.breaking(a, b, categories=list(compat.Category)) == []


def test_release_versions_sort_semantically(tree, tmp_path):
    releases = tmp_path / "releases"
    for v in ("1.10.0", "1.2.0", "1.9.1"):
        _freeze(tree, releases, v)
    (releases / "notes.binpb").write_bytes(b"")
    assert compat.list_release_versions(releases) == ["1.2.0", "1.9.1", "1.10.0"]


def test_git_ref_input(tmp_path):
    repo = tmp_path / "repo"
    _tree(repo / "proto", {"a/v1/a.proto": P3 + "message A {\n  int32 x = 1;\n}\n"})

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    (repo / "proto/a/v1/a.proto").write_text(P3 + "message A {\n  int64 x = 1;\n}\n")
    old = compat.load_input("git:HEAD", repo=repo)
    new = compat.load_input(str(repo / "proto"))
    assert old.label == "git:HEAD"
    rules = [
        f.rule
        for f in compat.breaking(old.schema, new.schema, categories=[compat.Category.WIRE_JSON])
    ]
    assert rules == ["FIELD_WIRE_JSON_COMPATIBLE_TYPE"]
    with pytest.raises(compat.CompatInputError) as err:
        compat.load_input("git:no-such-ref", repo=repo)
    assert str(err.value).startswith("git:no-such-ref: ")


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    _tree(repo / "proto", {"a/v1/a.proto": P3 + "message A {\n  int32 x = 1;\n}\n"})
    for args in (
        ("init", "-q"),
        ("add", "."),
        ("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one"),
        ("tag", "v1.0.0"),
    ):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    return repo


def test_git_ref_cannot_be_read_as_an_option(tmp_path, capsys):
    repo = _repo(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    with pytest.raises(compat.CompatInputError) as err:
        compat.load_input(f"git:--output={victim}", repo=repo)
    assert str(err.value) == (
        f"git:--output={victim}: not a valid git reference (it starts with '-'); "
        "expected git:<branch, tag or commit>[~N]"
    )
    assert victim.read_text() == "keep me\n"  # git never ran with it

    cur = repo / "proto"
    assert main(["compat", "diff", f"git:--output={victim}", str(cur)]) == 2
    assert "not a valid git reference" in capsys.readouterr().err
    assert victim.read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("", "it is empty"),
        ("-p", "it starts with '-'"),
        ("a..b", "it contains '..'"),
        ("main:proto", "it contains ':'"),
        ("HEAD^{tree}", "it contains '^'"),
        ("@{-1}", "it contains '@{'"),
        ("new branch", "it contains a space"),
        ("x\x01", "it contains a control character"),
        ("heads/", "it starts or ends with '/'"),
        ("refs/.hidden", "a component starts with '.' or ends with '.lock'"),
        ("main.lock", "a component starts with '.' or ends with '.lock'"),
        ("@", "it is '@'"),
    ],
)
def test_malformed_git_refs_are_refused_by_name(ref, why):
    with pytest.raises(compat.CompatInputError, match="not a valid git reference") as err:
        compat.check_git_ref(ref)
    assert f"({why})" in str(err.value)


def test_git_refs_must_name_a_commit(tmp_path):
    repo = _repo(tmp_path)
    for ref in ("HEAD", "HEAD~0", "v1.0.0", "refs/tags/v1.0.0"):
        assert list(compat.load_input(f"git:{ref}", repo=repo).schema.files) == ["a/v1/a.proto"]
    for ref in ("HEAD~3", "no-such-branch", "0123abcd"):
        with pytest.raises(compat.CompatInputError) as err:
            compat.load_input(f"git:{ref}", repo=repo)
        assert str(err.value) == f"git:{ref}: not a commit in {repo}"


def test_syntax_error_names_file_line_and_column(tmp_path):
    root = _tree(tmp_path, {"a/v1/a.proto": P3 + "message A {\n  int32 = 1;\n}\n"})
    with pytest.raises(compat.CompatInputError) as err:
        compat.load_input(str(root))
    e = err.value
    assert (e.line, e.column) == (6, 9)
    assert e.path is not None
    assert e.path.endswith("a/v1/a.proto")
    assert str(e).count("\n") == 0
    assert ":6:9: " in str(e)


def test_missing_import_names_the_file(tmp_path):
    root = _tree(tmp_path, {"a/v1/a.proto": P3 + 'import "nope/v1/nope.proto";\n'})
    with pytest.raises(compat.CompatInputError) as err:
        compat.load_input(str(root))
    assert "nope/v1/nope.proto" in str(err.value)


def test_empty_directory_and_missing_input(tmp_path):
    with pytest.raises(compat.CompatInputError, match=r"no \.proto files"):
        compat.load_input(str(tmp_path))
    with pytest.raises(compat.CompatInputError, match="no such file"):
        compat.load_input(str(tmp_path / "missing"))


def test_corrupt_image_and_digest_mismatch(tree, tmp_path):
    bad = tmp_path / "bad.binpb"
    bad.write_bytes(b"\xff\xff\xff\xff not a descriptor set")
    with pytest.raises(compat.CompatInputError, match="corrupt image"):
        compat.load_input(str(bad))
    empty = tmp_path / "empty.binpb"
    empty.write_bytes(b"")
    with pytest.raises(compat.CompatInputError, match="corrupt image"):
        compat.load_input(str(empty))
    releases = tmp_path / "releases"
    image = _freeze(tree, releases, "1.0.0")
    image.write_bytes(image.read_bytes() + b"\x00")
    with pytest.raises(compat.CompatInputError, match="digest"):
        compat.load_input("release:1.0.0", releases_dir=releases)


def test_unknown_release_lists_the_known_ones(tree, tmp_path):
    releases = tmp_path / "releases"
    _freeze(tree, releases, "1.0.0")
    with pytest.raises(compat.CompatInputError) as err:
        compat.load_input("release:9.9.9", releases_dir=releases)
    assert str(err.value) == "release:9.9.9: unknown release (frozen: 1.0.0)"

"""``make gen`` and ``make check-gen`` (tools.protobuild)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import protobuild

REPO = Path(__file__).resolve().parents[3]


def _copy_tree_without_gen(dst: Path) -> None:
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mesh", "cloud", "frontend_server", "compat", "tools", "bench", "proto"):
        shutil.copytree(REPO / name, dst / name, ignore=skip)
    shutil.copy(REPO / "pyproject.toml", dst)


def test_gen_rebuilds_a_tree_without_gen(tmp_path: Path) -> None:
    tree = tmp_path / "clone"
    _copy_tree_without_gen(tree)
    assert not (tree / "gen").exists()
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import runpy, sys
            # Drop the editable install's finders: they map `hplus` to the repository's gen/.
            def ours(x):
                return "__editable__" in (getattr(x, "__module__", "") + str(x))
            sys.meta_path[:] = [f for f in sys.meta_path if not ours(f)]
            sys.path_hooks[:] = [h for h in sys.path_hooks if not ours(h)]
            sys.path[:] = [p for p in sys.path if "__editable__" not in p]
            sys.path_importer_cache.clear()
            sys.argv = ["protobuild", "gen", "--proto", "proto", "--out", "gen"]
            try:
                runpy.run_module("tools.protobuild", run_name="__main__", alter_sys=True)
            finally:
                ours = ("mesh", "cloud", "frontend_server", "compat", "tools", "bench", "hplus")
                inside = {str(tree) + os.sep!r}
                for m in list(sys.modules.values()):
                    f = getattr(m, "__file__", None) or ""
                    if m.__name__.split(".")[0] in ours and not f.startswith(inside):
                        print("LEAKED", m.__name__, f)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": f"gen{os.pathsep}."}
    res = subprocess.run(
        [sys.executable, str(script)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "LEAKED" not in res.stdout, res.stdout
    # Byte code the interpreter caches beside the sources is not generated code.
    made = {
        p.relative_to(tree / "gen").as_posix()
        for p in (tree / "gen").rglob("*.py*")
        if "__pycache__" not in p.parts
    }
    held = {
        p.relative_to(REPO / "gen").as_posix()
        for p in (REPO / "gen").rglob("*.py*")
        if "__pycache__" not in p.parts
    }
    assert made == held
    assert "hplus/tunnel/v1/tunnel_pb2_grpc.py" in made


SIMPLE = """syntax = "proto3";
package acme.demo.v1;
// A thing.
message Thing {
  // Its name.
  string name = 1;
}
"""


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    proto = tmp_path / "proto" / "acme" / "demo" / "v1" / "demo.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(SIMPLE)
    protobuild.generate(tmp_path / "proto", tmp_path / "gen")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def _check(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = protobuild.check(repo / "proto", repo / "gen", repo / "build" / "check-gen")
    return code, capsys.readouterr().err


def test_check_passes_when_gen_is_current_and_committed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(repo, capsys) == (0, "")


def test_check_says_stale_when_proto_changed_and_gen_did_not(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proto = repo / "proto" / "acme" / "demo" / "v1" / "demo.proto"
    proto.write_text(
        SIMPLE.replace("string name = 1;", "string name = 1;\n  // Its size.\n  int32 size = 2;")
    )
    code, err = _check(repo, capsys)
    assert code == 1
    assert "gen/ is stale: 2 file(s) differ from what" in err
    assert "acme/demo/v1/demo_pb2.py" in err
    assert "not committed" not in err


def test_check_says_stale_for_a_hand_edit_or_an_extra_file(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "gen" / "acme" / "demo" / "v1" / "helper.py").write_text("x = 1\n")
    code, err = _check(repo, capsys)
    assert code == 1
    assert "is stale: 1 file(s)" in err
    assert "helper.py" in err


def test_check_says_uncommitted_when_gen_matches_but_git_lacks_it(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proto = repo / "proto" / "acme" / "demo" / "v1" / "demo.proto"
    proto.write_text(
        SIMPLE.replace("string name = 1;", "string name = 1;\n  // Its size.\n  int32 size = 2;")
    )
    protobuild.generate(repo / "proto", repo / "gen")
    code, err = _check(repo, capsys)
    assert code == 1
    assert "gen/ matches" in err
    assert "but is not committed" in err
    assert "stale" not in err
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "regenerated")
    assert _check(repo, capsys) == (0, "")

"""The private-module contract: unit checks on a hand-built graph, and `lint-imports` on a
small tree, so the wiring through ``contract_types`` is proven too."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

from tools.importlint import PrivateImport, PrivateModulesContract, private_owner

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.mark.parametrize(
    ("module", "owner"),
    [
        ("cloud.registry._store", "cloud.registry"),
        ("cloud.registry._x.y", "cloud.registry"),
        ("cloud.registry.servicer", None),
        ("tools.cli.__main__", None),
        ("cloud", None),
    ],
)
def test_private_owner(module: str, owner: str | None) -> None:
    assert private_owner(module) == owner


def _graph(*imports: tuple[str, str]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for importer, imported in imports:
        graph.add_import(importer=importer, imported=imported, line_number=7, line_contents="")
    return graph


def _check(graph: grimp.ImportGraph) -> list[PrivateImport]:
    contract = PrivateModulesContract(
        name="private",
        session_options={"root_packages": ["a", "b"]},
        contract_options={"type": "private_modules"},
    )
    check = contract.check(graph, verbose=False)
    found: list[PrivateImport] = check.metadata["imports"]
    assert check.kept is (not found)
    return found


def test_the_owner_and_its_insides_may_import_a_private_module() -> None:
    graph = _graph(("a.p", "a.p._x"), ("a.p.q", "a.p._x"), ("a.p._y", "a.p._x"))
    assert _check(graph) == []


def test_a_parent_a_sibling_or_another_package_may_not() -> None:
    graph = _graph(("a.q", "a.p._x"), ("b.m", "a.p._x._z"), ("a.p", "a.p._x"), ("a", "a.p._x"))
    assert _check(graph) == [
        PrivateImport("a", "a.p._x", "a.p", (7,)),
        PrivateImport("a.q", "a.p._x", "a.p", (7,)),
        PrivateImport("b.m", "a.p._x._z", "a.p", (7,)),
    ]


def test_modules_outside_the_root_packages_are_not_judged() -> None:
    assert _check(_graph(("a.m", "thirdparty._impl"))) == []


def test_lint_imports_reports_the_import_and_where_to_import_from(tmp_path: Path) -> None:
    if not LINT_IMPORTS.exists():
        pytest.skip("lint-imports is not installed in this interpreter's environment")
    for path, text in {
        "pa/__init__.py": "from pa._impl import thing\n",
        "pa/_impl.py": "thing = 1\n",
        "pa/sub.py": "from pa._impl import thing\n",
        "pb/__init__.py": "",
        "pb/user.py": "import os\n\nfrom pa._impl import thing\n",
        ".importlinter": textwrap.dedent(
            """\
            [importlinter]
            root_packages =
                pa
                pb
            contract_types =
                private_modules: tools.importlint.PrivateModulesContract

            [importlinter:contract:private]
            name = private modules
            type = private_modules
            """
        ),
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    res = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "- pb.user -> pa._impl (l.3): import it from pa" in res.stdout
    assert "pa.sub" not in res.stdout

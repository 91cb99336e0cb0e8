from __future__ import annotations

import compat


def test_public_surface_is_pinned():
    assert sorted(compat.__all__) == [
        "CLOUD_SERVICES",
        "Category",
        "Change",
        "ChangeKind",
        "ChangeReport",
        "CompatInputError",
        "DEFAULT_CATEGORIES",
        "DiffResult",
        "Finding",
        "Judgement",
        "LoadedInput",
        "ParameterChange",
        "ProtoCompileError",
        "RULES",
        "RuleSpec",
        "Schema",
        "Severity",
        "Suppressions",
        "WindowReport",
        "breaking",
        "changes",
        "check_git_ref",
        "compile_protos",
        "diff",
        "include_paths",
        "list_release_versions",
        "load_approvals",
        "load_input",
        "proto_files",
        "rules_for",
        "schema_of",
        "window",
    ]
    for name in compat.__all__:
        assert getattr(compat, name) is not None


def test_library_imports_nothing_of_ours_but_compat():
    import ast
    from pathlib import Path

    ours = {"mesh", "cloud", "frontend_server", "tools", "bench", "hplus", "gen"}
    for path in Path(compat.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in ours, (path, node.module)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in ours, (path, alias.name)

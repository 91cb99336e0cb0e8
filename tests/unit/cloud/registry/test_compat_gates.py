"""The compat gates agree: CI's window gate, ``compat diff`` and ``registry push``.

The same JSON-breaking rename is refused by the command ``make compat-window`` runs (read
from the Makefile, so a flag added there is tested here) and by a push to a live registry;
both ask for the same fingerprints, and one approvals file lets it through both.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import textwrap
from pathlib import Path

import pytest

import compat
from tests.unit.cloud.registry.conftest import ECHO_V1, Registry
from tools.cli import main

REPO = Path(__file__).resolve().parents[4]

# `times` renamed to `count`: the binary encoding is unchanged, the JSON one is not.
RENAMED = ECHO_V1.replace("int32 times = 2;", "int32 count = 2;")
# `times` removed without reserving its number: push refused three findings here that
# `compat diff` never printed (the change list's FIELD_REMOVED among them).
REMOVED = ECHO_V1.replace("  int32 times = 2;\n", "")


def _tree(root: Path, text: str) -> Path:
    (root / "regtest" / "v1").mkdir(parents=True)
    (root / "regtest" / "v1" / "echo.proto").write_text(textwrap.dedent(text.format(pkg="regtest")))
    return root


def _make_window_args() -> list[str]:
    """The arguments ``make compat-window`` passes to ``hplus``, read from the Makefile."""
    lines = (REPO / "Makefile").read_text().splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("compat-window:"))
    argv = shlex.split(lines[at + 1])
    return argv[next(n for n, a in enumerate(argv) if a.endswith("/hplus")) + 1 :]


def _window_argv(candidate: Path, releases: Path, *extra: str) -> list[str]:
    argv = _make_window_args()
    assert argv[:2] == ["compat", "window"], argv
    assert "proto" in argv, argv
    argv[argv.index("proto")] = str(candidate)
    return [*argv, "--releases-dir", str(releases), *extra]


class _Gates:
    """The three gates, run as a user runs them."""

    def __init__(self, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        self.capsys = capsys
        token = tmp_path / "token"
        token.write_text(registry.manager + "\n")
        self.client = [
            "--registry",
            registry.target,
            "--plaintext",
            "--token-file",
            str(token),
            "--data-dir",
            str(tmp_path / "var"),
        ]
        self.releases = tmp_path / "releases"
        self.releases.mkdir()

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(argv)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def push(self, tree: Path, version: str, *extra: str) -> tuple[int, str, str]:
        # The CLI runs its own event loop: call it from a worker thread.
        self.capsys.readouterr()
        argv = ["registry", "push", str(tree), "--version", version, *extra, *self.client]
        code = await asyncio.to_thread(main, argv)
        out, err = self.capsys.readouterr()
        return code, out, err

    async def release(self, tree: Path, version: str) -> None:
        """Freeze ``tree`` as ``version`` for the window and push it to the registry."""
        image = compat.compile_protos(tree).SerializeToString()
        (self.releases / f"{version}.binpb").write_bytes(image)
        code, out, err = await self.push(tree, version)
        assert code == 0, err
        assert out.startswith(f"pushed {version}")


def _refused(err: str) -> set[str]:
    """The fingerprints a refused push lists (one violation a line: ``  FP  RULE: …``)."""
    return {line.split()[0] for line in err.splitlines()[1:] if line.startswith("  ")}


@pytest.mark.parametrize("change", [RENAMED, REMOVED], ids=["json-rename", "unreserved-delete"])
async def test_window_diff_and_push_refuse_alike_and_one_approvals_file_passes_all(
    registry: Registry,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
) -> None:
    gates = _Gates(registry, tmp_path, capsys)
    await gates.release(_tree(tmp_path / "v1", ECHO_V1), "1.0.0")
    candidate = _tree(tmp_path / "candidate", change)

    code, out, _ = gates.run(_window_argv(candidate, gates.releases, "--format", "json"))
    assert code == 1, out  # CI's gate refuses it
    window = json.loads(out)
    asked_by_window = {b["fingerprint"] for pair in window["pairs"] for b in pair["blocking"]}

    code, out, _ = gates.run(
        ["compat", "diff", "release:1.0.0", str(candidate), "--releases-dir", str(gates.releases)]
    )
    assert code == 1
    assert all(f"({fp})" in out for fp in asked_by_window), out  # the diff prints each one
    code, out, _ = gates.run(
        [
            "compat",
            "diff",
            "release:1.0.0",
            str(candidate),
            "--releases-dir",
            str(gates.releases),
            "--format",
            "json",
        ]
    )
    assert {b["fingerprint"] for b in json.loads(out)["blocking"]} == asked_by_window

    code, _, err = await gates.push(candidate, "1.1.0")
    assert code == 1, err  # and so does the registry
    assert _refused(err) == asked_by_window, err

    approvals = tmp_path / "approvals.txt"
    approvals.write_text(
        "# reviewed: regtest is not in production\n"
        + "".join(f"{fp} intended\n" for fp in sorted(asked_by_window))
    )
    code, out, _ = gates.run(_window_argv(candidate, gates.releases, "--approvals", str(approvals)))
    assert code == 0, out
    code, out, err = await gates.push(candidate, "1.1.0", "--approve", str(approvals))
    assert code == 0, err
    assert "checked against 1.0.0: backward compatible_with_approvals" in out

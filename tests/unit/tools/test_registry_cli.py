from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import textwrap
import uuid
from pathlib import Path

import grpc
import pytest

from tests.unit.cloud.registry.conftest import ECHO_V1, Registry
from tools.cli import _registry
from tools.cli._base import CliError, Parser

REPO = Path(__file__).resolve().parents[3]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="hplus")
    sub = parser.add_subparsers(dest="group", parser_class=Parser)
    _registry.register(sub)
    return parser.parse_args(argv)


class Cli:
    """Runs `hplus registry …` in a worker thread (it runs its own event loop)."""

    def __init__(self, registry: Registry, tmp_path: Path) -> None:
        self.tmp = tmp_path
        token = tmp_path / "token"
        token.write_text(registry.manager + "\n")
        self.flags = [
            "--registry",
            registry.target,
            "--plaintext",
            "--token-file",
            str(token),
            "--data-dir",
            str(tmp_path / "var"),
        ]

    async def __call__(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        args = _parse(["registry", *argv, *self.flags])
        capsys.readouterr()
        code = await asyncio.to_thread(args.func, args)
        return code, capsys.readouterr().out


def _tree(root: Path, pkg: str, text: str) -> Path:
    (root / pkg / "v1").mkdir(parents=True)
    (root / pkg / "v1" / "echo.proto").write_text(textwrap.dedent(text.format(pkg=pkg)))
    return root


async def test_cli_push_list_show_diff_label_lifecycle(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(registry, tmp_path)
    one = _tree(tmp_path / "one", "regtest", ECHO_V1)
    code, out = await cli(capsys, "push", str(one), "--version", "1.0.0", "--label", "stable")
    assert code == 0
    assert out.startswith("pushed 1.0.0 sha256:")
    code, out = await cli(capsys, "push", str(one), "--version", "1.0.0")
    assert out.startswith("unchanged 1.0.0")

    two = _tree(tmp_path / "two", "regtest", ECHO_V1.replace("  int32 times = 2;\n", ""))
    with pytest.raises(CliError) as refused:
        await cli(capsys, "push", str(two), "--version", "1.1.0")
    assert refused.value.exit_code == _registry.EXIT_BREAKING
    assert "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED" in refused.value.message
    fingerprints = [
        line.split()[0] for line in refused.value.message.splitlines() if line.startswith("  ")
    ]
    approvals = tmp_path / "approvals.txt"
    approvals.write_text("# intended: times is gone\n" + "\n".join(fingerprints) + "\n")
    code, out = await cli(
        capsys, "push", str(two), "--version", "1.1.0", "--approve", str(approvals)
    )
    assert code == 0
    assert "checked against 1.0.0: backward compatible_with_approvals" in out

    code, out = await cli(capsys, "list")
    lines = out.splitlines()
    assert lines[1].startswith("1.1.0")
    assert lines[2].startswith("1.0.0")
    assert lines[2].rstrip().endswith("stable")
    code, out = await cli(capsys, "show", "label:stable")
    assert "version:    1.0.0" in out
    assert "regtest/v1/echo.proto" in out
    code, out = await cli(capsys, "diff", "1.0.0", "1.1.0", "--format", "json")
    doc = json.loads(out)
    assert doc["schema"] == "hplus.compat.diff/v1"
    assert doc["compatible"]  # every break approved at push
    assert doc["summary"]["approved"] >= 2
    code, out = await cli(capsys, "diff", "1.0.0", "1.1.0", "--format", "markdown")
    assert out.startswith("# Contract changes: `1.0.0` → `1.1.0`")

    code, out = await cli(capsys, "label", "stable", "1.1.0", "--expect", "1.0.0")
    assert out.strip() == "label stable -> 1.1.0 (was 1.0.0)"
    with pytest.raises(CliError) as lost:
        await cli(capsys, "label", "stable", "1.0.0", "--expect", "1.0.0")
    assert "ABORTED" in lost.value.message
    code, out = await cli(capsys, "deprecate", "1.0.0", "--reason", "old")
    assert out.strip() == "1.0.0 is deprecated"
    code, out = await cli(capsys, "retire", "1.0.0")
    assert out.strip() == "1.0.0 is retired"
    with pytest.raises(CliError) as final:
        await cli(capsys, "activate", "1.0.0")
    assert "FAILED_PRECONDITION" in final.value.message


async def test_cli_gen_writes_stubs_that_import_and_serve(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(registry, tmp_path)
    pkg = f"gen{uuid.uuid4().hex[:10]}"
    await cli(capsys, "push", str(_tree(tmp_path / "src", pkg, ECHO_V1)), "--version", "2.0.0")
    out_dir = tmp_path / "stubs"
    code, _ = await cli(capsys, "gen", "2.0.0", "--out", str(out_dir))
    assert code == 0
    assert (out_dir / pkg / "v1" / "echo_pb2.py").is_file()
    assert (out_dir / pkg / "v1" / "echo_pb2.pyi").is_file()

    sys.path.insert(0, str(out_dir))
    try:
        pb = importlib.import_module(f"{pkg}.v1.echo_pb2")
        rpc = importlib.import_module(f"{pkg}.v1.echo_pb2_grpc")
    finally:
        sys.path.remove(str(out_dir))

    class Echo(rpc.EchoServiceServicer):  # type: ignore[name-defined,misc]
        async def Echo(self, request, context):  # type: ignore[no-untyped-def]
            return pb.EchoResponse(text=request.text * request.times)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    rpc.add_EchoServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await rpc.EchoServiceStub(channel).Echo(
                pb.EchoRequest(text="ab", times=3), timeout=10
            )
    finally:
        await server.stop(None)
    assert reply.text == "ababab"


async def test_cli_import_loads_the_frozen_releases(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(registry, tmp_path)
    releases = REPO / "proto" / "releases"
    code, out = await cli(capsys, "import", "--releases-dir", str(releases))
    frozen = sorted(p.name.removesuffix(".binpb") for p in releases.glob("*.binpb"))
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == frozen
    code, out = await cli(capsys, "import", "--releases-dir", str(releases))
    assert all(line.startswith("already there:") for line in out.splitlines())
    code, out = await cli(capsys, "show", frozen[-1])
    assert "hplus.cloud.v1.RegistryService" in out


async def test_cli_errors_are_one_line_per_problem(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(registry, tmp_path)
    with pytest.raises(CliError) as err:
        await cli(capsys, "show", "9.9.9")
    assert err.value.message.startswith(f"registry {registry.target}: NOT_FOUND: release")
    with pytest.raises(CliError) as err:
        await cli(capsys, "push", str(tmp_path / "nowhere"), "--version", "1.0.0")
    assert "nowhere" in err.value.message
    broken = tmp_path / "broken" / "x" / "v1"
    broken.mkdir(parents=True)
    (broken / "x.proto").write_text('syntax = "proto3";\npackage x.v1;\nmessage X { int32 = 1; }\n')
    with pytest.raises(CliError) as err:
        await cli(capsys, "push", str(tmp_path / "broken"), "--version", "1.0.0")
    assert "x/v1/x.proto:3:" in err.value.message
    with pytest.raises(CliError) as err:
        await cli(
            capsys, "push", str(_tree(tmp_path / "ok", "regtest", ECHO_V1)), "--version", "one"
        )
    assert "INVALID_ARGUMENT: version:" in err.value.message


def test_cli_token_issue_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--data-dir", str(tmp_path)]
    out_file = tmp_path / "rm.token"
    args = _parse(
        [
            "registry",
            "token",
            "issue",
            "bob",
            "--role",
            "release-manager",
            "--out",
            str(out_file),
            *db,
        ]
    )
    assert args.func(args) == 0
    assert out_file.read_text().startswith("hpr1.")
    assert out_file.stat().st_mode & 0o777 == 0o600
    token_id = out_file.read_text().split(".")[1]
    capsys.readouterr()
    args = _parse(["registry", "token", "list", *db])
    args.func(args)
    listed = capsys.readouterr().out
    assert token_id in listed
    assert "release-manager" in listed
    assert "valid" in listed
    args = _parse(["registry", "token", "revoke", token_id, *db])
    args.func(args)
    args = _parse(["registry", "token", "list", *db])
    args.func(args)
    assert "revoked" in capsys.readouterr().out
    args = _parse(["registry", "token", "revoke", "nope", *db])
    with pytest.raises(CliError, match="token 'nope' not found"):
        args.func(args)

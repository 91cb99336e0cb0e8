"""`hplus registry census` and the census notes of `hplus registry diff`, end to end."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.census import CensusStore, FieldCensus, census_answer, migrate_census
from cloud.registry import Role, TokenStore, build_registry
from mesh.tunnel import CallInfo
from tests.unit.cloud.registry.conftest import ECHO_V1, Registry, start_server
from tests.unit.tools.test_registry_cli import Cli, _tree

RPC = "/regtest.v1.EchoService/Echo"


@pytest.fixture
async def registry_with_census(db_engine: AsyncEngine):
    import grpc

    from hplus.cloud.v1 import registry_pb2_grpc

    await migrate_census(db_engine)
    store = CensusStore(db_engine)
    servicer = await build_registry(db_engine, census=census_answer(store, rate=1.0))
    tokens = TokenStore(db_engine)
    manager = await tokens.issue("alice", Role.RELEASE_MANAGER, actor="test")
    service = await tokens.issue("fleet", Role.SERVICE, actor="test")
    server, port = await start_server(servicer)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield (
            Registry(
                registry_pb2_grpc.RegistryServiceStub(channel),
                db_engine,
                tokens,
                manager.token,
                service.token,
                f"127.0.0.1:{port}",
            ),
            store,
        )
    finally:
        await channel.close()
        await server.stop(None)


async def record_traffic(store: CensusStore, release: str, times_present: int, total: int):
    """What gateways would count: Echo requests from edges on ``release``."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    fdp = descriptor_pb2.FileDescriptorProto(
        name="echo.proto", package="regtest.v1", syntax="proto3"
    )
    req = fdp.message_type.add(name="EchoRequest")
    req.field.add(name="text", number=1, type=9, label=1)
    req.field.add(name="times", number=2, type=5, label=1)
    fdp.message_type.add(name="EchoResponse").field.add(name="text", number=1, type=9, label=1)
    fdp.service.add(name="EchoService").method.add(
        name="Echo", input_type=".regtest.v1.EchoRequest", output_type=".regtest.v1.EchoResponse"
    )
    pool.Add(fdp)
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("regtest.v1.EchoRequest"))
    census = FieldCensus(rate=1.0, rng=random.Random(0), pool=pool)
    for i in range(total):
        info = CallInfo(
            method=RPC,
            metadata=[],
            trace=None,
            hospital_id="h",
            session="s",
            started=0.0,
            contract_release=release,
        )
        census.on_start(info)
        msg = cls(text="hi", times=3) if i < times_present else cls(text="hi")
        census.on_message(info, True, msg.SerializeToString())
    await store.flush(census)


async def test_census_and_diff_annotations(
    registry_with_census, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry, store = registry_with_census
    cli = Cli(registry, tmp_path)
    one = _tree(tmp_path / "one", "regtest", ECHO_V1)
    assert (await cli(capsys, "push", str(one), "--version", "1.0.0"))[0] == 0
    await record_traffic(store, "1.0.0", times_present=7, total=10)

    code, out = await cli(capsys, "census", "--rpc", RPC)
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:-1]]
    assert [RPC, "request", "1.0.0", "times", "7/10"] in rows
    assert [RPC, "request", "1.0.0", "text", "10/10"] in rows
    assert out.splitlines()[-1] == "2 row(s)"

    # A release manager plans to drop `times`: the diff says edges still send it.
    two = _tree(tmp_path / "two", "regtest", ECHO_V1.replace("  int32 times = 2;\n", ""))
    from tools.cli._base import CliError

    with pytest.raises(CliError) as refused:
        await cli(capsys, "push", str(two), "--version", "1.1.0")
    fingerprints = [
        line.split()[0] for line in refused.value.message.splitlines() if line.startswith("  ")
    ]
    approvals = tmp_path / "approvals.txt"
    approvals.write_text("\n".join(fingerprints) + "\n")
    await cli(capsys, "push", str(two), "--version", "1.1.0", "--approve", str(approvals))
    code, out = await cli(capsys, "diff", "1.0.0", "1.1.0")
    assert "Field census: removed or changed parameters that edges still carry" in out
    assert (
        f"{RPC} request `times` (removed): present in sampled messages from edges on "
        "1.0.0 (7 of 10)" in out
    )
    code, out = await cli(capsys, "diff", "1.0.0", "1.1.0", "--format", "json")
    import json

    assert json.loads(out)["census"] == [
        {
            "rpc": RPC,
            "direction": "request",
            "parameter": "times",
            "change": "removed",
            "releases": [["1.0.0", 7, 10]],
        }
    ]


async def test_compat_diff_reads_registry_releases(
    registry_with_census, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import json

    from tools.cli import main

    registry, _ = registry_with_census
    cli = Cli(registry, tmp_path)
    one = _tree(tmp_path / "one", "regtest", ECHO_V1)
    assert (await cli(capsys, "push", str(one), "--version", "1.0.0"))[0] == 0
    two = _tree(tmp_path / "two", "regtest", ECHO_V1.replace("  int32 times = 2;\n", ""))
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["compat", "diff", "registry:1.0.0", str(two), "--format", "json", *cli.flags]
    )
    out = capsys.readouterr().out
    assert code == 1  # `times` was removed without reserving its number
    doc = json.loads(out)
    assert doc["old"] == "1.0.0"
    assert any(f["rule"] == "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED" for f in doc["findings"])
    code = await asyncio.to_thread(main, ["compat", "diff", "registry:9.9.9", str(two), *cli.flags])
    err = capsys.readouterr().err
    assert code == 2
    assert "NOT_FOUND" in err

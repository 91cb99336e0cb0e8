"""``hplus cloud apps``, ``hplus cloud accounts`` and ``hplus partitions`` on a data directory."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from cloud.config import NodeConfig
from cloud.partitioned import SCHEMAS
from cloud.partitions import PartitionSet
from tools.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_map(data_dir: Path) -> None:
    """What a node's first start does: the partition map, south and north."""
    config = NodeConfig(data_dir=data_dir)

    async def go() -> None:
        parts = await PartitionSet.open(
            config.partitions_url, first_urls=config.first_partition_urls, schemas=SCHEMAS
        )
        await parts.close()

    asyncio.run(go())


def test_apps_issue_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(tmp_path))
    key = tmp_path / "app.key"
    code, out, _ = run(capsys, "cloud", "apps", "issue", "city-wechat", "--channel", "mini-program",
                       "--rate", "50/1s", "--out", str(key), *d)  # fmt: skip
    assert code == 0, out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("hpk1.")
    assert key.read_text().strip() not in out
    app_id = out.split(", id ")[1].split(",")[0]
    code, out, _ = run(capsys, "cloud", "apps", "issue", "web", "--channel", "web", *d)
    assert code == 0
    assert out.splitlines()[-1].startswith("hpk1.")  # shown once, on its own line
    code, out, _ = run(capsys, "cloud", "apps", "list", *d)
    assert "city-wechat" in out
    assert "mini-program" in out
    assert "50/1s" in out
    assert "hpk1." not in out
    code, out, _ = run(capsys, "cloud", "apps", "revoke", app_id, *d)
    assert code == 0
    assert "revoked app" in out
    listed = run(capsys, "cloud", "apps", "list", *d)[1]
    assert [line.split()[-1] for line in listed.splitlines()[1:]] == ["valid", "revoked"]
    for argv, message in [
        (("issue", "city-wechat", "--channel", "web"), "an app named 'city-wechat' exists"),
        (("issue", "x", "--channel", "web", "--out", str(key)), "exists; refusing to overwrite"),
        (("issue", "x y", "--channel", "web"), "invalid app name"),
        (("issue", "x", "--channel", "web", "--rate", "fast"), "--rate: 'fast' is not a rate"),
        (("revoke", "nope"), "no app with id 'nope'"),
    ]:
        code, _, err = run(capsys, "cloud", "apps", *argv, *d)
        assert code == 2
        assert message in err
        assert err.count("\n") == 1  # one line, no traceback


def test_accounts_revoke_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(tmp_path))
    make_map(tmp_path)
    code, out, _ = run(capsys, "cloud", "accounts", "revoke", "44-0000000000000000", *d)
    assert code == 1
    assert "no valid session" in out
    code, out, _ = run(
        capsys, "cloud", "accounts", "revoke", "--token-id", "44-0000000000000000", *d
    )
    assert code == 1
    for argv, message in [
        ((), "give an ACCOUNT or --token-id ID"),
        (("44-0000000000000000", "--token-id", "x"), "give an ACCOUNT or --token-id ID"),
        (("nonsense",), "not a session or account id: 'nonsense'"),
    ]:
        code, _, err = run(capsys, "cloud", "accounts", "revoke", *argv, *d)
        assert code == 2
        assert message in err


def test_partitions_status_split_and_unfence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(tmp_path))
    code, out, _ = run(capsys, "partitions", "status", *d)
    assert code == 1
    assert "no partition map yet" in out
    make_map(tmp_path)
    code, out, _ = run(capsys, "partitions", "status", *d)
    assert code == 0
    assert "partition map version 1" in out
    assert "north        active   no" in out
    east, west = (f"sqlite:///{tmp_path / n}.db" for n in ("east", "west"))
    into = ("--into", f"east={east},west={west}")
    code, out, err = run(capsys, "partitions", "split", "south", *into, "--assign", "east=44", *d)
    assert code == 2
    assert "leaves" in err
    west_regions = "west=31,32,33,34,35,36,42,43,46,50,51,52,53,54,71,81,82,83"
    code, out, err = run(
        capsys, "partitions", "split", "south", *into, "--assign", "east=44,45",
        "--assign", west_regions, *d,
    )  # fmt: skip
    assert code == 0, err
    assert "east <- 44,45" in out
    assert "refused writes for" in out
    code, out, _ = run(capsys, "partitions", "status", "--format", "json", *d)
    doc = json.loads(out)
    assert doc["map_version"] == 2
    by_name = {p["name"]: p for p in doc["partitions"]}
    assert by_name["east"]["regions"] == ["44", "45"]
    assert by_name["south"]["state"] == "retired"
    assert by_name["south"]["fenced"] is True
    assert doc["splits"][0]["state"] == "done"
    code, out, err = run(capsys, "partitions", "split", "south", "--into", f"a={east},b={west}", *d)
    assert code == 2
    assert "no active partition 'south'" in err
    code, out, err = run(capsys, "partitions", "split", "east", "--into", "a", *d)
    assert code == 2
    assert "expected NAME=VALUE" in err
    code, out, _ = run(capsys, "partitions", "unfence", "east", *d)
    assert (code, out.strip()) == (0, "east was not fenced")
    code, _, err = run(capsys, "partitions", "unfence", "south", *d)  # retired: not active
    assert code == 2
    assert "no active partition 'south'" in err


def test_passwords_never_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(tmp_path))
    config = tmp_path / "node.toml"
    config.write_text(
        "[partitions]\n"
        'south = "postgresql://hplus:s3cret@127.0.0.1:1/south"\n'
        'north = "postgresql://hplus:s3cret@127.0.0.1:1/north"\n'
    )
    code, out, err = run(capsys, "cloud", "accounts", "revoke", "44-0000000000000000",
                         "--config", str(config), *d)  # fmt: skip
    assert code in (1, 2)
    assert "s3cret" not in out + err

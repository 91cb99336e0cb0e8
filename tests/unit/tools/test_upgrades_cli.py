"""``hplus fleet publish|upgrade|status|pause|resume|abort`` on a node's fleet database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cloud.db import create_engine
from cloud.fleet import CredentialStore, migrate_fleet
from mesh.packages import public_pem
from tests.support.upgrades import Keys, package
from tools.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, Keys]:
    keys = Keys()
    (tmp_path / "root.pub").write_bytes(public_pem(keys.root.public_key()))
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\ndata_dir = "var"\n[upgrades]\ntrusted_roots = ["root.pub"]\nmax_delta_bases = 2\n'
    )

    async def issue() -> None:
        (tmp_path / "var").mkdir()
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'fleet.db'}")
        await migrate_fleet(engine)
        for i in range(10):
            await CredentialStore(engine).issue(f"h-{i:02}")
        await engine.dispose()

    asyncio.run(issue())
    for version, broken in (("1.4.0", False), ("1.5.0", False), ("1.6.0", True)):
        (tmp_path / f"{version}.pkg").write_bytes(package(keys, version, broken=broken))
    return config, keys


def test_publish_upgrade_status_pause_resume_abort(
    node: tuple[Path, Keys], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = node
    cfg = ["--config", str(config)]
    code, out, err = run(capsys, "fleet", "publish", str(tmp_path / "1.4.0.pkg"), *cfg)
    assert code == 0, err
    assert "published edge-1.4.0-" in out
    assert "contracts 1.2.0" in out
    code, out, _ = run(capsys, "fleet", "publish", str(tmp_path / "1.5.0.pkg"), *cfg)
    assert code == 0
    assert "delta from 1.4.0:" in out

    code, out, _ = run(capsys, "fleet", "status", *cfg)
    assert (code, out.strip()) == (0, "no rollout yet (hplus fleet upgrade --to VERSION)")
    code, out, err = run(
        capsys, "fleet", "upgrade", "--to", "1.5.0", "--waves", "1,10%,50%,100%",
        "--max-failures", "1", "--window", "01:00-05:00", *cfg,
    )  # fmt: skip
    assert code == 0, err
    rollout = out.split()[1].rstrip(":")
    # 10 % of 10 is the canary again: that wave adds nobody and is dropped.
    assert "to 10 hospitals in waves of 1, 5, 10 (canary first), max failures 1" in out

    code, out, _ = run(capsys, "fleet", "status", "--format", "json", *cfg)
    doc = json.loads(out)
    assert doc["rollout"]["rollout_id"] == rollout
    assert doc["rollout"]["state"] == "running"
    assert doc["rollout"]["window"] == "01:00-05:00"
    assert [h["wave"] for h in doc["hospitals"]] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert {h["state"] for h in doc["hospitals"]} == {"pending"}
    code, out, _ = run(capsys, "fleet", "status", "--rollout", rollout, *cfg)
    assert f"rollout {rollout}: 1.5.0 running, wave 1 of 3 (pending 10)" in out
    assert out.count("pending") == 11

    code, _, err = run(capsys, "fleet", "upgrade", "--to", "1.5.0", *cfg)
    assert code == 1
    assert f"rollout {rollout} is still live" in err
    assert "[ROLLOUT_LIVE]" in err
    assert run(capsys, "fleet", "pause", rollout, *cfg)[1].strip() == f"rollout {rollout}: paused"
    assert run(capsys, "fleet", "resume", rollout, *cfg)[1].strip() == f"rollout {rollout}: running"
    assert run(capsys, "fleet", "abort", rollout, *cfg)[1].strip() == f"rollout {rollout}: aborted"
    code, _, err = run(capsys, "fleet", "resume", rollout, *cfg)
    assert code == 1
    assert "[ROLLOUT_STATE]" in err


def test_refusals_name_their_reason(
    node: tuple[Path, Keys], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = node
    cfg = ["--config", str(config)]
    stranger = tmp_path / "stranger.pkg"
    stranger.write_bytes(package(Keys(), "1.4.0"))
    code, _, err = run(capsys, "fleet", "publish", str(stranger), *cfg)
    assert code == 1
    assert "which this edge does not trust" in err
    assert "[UNKNOWN_KEY]" in err
    code, _, err = run(capsys, "fleet", "upgrade", "--to", "9.9.9", *cfg)
    assert code == 1
    assert "[NO_SUCH_VERSION]" in err
    run(capsys, "fleet", "publish", str(tmp_path / "1.4.0.pkg"), *cfg)
    code, _, err = run(capsys, "fleet", "upgrade", "--to", "1.4.0", "--waves", "5,2", *cfg)
    assert code == 1
    assert "waves: '2' is smaller than the wave before it" in err
    code, _, err = run(capsys, "fleet", "upgrade", "--to", "1.4.0", "--window", "25:00-01:00", *cfg)
    assert code == 2
    assert "--window: '25:00-01:00' is not HH:MM-HH:MM" in err
    bare = tmp_path / "bare.toml"
    bare.write_text('[node]\ndata_dir = "var"\n')
    code, _, err = run(
        capsys, "fleet", "publish", str(tmp_path / "1.5.0.pkg"), "--config", str(bare)
    )
    assert code == 1
    assert "[NO_TRUSTED_ROOT]" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[upgrades]\nnode_max_bytes_per_second = -1\n")
    code, _, err = run(capsys, "fleet", "status", "--config", str(bad))
    assert code == 2
    assert "bad.toml:2: [upgrades] node_max_bytes_per_second: must be >= 0" in err
    bad.write_text("[upgrades]\nhealth_gate = 3\n")
    code, _, err = run(capsys, "fleet", "status", "--config", str(bad))
    assert code == 2
    assert "bad.toml:2: [upgrades] health_gate: unknown setting" in err

"""``hplus cloud hospitals import|list`` and ``hplus cloud sync status``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cloud.config import SyncConfig
from cloud.readstore import ReadStore
from cloud.sync import DIRECTORY, SLOTS, SyncEngine
from cloud.sync.testing import FakeHospitals, SyntheticHospital
from tools.cli import main

REPO = Path(__file__).resolve().parents[3]


def test_import_list_and_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = REPO / "tools" / "demo_hospitals.toml"
    assert main(["cloud", "hospitals", "import", str(demo), "--data-dir", str(tmp_path)]) == 0
    assert "3 new, 0 replaced" in capsys.readouterr().out
    assert main(["cloud", "hospitals", "import", str(demo), "--data-dir", str(tmp_path)]) == 0
    assert "0 new, 3 replaced" in capsys.readouterr().out
    assert (
        main(["cloud", "hospitals", "list", "--data-dir", str(tmp_path), "--format", "json"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["hospital_id"]: r["name_initials"] for r in rows} == {
        "city-first": "bjsdyrmyy",
        "lakeside": "hpsqwsfwzx",
        "river-county": "chxrmyy",
    }

    async def sync_one() -> None:
        store = await ReadStore.open(f"sqlite+aiosqlite:///{tmp_path / 'readstore.db'}")
        try:
            source = FakeHospitals([SyntheticHospital("city-first", doctors=1, days=1)])
            engine = SyncEngine(store, source, config=SyncConfig(), node_id="n1")
            for kinds in (DIRECTORY, SLOTS):
                await engine.sync_kinds("city-first", kinds)
            await store.set_offline("lakeside", True)
        finally:
            await store.close()

    asyncio.run(sync_one())
    assert main(["cloud", "sync", "status", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "city-first  滨江市第一人民医院  [ok]" in out
    assert "slots        watermark e1:" in out
    assert "lakeside  湖畔社区卫生服务中心  [offline]" in out
    assert "river-county  长河县人民医院  [never synced]" in out
    args = ["cloud", "sync", "status", "--hospital", "city-first", "--format", "json"]
    assert main([*args, "--data-dir", str(tmp_path)]) == 0
    (status,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status["state"] == "ok"
    assert status["kinds"]["slots"]["failures"] == 0
    assert status["kinds"]["slots"]["watermark"].startswith("e1:")
    assert main(["cloud", "sync", "status", "--hospital", "nope", "--data-dir", str(tmp_path)]) == 1
    assert "no hospital 'nope'" in capsys.readouterr().err


def test_a_bad_file_is_one_line_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "h.toml"
    bad.write_text('[[hospital]]\nid = "a b"\nname = "x"\n', encoding="utf-8")
    assert main(["cloud", "hospitals", "import", str(bad), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{bad}:2: hospital[0].id: 'a b' is invalid" in err

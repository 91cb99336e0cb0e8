from __future__ import annotations

from pathlib import Path

import pytest

from frontend_server.app import EdgeApp, EdgeConfig


def test_an_edge_without_a_profile_needs_a_hospital_and_keeps_no_stores(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hospital_id: required without a profile"):
        EdgeConfig(profile=None)
    with pytest.raises(ValueError, match="keeps no stores"):
        EdgeConfig(profile=None, hospital_id="h-1", reset_stores=frozenset({"ledger"}))
    app = EdgeApp(EdgeConfig(profile=None, hospital_id="h-1"))
    assert app.server.services == ["hplus.hospital.v1.EdgeAdminService"]
    with pytest.raises(AttributeError, match="without a profile"):
        _ = app.ledger


async def test_an_edge_without_a_profile_starts_and_stops_without_a_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = EdgeApp(EdgeConfig(profile=None, hospital_id="h-1"))
    async with app:
        pass
    assert not any(tmp_path.iterdir())  # noqa: ASYNC240 (nothing was written anywhere)

"""``[edge_api]``, ``[health]``, ``[probes]`` and ``[reports]`` in the node's TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import NodeConfig
from cloud.edgeconfig import EdgeApiConfig, ReportsConfig, Thresholds
from mesh.config import ConfigError


def load(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return NodeConfig.load(path=path)


def test_defaults() -> None:
    config = NodeConfig()
    assert config.reports.result_ttl == 1800.0
    assert config.probes.interval == 300.0
    assert config.edge_api.max_results_per_call == 100
    assert config.health.thresholds("any") == Thresholds()
    assert config.reports_url.endswith("reports.db")


def test_the_tables_are_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[edge_api]
calls_per_minute = 30

[reports]
result_ttl = 600.0
database_url = "sqlite+aiosqlite:///elsewhere.db"

[health]
max_backlog = 50
history = 10

[health.hospitals.big]
max_backlog = 5000

[probes]
interval = 60.0
enabled = false

[probes.hospitals.h1]
patient_id = "P1"
""",
    )
    assert config.edge_api == EdgeApiConfig(calls_per_minute=30)
    assert config.reports == ReportsConfig(
        result_ttl=600.0, database_url="sqlite+aiosqlite:///elsewhere.db"
    )
    assert config.reports_url == "sqlite+aiosqlite:///elsewhere.db"
    assert config.health.history == 10
    assert config.health.thresholds("small").max_backlog == 50
    # An override changes only its keys; the rest come from [health].
    assert config.health.thresholds("big") == Thresholds(max_backlog=5000)
    assert not config.probes.enabled
    assert config.probes.interval == 60.0
    assert config.probes.hospitals["h1"].patient_id == "P1"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[reports]\nresult_ttl = 0.0\n", "node.toml:2: [reports] result_ttl: must be > 0"),
        ("[reports]\nresult_tll = 5.0\n", "node.toml:2: [reports] result_tll: unknown setting"),
        ("[health]\nmax_backlog = 'many'\n", "node.toml:2: [health] max_backlog"),
        (
            "[health.hospitals.h1]\nmax_oldest_age = -1.0\n",
            "[health.hospitals.h1] max_oldest_age: must be > 0",
        ),
        ("[probes.hospitals.h1]\npatient = 'P1'\n", "[probes.hospitals.h1] patient: unknown"),
        ("[edge_api]\nmax_results_per_call = 0\n", "node.toml:2: [edge_api] max_results_per_call"),
    ],
)
def test_errors_name_the_file_line_and_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert "node.toml" in str(err.value)
    assert where in str(err.value), str(err.value)

"""``[partitions]``, ``[accounts]`` and ``[databases] partitions``: defaults, file, environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import AccountsConfig, NodeConfig, parse_rate
from mesh.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_defaults_put_everything_under_the_data_dir(tmp_path: Path) -> None:
    cfg = NodeConfig.load(env={}, overrides={"data_dir": tmp_path})
    assert cfg.partitions_url == f"sqlite+aiosqlite:///{tmp_path / 'partitions.db'}"
    assert cfg.first_partition_urls == {
        "south": f"sqlite+aiosqlite:///{tmp_path / 'partitions' / 'south.db'}",
        "north": f"sqlite+aiosqlite:///{tmp_path / 'partitions' / 'north.db'}",
    }
    assert cfg.partition_map_poll == 0.5
    assert cfg.accounts == AccountsConfig()
    assert cfg.accounts.rate("codes_per_phone") == (5, 600.0)


def test_file_and_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[databases]\npartitions = "postgresql://db/control"\n'
        '[partitions]\nsouth = "postgresql://db/south"\nmap_poll = 0.2\n'
        '[accounts]\ncode_ttl = 60\ncodes_per_phone = "3/1m"\nmax_patients = 4\n',
    )
    cfg = NodeConfig.load(path=path, env={"HPLUS_NORTH_DATABASE_URL": "postgresql://db/north"})
    assert cfg.partitions_url == "postgresql://db/control"
    assert cfg.first_partition_urls["south"] == "postgresql://db/south"
    assert cfg.first_partition_urls["north"] == "postgresql://db/north"
    assert cfg.partition_map_poll == 0.2
    assert (cfg.accounts.code_ttl, cfg.accounts.max_patients) == (60.0, 4)
    assert cfg.accounts.rate("codes_per_phone") == (3, 60.0)
    env = NodeConfig.load(env={"HPLUS_PARTITIONS_DATABASE_URL": "postgresql://x/c"})
    assert env.partitions_url == "postgresql://x/c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[partitions]\neast = "x"\n', ":2: [partitions] east: unknown setting"),
        ("[partitions]\nmap_poll = 0\n", ":2: [partitions] map_poll: 0.0 is invalid"),
        ('[accounts]\ncode_ttl = "5m"\n', ":2: [accounts] code_ttl: expected float"),
        (
            '[accounts]\n\ncodes_per_phone = "lots"\n',
            ":3: [accounts] codes_per_phone: 'lots' is not",
        ),
        ("[accounts]\ncode_attempts = 0\n", ":2: [accounts] code_attempts: must be within [1, 20]"),
        ("[accounts]\ntoken_tll = 5\n", ":2: [accounts] token_tll: unknown setting"),
    ],
)
def test_bad_settings_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(path=path, env={})
    assert str(info.value).startswith(str(path) + expected), str(info.value)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("5/10m", (5, 600.0)), ("100/1s", (100, 1.0)), ("1/250ms", (1, 0.25)), ("2/h", (2, 3600.0))],
)
def test_rates(text: str, rate: tuple[int, float]) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "0/1s", "5", "5/0s", "five/1m", "5/1d", "-1/1s"])
def test_not_rates(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)

"""The read store's and the sync's configuration keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import NodeConfig, SyncConfig
from mesh.config import ConfigError


def test_defaults_and_file_and_environment(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path)
    assert config.readstore_url == f"sqlite+aiosqlite:///{tmp_path / 'readstore.db'}"
    assert config.readstore_replica_urls == ()
    assert config.sync == SyncConfig()
    path = tmp_path / "node.toml"
    path.write_text(
        '[databases]\nreadstore = "postgresql+asyncpg://db/public"\n'
        'readstore_replicas = ["postgresql+asyncpg://r1/public", "postgresql+asyncpg://r2/public"]\n'
        "[sync]\nconcurrency = 4\nslot_interval = 10\nenabled = false\nmax_replica_lag = 2.5\n",
        encoding="utf-8",
    )
    loaded = NodeConfig.load(path=path)
    assert loaded.readstore_url == "postgresql+asyncpg://db/public"
    assert len(loaded.readstore_replica_urls) == 2
    assert loaded.sync.concurrency == 4
    assert loaded.sync.slot_interval == 10.0
    assert not loaded.sync.enabled
    assert loaded.sync.max_replica_lag == 2.5
    env = {
        "HPLUS_READSTORE_DATABASE_URL": "postgresql+asyncpg://env/public",
        "HPLUS_READSTORE_REPLICA_URLS": "postgresql+asyncpg://a/p, postgresql+asyncpg://b/p",
    }
    from_env = NodeConfig.load(path=path, env=env)
    assert from_env.readstore_url == "postgresql+asyncpg://env/public"
    assert from_env.readstore_replica_urls == (
        "postgresql+asyncpg://a/p",
        "postgresql+asyncpg://b/p",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sync]\nconcurrency = 0\n", ":2: [sync] concurrency: must be within [1, 10000]"),
        ("[sync]\nslot_interval = -1\n", ":2: [sync] slot_interval: must be > 0"),
        ("[sync]\nbucket_count = 5000\n", ":2: [sync] bucket_count: must be within [1, 4096]"),
        ("[sync]\nintervall = 1\n", ":2: [sync] intervall: unknown setting"),
        ('[sync]\nenabled = "yes"\n', ":2: [sync] enabled: expected bool"),
        ("[databases]\nreadstore_replicas = [1]\n", ":2: [databases] readstore_replicas"),
    ],
)
def test_bad_sync_settings_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(path=path)
    assert message in str(info.value)

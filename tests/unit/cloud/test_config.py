from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import NodeConfig, TlsMode
from mesh.config import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_defaults_without_file() -> None:
    cfg = NodeConfig.load(env={})
    assert cfg.listen == "127.0.0.1:50051"
    assert cfg.tls_mode is TlsMode.DEV
    assert cfg.data_dir == Path("var")


def test_file_env_and_flags_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nlisten = "0.0.0.0:7000"\ndata_dir = "state"\nnode_id = "a"\n')
    cfg = NodeConfig.load(path=path, env={})
    assert (cfg.listen, cfg.node_id) == ("0.0.0.0:7000", "a")
    assert cfg.data_dir == tmp_path / "state"  # relative to the file, not the cwd
    cfg = NodeConfig.load(path=path, env={"HPLUS_NODE_ID": "b"})
    assert cfg.node_id == "b"
    cfg = NodeConfig.load(
        path=path, env={"HPLUS_NODE_ID": "b"}, overrides={"node_id": "c", "listen": None}
    )
    assert (cfg.node_id, cfg.listen) == ("c", "0.0.0.0:7000")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[node]\nlisten = "nope"\n', ":2: [node] listen: expected HOST:PORT, got 'nope'"),
        ("[node]\n\nlisten = 50051\n", ":3: [node] listen: expected str, got int 50051"),
        ('[node]\nlisten = "h:1"\nlisen = "x"\n', ":3: [node] lisen: unknown setting"),
        ('[tls]\nmode = "maybe"\n', ":2: [tls] mode: 'maybe' is not one of dev, files, off"),
        ('[tls]\nmode = "files"\ncert = "c.pem"\n', ":1: [tls] key: required when mode"),
        ("[node]\ngrace_seconds = -1\n", ":2: [node] grace_seconds: -1.0 is invalid"),
        ('[node]\nlisten = "a:1"\n[node\n', ":3: invalid TOML"),
        ('[redis]\nurl = "http://x"\n', ":2: [redis] url: 'http://x' is invalid: must start"),
        ('[databases]\nreports = "x"\n', ":2: [databases] reports: unknown setting"),
        ("[census]\nrate = 2\n", ":2: [census] rate: 2.0 is invalid: must be within [0, 1]"),
        ('[node]\ninternal_listen = "x"\n', ":2: [node] internal_listen: expected HOST:PORT"),
        (
            "[nodes]\n",
            ":1: nodes: unknown setting (known: census, databases, node, redis, sync, tls)",
        ),
    ],
)
def test_bad_file_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(path=path, env={})
    message = str(info.value)
    assert message.startswith(str(path) + expected), message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        NodeConfig.load(path=tmp_path / "missing.toml", env={})


def test_bad_flag_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="port must be a number from 0 to 65535"):
        NodeConfig.load(env={}, overrides={"listen": "localhost:99999"})


def test_secrets_come_from_the_environment_and_stay_out_of_repr(tmp_path: Path) -> None:
    cfg = NodeConfig.load(
        env={"HPLUS_CLUSTER_SECRET": "s3cret", "HPLUS_REDIS_URL": "redis://r:6379/0"}
    )
    assert cfg.cluster_secret == "s3cret"
    assert cfg.redis_url == "redis://r:6379/0"
    assert "s3cret" not in repr(cfg)


def test_fleet_database_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    cfg = NodeConfig.load(env={}, overrides={"data_dir": tmp_path})
    assert cfg.fleet_url == f"sqlite+aiosqlite:///{tmp_path / 'fleet.db'}"
    path = write(tmp_path, '[databases]\nfleet = "postgresql+asyncpg://u@h/db"\n')
    assert NodeConfig.load(path=path, env={}).fleet_url == "postgresql+asyncpg://u@h/db"

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
        ("[observability]\nmetric_listen = 1\n", ":2: [observability] metric_listen: unknown"),
        (
            '[observability]\nmetrics_listen = "0.0.0.0:9464"\n',
            ":2: [observability] metrics_listen: 0.0.0.0:9464 is not a loopback",
        ),
        ("[observability]\nmax_spans = 3\n", ":2: [observability] max_spans: must be >= 100"),
        ('[node]\ninternal_listen = "x"\n', ":2: [node] internal_listen: expected HOST:PORT"),
        (
            "[nodes]\n",
            ":1: nodes: unknown setting (known: accounts, census, dashboard, databases, edge_api, "
            "health, node, observability, orders, partitions, patient_api, payments, probes, "
            "reconcile, redis, reports, sync, tls, tunnel, upgrades)",
        ),
        ('[node]\nregistry_listen = "x"\n', ":2: [node] registry_listen: expected HOST:PORT"),
        ("[tunnel]\nping_intervall = 1\n", ":2: [tunnel] ping_intervall: unknown setting"),
        ('[tunnel]\nping_interval = "1s"\n', ":2: [tunnel] ping_interval: expected float"),
        (
            "[tunnel]\nmax_message_bytes = 4\n\nmax_buffered_bytes = 2\n",
            ":4: [tunnel] max_buffered_bytes: max_buffered_bytes must be >= max_message_bytes",
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


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.3.2.1:7000", "[::1]:7000", "localhost:1"])
def test_plaintext_on_loopback_is_allowed(listen: str) -> None:
    cfg = NodeConfig.load(env={}, overrides={"listen": listen, "tls_mode": TlsMode.OFF})
    assert cfg.tls_mode is TlsMode.OFF


@pytest.mark.parametrize(
    ("field", "address"),
    [
        ("listen", "0.0.0.0:50051"),
        ("listen", "[::]:50051"),
        ("listen", "10.1.2.3:50051"),
        ("listen", "node1.example.org:50051"),
        ("internal_listen", "0.0.0.0:50061"),
    ],
)
def test_plaintext_off_loopback_is_refused_from_flags(field: str, address: str) -> None:
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(env={}, overrides={field: address, "tls_mode": TlsMode.OFF})
    message = str(info.value)
    assert message == (
        f"tls mode 'off' is for loopback only, but {field} is {address}: plaintext may listen "
        "only on 127.0.0.0/8, ::1 or localhost (use tls mode 'dev' or 'files' on other "
        "addresses)"
    )


def test_plaintext_off_loopback_is_refused_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[node]\nlisten = "0.0.0.0:7000"\n[tls]\nmode = "off"\n')
    with pytest.raises(ConfigError, match=r"but listen is 0\.0\.0\.0:7000"):
        NodeConfig.load(path=path, env={})
    off = write(tmp_path, '[tls]\nmode = "off"\n')
    with pytest.raises(ConfigError, match=r"but internal_listen is 0\.0\.0\.0:1"):
        NodeConfig.load(path=off, env={"HPLUS_INTERNAL_LISTEN": "0.0.0.0:1"})
    # TLS on a public address is fine.
    assert NodeConfig.load(env={}, overrides={"listen": "0.0.0.0:7000"}).listen == "0.0.0.0:7000"


def test_tunnel_settings_from_file(tmp_path: Path) -> None:
    cfg = NodeConfig.load(env={})
    assert (
        cfg.max_tunnels_per_credential,
        cfg.liveness_probe_seconds,
        cfg.revocation_poll_seconds,
    ) == (4, 2.0, 1.0)
    path = write(
        tmp_path,
        "[tunnel]\nmax_per_credential = 2\nliveness_probe = 0.5\nrevocation_poll = 3\n",
    )
    cfg = NodeConfig.load(path=path, env={})
    assert (
        cfg.max_tunnels_per_credential,
        cfg.liveness_probe_seconds,
        cfg.revocation_poll_seconds,
    ) == (2, 0.5, 3.0)
    bad = write(tmp_path, "[tunnel]\n\nmax_per_credential = 0\n")
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(path=bad, env={})
    assert str(info.value) == f"{bad}:3: [tunnel] max_per_credential: 0 is invalid: must be >= 1"


def test_registry_listens_next_to_the_public_endpoint_unless_told(tmp_path: Path) -> None:
    assert NodeConfig.load(env={}).registry_address == "127.0.0.1:50052"
    assert NodeConfig(listen="0.0.0.0:0").registry_address == "0.0.0.0:0"
    assert NodeConfig(listen="[::1]:7000").registry_address == "[::1]:7001"
    cfg = NodeConfig.load(env={"HPLUS_REGISTRY_LISTEN": "10.0.0.1:9000"})
    assert cfg.registry_address == "10.0.0.1:9000"
    path = write(tmp_path, '[node]\nregistry_listen = "127.0.0.1:0"\n')
    assert NodeConfig.load(path=path, env={}).registry_address == "127.0.0.1:0"


def test_tunnel_limits_come_from_the_tunnel_table(tmp_path: Path) -> None:
    path = write(tmp_path, "[tunnel]\nping_interval = 0.5\nmax_concurrent_streams = 20\n")
    cfg = NodeConfig.load(path=path, env={})
    assert cfg.tunnel.ping_interval == 0.5
    assert cfg.tunnel.max_concurrent_streams == 20
    assert cfg.tunnel.initial_window_bytes == NodeConfig().tunnel.initial_window_bytes


def test_the_patient_api_section_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[patient_api]\nread_cache_seconds = 0\nread_cache_entries = 50\n")
    config = NodeConfig.load(path=path, env={})
    assert config.patient_api.read_cache_seconds == 0.0
    assert config.patient_api.read_cache_entries == 50
    assert NodeConfig.load(env={}).patient_api.read_cache_seconds == 2.0
    path.write_text("[patient_api]\n\nread_cache_entries = 0\n")
    with pytest.raises(ConfigError) as info:
        NodeConfig.load(path=path, env={})
    assert str(info.value).startswith(f"{path}:3: [patient_api] read_cache_entries: must be within")
    path.write_text('[patient_api]\nread_cache_seconds = "fast"\n')
    with pytest.raises(
        ConfigError, match=r":2: \[patient_api\] read_cache_seconds: expected float"
    ):
        NodeConfig.load(path=path, env={})

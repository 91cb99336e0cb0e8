"""``[orders]`` in the node's configuration: every field, checked with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import NodeConfig, OrdersConfig
from mesh.config import ConfigError


def test_orders_settings_load_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[orders]\nreview_after = 120\nconfirmations = 3\npayment_minutes = 10\n")
    config = NodeConfig.load(path=path, env={}, overrides={})
    assert config.orders == OrdersConfig(review_after=120.0, confirmations=3, payment_minutes=10)
    assert NodeConfig.load(path=None, env={}, overrides={}).orders == OrdersConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[orders]\nconfirmations = 0\n", "node.toml:2: [orders] confirmations: must be within"),
        ("[orders]\nreview_after = -1\n", "node.toml:2: [orders] review_after: must be > 0"),
        ("[orders]\nrefund_on_timeout = true\n", "node.toml:2: [orders]"),
        ("[orders]\nbackoff_initial = 5\nbackoff_max = 1\n", "backoff_max"),
    ],
)
def test_bad_orders_settings_are_refused_with_their_place(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        NodeConfig.load(path=path, env={}, overrides={})
    assert message in str(refused.value)

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cloud
import cloud.config
import cloud.node

REPO = Path(__file__).resolve().parents[3]


def test_cloud_public_surface_is_pinned() -> None:
    # The package root re-exports nothing: importing one part must not load the node.
    assert cloud.__all__ == []
    assert cloud.node.__all__ == ["CloudNode", "serve"]
    assert cloud.config.__all__ == [
        "AccountsConfig",
        "NodeConfig",
        "OrdersConfig",
        "PatientApiConfig",
        "PaymentsConfig",
        "ReconcileConfig",
        "SyncConfig",
        "TlsMode",
        "UpgradesConfig",
        "parse_listen",
        "parse_rate",
    ]


def _loaded_by(module: str) -> set[str]:
    """The modules a fresh interpreter holds after ``import module`` (and nothing else)."""
    code = f"import sys; import {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=REPO,
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("module", ["cloud.presence", "cloud.bearer", "cloud.config"])
def test_a_light_part_does_not_load_the_node(module: str) -> None:
    loaded = _loaded_by(module)
    # Before the package root was emptied, `import cloud.presence` loaded the whole node:
    # 79 of our modules, compat, SQLAlchemy and grpc (727 modules in all).
    heavy = {"cloud.node", "cloud.registry", "compat", "sqlalchemy", "grpc"}
    assert not heavy & loaded, sorted(heavy & loaded)
    ours = sorted(m for m in loaded if m.split(".")[0] in ("cloud", "mesh", "compat", "hplus"))
    # cloud.config reads its own tables plus two light ones (cloud.edgeconfig and
    # mesh.observability_config): nine modules, none of them heavy.
    assert len(ours) <= 9, ours

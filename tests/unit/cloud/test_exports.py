from __future__ import annotations

import cloud


def test_cloud_public_surface_is_pinned() -> None:
    assert cloud.__all__ == ["CloudNode", "NodeConfig", "TlsMode", "serve"]
    for name in cloud.__all__:
        assert getattr(cloud, name).__module__.startswith("cloud.")

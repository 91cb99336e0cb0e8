"""The production wiring of upgrades: a rollout on a real node reaches a real edge's agent.

A real node (EdgeService with the upgrade handlers, a package store trusting a root key, a
rollout) and a real edge (profile, HIS simulator, dialer, uplink, the agent in EdgeApp
because ``upgrade_roots`` is set). The edge fetches the manifest through its own uplink,
downloads and verifies the package, installs it into its idle slot (pip, a real wheel) and
asks for a switch; it runs without its supervisor, so the switch is refused with
``NOT_SUPERVISED`` and that outcome reaches the rollout — the package stays installed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from cloud.config import NodeConfig, UpgradesConfig
from cloud.node import CloudNode
from frontend_server.app import EdgeApp
from frontend_server.profile import load_profile
from frontend_server.slots import Slots
from mesh.packages import (
    build_package,
    certify_signing_key,
    generate_key,
    public_pem,
    sign_package,
)
from mesh.version import SOFTWARE_VERSION
from tests.integration.hospital_env import (
    FAST,
    edge_config,
    his_url,
    simulator,
    write_profile,
)
from tests.support.waiting import until
from tests.support.wheels import wheel


async def test_a_rollout_reaches_a_real_edge_which_installs_and_reports(tmp_path: Path) -> None:
    root, signing = generate_key(), generate_key()
    cert = certify_signing_key(root, signing.public_key(), valid_for=dt.timedelta(days=1))
    root_pub = tmp_path / "root.pub"
    root_pub.write_bytes(public_pem(root.public_key()))
    name, payload = wheel("edgeprobe", "50.0.0", {"edgeprobe.py": b"VERSION = '50.0.0'\n"})
    package = tmp_path / "edge-50.0.0.hpkg"
    package.write_bytes(
        sign_package(
            build_package(
                {name: payload},
                version="50.0.0",
                contract_release="1.2.0",
                profile_schema_version=1,
            ),
            signing,
            cert,
        )
    )
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=tmp_path / "cloud",
        node_id="n1",
        grace_seconds=1.0,
        upgrades=UpgradesConfig(trusted_roots=(root_pub,)),
    )
    async with simulator("db") as his, CloudNode(config, tunnel_config=FAST) as node:
        assert node.packages is not None
        assert node.upgrades is not None
        assert node.credentials is not None
        stored = await node.packages.publish(package)
        assert stored.version == "50.0.0"
        profile = load_profile(write_profile(tmp_path, "db", his_url(his)))
        hospital = profile.hospital_id
        rollout = await node.upgrades.rollouts.create(
            target_version="50.0.0", waves="100%", max_failures=0, hospitals=[hospital]
        )
        token = (await node.credentials.issue(hospital)).token
        data = tmp_path / "edge"
        edge = dataclasses.replace(
            edge_config(node, profile, token, data, his), upgrade_roots=(root_pub,)
        )
        async with EdgeApp(edge) as app:
            assert app.updater is not None
            updater = app.updater
            await until(lambda: ("FULL", "NOT_SUPERVISED") in updater.refusals, 120)

            async def reported() -> bool:
                statuses = await node.upgrades.rollouts.hospitals(rollout.rollout_id)  # type: ignore[union-attr]
                return any(s.reason == "NOT_SUPERVISED" for s in statuses)

            await until(reported, 60)
        slots = Slots(data, base_version=SOFTWARE_VERSION)
        assert slots.active().name == "base"
        assert slots.slot("a").version == "50.0.0"
        lib = slots.slot("a").lib
        assert lib is not None
        assert (lib / "edgeprobe.py").read_text() == "VERSION = '50.0.0'\n"
        assert slots.pending() is None

"""Edge packages, a fleet database and the upgrade service over TLS, for upgrade tests."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.config import UpgradesConfig
from cloud.fleet import CredentialStore, migrate_fleet
from cloud.upgrades import PackageStore, Rollouts, UpgradeHandlers, migrate_upgrades
from mesh.packages import (
    TrustRoot,
    build_package,
    certify_signing_key,
    generate_key,
    sign_package,
)
from mesh.tls import ensure_dev_pki, load_server_credentials
from tools.fleet_sim import BROKEN_MARKER, UpgradeService

CONTRACT = "1.2.0"


class Keys:
    """A root key, a signing key it certifies (valid now), and the trust of that root."""

    def __init__(self) -> None:
        self.root = generate_key()
        self.signing = generate_key()
        self.cert = certify_signing_key(
            self.root,
            self.signing.public_key(),
            valid_for=dt.timedelta(days=2),
            now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1),
        )
        self.trust = TrustRoot([self.root.public_key()])


def payload(version: str, *, size: int = 120_000, broken: bool = False) -> dict[str, bytes]:
    """Wheel-like files: a large body that changes a little from version to version."""
    rng = random.Random(7)
    body = bytearray(rng.getrandbits(8) for _ in range(size))
    change = random.Random(version)
    for _ in range(40):  # a few edits per release, as between two real builds
        at = change.randrange(size - 64)
        body[at : at + 32] = change.randbytes(32)
    files = {
        "hplus_edge.whl": bytes(body) + version.encode(),
        "deps/grpcio.whl": bytes(random.Random(3).getrandbits(8) for _ in range(30_000)),
    }
    if broken:
        files[BROKEN_MARKER] = b"this build crashes on start\n"
    return files


def package(
    keys: Keys, version: str, *, broken: bool = False, contract: str = CONTRACT, size: int = 120_000
) -> bytes:
    """A signed package of ``version``."""
    unsigned = build_package(
        payload(version, broken=broken, size=size),
        version=version,
        contract_release=contract,
        profile_schema_version=1,
        created_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    )
    return sign_package(unsigned, keys.signing, keys.cert)


@dataclasses.dataclass
class Cloud:
    """The cloud's upgrade side on a real TLS port."""

    engine: AsyncEngine
    credentials: CredentialStore
    store: PackageStore
    rollouts: Rollouts
    handlers: UpgradeHandlers
    service: UpgradeService
    channel: grpc.aio.Channel
    tokens: dict[str, str]
    keys: Keys
    root: Path

    async def publish(self, version: str, **kwargs: object) -> Path:
        """Build, sign and publish ``version``; returns the package file."""
        path = self.root / f"pkg-{version}.pkg"
        path.write_bytes(package(self.keys, version, **kwargs))  # type: ignore[arg-type]
        await self.store.publish(path)
        return path


@asynccontextmanager
async def upgrade_cloud(
    tmp: Path,
    hospitals: list[str],
    *,
    config: UpgradesConfig | None = None,
    keys: Keys | None = None,
    url: str | None = None,
) -> AsyncIterator[Cloud]:
    """A migrated fleet database with credentials, the store, handlers and the service."""
    keys = keys or Keys()
    engine = create_async_engine(url or f"sqlite+aiosqlite:///{tmp / 'fleet.db'}")
    await migrate_fleet(engine)
    await migrate_upgrades(engine)
    credentials = CredentialStore(engine)
    tokens = {h: (await credentials.issue(h)).token for h in hospitals}
    config = config or UpgradesConfig(node_max_bytes_per_second=0, check_interval=1.0)
    store = PackageStore(engine, tmp / "cloud" / "upgrades", trust=keys.trust, max_delta_bases=3)
    rollouts = Rollouts(engine)
    handlers = UpgradeHandlers(store, rollouts, config)
    tls = ensure_dev_pki(tmp / "tls")
    service = UpgradeService(handlers, credentials, load_server_credentials(tls))
    port = await service.start()
    channel = grpc.aio.secure_channel(
        f"localhost:{port}",
        grpc.ssl_channel_credentials(root_certificates=tls.ca_cert.read_bytes()),
    )
    try:
        yield Cloud(
            engine, credentials, store, rollouts, handlers, service, channel, tokens, keys, tmp
        )
    finally:
        await channel.close()
        await service.stop()
        await engine.dispose()

"""The fault set's platform: one node, three hospitals (REST, SOAP, database HIS), relays.

Everything is real and in one event loop: a cloud node over TLS whose rate buckets live in
the shared Redis (through a relay, under a namespace of its own), whose payment channel is
the WeChat-Pay-like simulator (``tools.pay_sim``, through a relay), and per hospital a HIS
simulator of its dialect, an edge (``EdgeApp``) whose tunnel to the node runs through a
relay, and — for the HTTP dialects — a relay between the edge and its HIS. An app key is
issued, one account signs in, and the patient API and account service are called over gRPC
exactly as an app calls them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.attribution._relay import Relay
from tools.scratchdb import DEFAULT_POSTGRES, postgres_databases

_PROFILES = Path(__file__).resolve().parents[2] / "frontend_server" / "profiles"
_EXAMPLES = {
    "rest": "city-first-hospital.toml",
    "soap": "river-county-hospital.toml",
    "db": "lakeside-clinic.toml",
}
SEED = 11
HIS_TIMEOUT_SECONDS = 1.0
"""The profiles' HIS connect/read/write timeouts (short, so slow and blackholed HIS cases
end quickly; the node's own deadlines stay above them)."""


def rid() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass
class Hospital:
    """One hospital of the platform."""

    dialect: str
    his: Any
    profile: Any
    token: str
    edge_dir: Path
    tunnel: Relay
    his_relay: Relay | None
    edge: Any = None
    patient: Any = None
    """A patient the HIS knows (``HisCore`` record)."""

    @property
    def hospital_id(self) -> str:
        return str(self.profile.hospital_id)


@dataclasses.dataclass
class Platform:
    """What the cases act on."""

    node: Any
    hospitals: dict[str, Hospital]
    redis: Relay
    postgres: Relay
    """The path to the node's control and partition databases."""
    pay: Any
    """The payment simulator (``PaySim``)."""
    pay_relay: Relay
    app_key: str
    token: str
    patient_stub: Any
    account_stub: Any
    ca: bytes
    _edge_config: Any = None

    def md(self, *, app_key: str | None = None, token: str | None = None) -> list[tuple[str, str]]:
        """Call metadata of the app (its key, the account's bearer token)."""
        out = [("x-hplus-app-key", self.app_key if app_key is None else app_key)]
        bearer = self.token if token is None else token
        if bearer:
            out.append(("authorization", f"Bearer {bearer}"))
        return out

    async def start_edge(self, h: Hospital) -> None:
        """Starts (or restarts) the hospital's edge and waits for its tunnel."""
        edge = self._edge_config(h)
        await edge.__aenter__()
        h.edge = edge
        assert edge.dialer is not None
        await asyncio.wait_for(edge.dialer.connected.wait(), 30)
        await self.wait_tunnel(h, up=True)

    async def stop_edge(self, h: Hospital) -> None:
        """Stops the edge as its operator does (it drains its tunnel)."""
        if h.edge is not None:
            edge, h.edge = h.edge, None
            await edge.__aexit__(None, None, None)
        await self.wait_tunnel(h, up=False)

    async def wait_tunnel(self, h: Hospital, *, up: bool, limit: float = 30.0) -> None:
        """Waits until the node has (or no longer has) a tunnel of ``h`` taking calls."""
        gateway = self.node.gateway
        async with asyncio.timeout(limit):
            # The gateway exposes no event for "a tunnel of this hospital is up".
            while any(s.accepting_calls for s in gateway.sessions(h.hospital_id)) != up:  # noqa: ASYNC110
                await asyncio.sleep(0.02)


def _write_profile(directory: Path, dialect: str, url: str) -> Path:
    path = directory / f"{dialect}-profile.toml"
    t = HIS_TIMEOUT_SECONDS
    path.write_text(
        f'extends = "{(_PROFILES / _EXAMPLES[dialect]).as_posix()}"\n\n'
        f'[[his.endpoints]]\nname = "sim"\nurl = "{url}"\n\n'
        f"[his.timeouts]\nconnect_seconds = {t}\nread_seconds = {t}\nwrite_seconds = {t}\n",
        encoding="utf-8",
    )
    return path


async def _sign_in(node: Any, stub: Any, app_key: str) -> str:
    from hplus.cloud.v1 import account_pb2

    md = [("x-hplus-app-key", app_key)]
    started = await stub.StartSignIn(
        account_pb2.StartSignInRequest(request_id=rid(), phone="+8613800138123"), metadata=md
    )
    lines = (node.config.data_dir / "sign-in-codes.log").read_text().splitlines()
    code = next(
        json.loads(x)["code"]
        for x in lines
        if json.loads(x)["challenge_id"] == started.challenge_id
    )
    done = await stub.CompleteSignIn(
        account_pb2.CompleteSignInRequest(
            request_id=rid(), challenge_id=started.challenge_id, code=code
        ),
        metadata=md,
    )
    return str(done.access_token)


@contextlib.asynccontextmanager
async def platform(
    root: Path,
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    postgres_url: str = DEFAULT_POSTGRES,
) -> AsyncIterator[Platform]:
    """Starts the whole platform; stops it on exit."""
    import grpc
    from redis.asyncio import Redis

    from cloud.accounts import Channel, Rate
    from cloud.config import NodeConfig, PaymentsConfig, SyncConfig
    from cloud.edgeconfig import ProbesConfig
    from cloud.node import CloudNode
    from frontend_server.app import EdgeApp, EdgeConfig
    from frontend_server.dialer import DialerConfig
    from frontend_server.profile import load_profile
    from hplus.cloud.v1 import account_pb2_grpc, patient_pb2_grpc
    from mesh.tunnel import TunnelConfig
    from tools.his_sim import DbHis, RestHis, SoapHis
    from tools.pay_sim import PaySim

    fast = TunnelConfig(ping_interval=2.0, handshake_timeout=5.0, drain_grace=1.0)
    redis_host, _, rest = redis_url.removeprefix("redis://").partition(":")
    redis_port = int(rest.split("/")[0] or 6379)
    namespace = f"attrbench-{uuid.uuid4().hex[:12]}:"
    async with contextlib.AsyncExitStack() as stack:
        redis = Relay(redis_host, redis_port)
        await redis.start()
        stack.push_async_callback(redis.close)
        # The node's control and partition databases on PostgreSQL, through a relay the
        # cloud-platform cases cut.
        pg = make_url(postgres_url)
        postgres = Relay(pg.host or "127.0.0.1", pg.port or 5432)
        await postgres.start()
        stack.push_async_callback(postgres.close)
        names = ("control", "south", "north")
        made = await stack.enter_async_context(
            postgres_databases(postgres_url, names, prefix="bench_attr")
        )
        relayed = {
            k: make_url(v)
            .set(host="127.0.0.1", port=postgres.port)
            .render_as_string(hide_password=False)
            for k, v in made.items()
        }
        sims = {
            "rest": RestHis(seed=SEED),
            "soap": SoapHis(seed=SEED),
            "db": DbHis(seed=SEED, poll_interval=0.005),
        }
        for sim in sims.values():
            await stack.enter_async_context(sim)
        pay = await stack.enter_async_context(PaySim(path=root / "pay.db"))
        pay_relay = Relay("127.0.0.1", pay.port)
        await pay_relay.start()
        stack.push_async_callback(pay_relay.close)
        merchant_key, platform_key = pay.write_keys(root / "pay-keys")
        config = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=root / "cloud",
            node_id="attr-n1",
            grace_seconds=1.0,
            redis_url=f"redis://127.0.0.1:{redis.port}/0",
            redis_namespace=namespace,
            partitions_database_url=relayed["control"],
            partition_urls={"south": relayed["south"], "north": relayed["north"]},
            sync=SyncConfig(enabled=False),
            probes=ProbesConfig(enabled=False),
            payments=PaymentsConfig(
                channel_url=f"http://127.0.0.1:{pay_relay.port}",
                merchant_id=pay.merchant_id,
                app_id=pay.app_id,
                merchant_key_file=merchant_key,
                platform_public_key_file=platform_key,
                notify_plaintext=True,
                # The channel client retries a lost answer for this long before the app's
                # PayOrder hears CHANNEL_UNAVAILABLE (10 s by default: shorter here).
                retry_deadline=2.0,
            ),
        )
        node = await stack.enter_async_context(CloudNode(config, tunnel_config=fast))
        assert node.credentials is not None
        assert node.tls is not None
        assert node.accounts is not None
        assert node.order_parts is not None
        ca = node.tls.ca_cert.read_bytes()
        hospitals: dict[str, Hospital] = {}
        for dialect, sim in sims.items():
            his_relay: Relay | None = None
            if isinstance(sim, DbHis):
                url = sim.db_url
            else:
                his_relay = Relay("127.0.0.1", sim.port)
                await his_relay.start()
                stack.push_async_callback(his_relay.close)
                url = sim.base_url.replace(f":{sim.port}", f":{his_relay.port}")
            profile = load_profile(_write_profile(root, dialect, url))
            token = (await node.credentials.issue(profile.hospital_id)).token
            assert node.port is not None
            tunnel = Relay("127.0.0.1", node.port)
            await tunnel.start()
            stack.push_async_callback(tunnel.close)
            hospitals[dialect] = Hospital(
                dialect, sim, profile, token, root / f"edge-{dialect}", tunnel, his_relay
            )

        def edge_of(h: Hospital) -> Any:
            overrides: dict[str, object] = {}
            if isinstance(h.his, DbHis):
                overrides = {
                    "table_prefix": h.his.prefix,
                    "db_poll_initial_seconds": 0.002,
                    "db_poll_max_seconds": 0.02,
                }
            return EdgeApp(
                EdgeConfig(
                    profile=h.profile,
                    data_dir=h.edge_dir,
                    dialer=DialerConfig(
                        gateways=(f"localhost:{h.tunnel.port}",),
                        hospital_id=h.hospital_id,
                        edge_id=f"attr-{h.dialect}",
                        credential=h.token,
                        ca_cert=ca,
                        backoff_initial=0.05,
                        backoff_max=0.2,
                        tunnel=fast,
                    ),
                    adapter_overrides=overrides,
                    resolve_interval_seconds=60.0,
                    grace_seconds=1.0,
                )
            )

        issued = await node.accounts.apps.issue("attr-bench", Channel.WEB, Rate(100000, 1.0))
        creds = grpc.ssl_channel_credentials(ca)
        channel = grpc.aio.secure_channel(f"localhost:{node.port}", creds)
        stack.push_async_callback(channel.close)
        account_stub = account_pb2_grpc.AccountServiceStub(channel)
        token = await _sign_in(node, account_stub, issued.key)
        plat = Platform(
            node=node,
            hospitals=hospitals,
            redis=redis,
            postgres=postgres,
            pay=pay,
            pay_relay=pay_relay,
            app_key=issued.key,
            token=token,
            patient_stub=patient_pb2_grpc.PatientApiServiceStub(channel),
            account_stub=account_stub,
            ca=ca,
            _edge_config=edge_of,
        )

        async def stop_edges() -> None:
            for h in hospitals.values():
                if h.edge is not None:
                    await plat.stop_edge(h)

        for h in hospitals.values():
            await plat.start_edge(h)
            with contextlib.suppress(Exception):
                await h.edge.refresher.refresh()
            h.patient = next(
                p
                for p in sorted(h.his.core.patients.values(), key=lambda p: p.patient_id)
                if p.id_type == "RESIDENT" and p.patient_id > "P00000003"
            )
        stack.push_async_callback(stop_edges)

        async def drop_keys() -> None:
            client = Redis.from_url(redis_url)
            try:
                keys = [k async for k in client.scan_iter(match=f"{namespace}*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()

        stack.push_async_callback(drop_keys)
        yield plat

"""The chaos run's world: real processes, their databases, and the levers that break them.

`World.open` launches `tools.demo`'s stack (a node, three HIS simulators, three edges, the
payment simulator) with the node's control and partition databases on PostgreSQL (made for
the run, dropped after it) and its presence and rate buckets on Redis (a key prefix of its
own, deleted after it). Every edge dials the node through a `tools.proxy.Proxy` and the
node reaches Redis through another: cutting one drops a tunnel, or Redis, while calls are
in flight. The node is restarted on the ports it had, so edges, apps and the payment
channel's notifications find it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tools.scratchdb import DEFAULT_POSTGRES, postgres_databases

DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
_DATABASES = ("control", "south", "north")


async def drop_postgres_connections(admin_url: str, databases: list[str]) -> int:
    """``pg_terminate_backend`` of every connection to ``databases``; how many were ended."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"
                ),
                {"names": databases},
            )
            return int(result.scalar_one())
    finally:
        await admin.dispose()


def _node_toml(urls: dict[str, str], redis_url: str, namespace: str) -> str:
    return (
        "\n# bench.chaos: the node's control database and partitions on PostgreSQL, presence\n"
        "# on Redis (through a proxy the run cuts).\n"
        f'[databases]\npartitions = "{urls["control"]}"\n\n'
        f'[partitions]\nsouth = "{urls["south"]}"\nnorth = "{urls["north"]}"\n\n'
        f'[redis]\nurl = "{redis_url}"\nnamespace = "{namespace}"\n\n'
        "[probes]\nenabled = false\n\n"
        "# An order without evidence waits for a person after 2 minutes (default 10): long\n"
        "# enough for every injected outage, short enough to settle within the run.\n"
        "[orders]\nreview_after = 120.0\n"
    )


@dataclasses.dataclass
class World:
    """The launched processes and the levers of the faults."""

    var: Path
    stack: Any
    """The `tools.demo.Stack`."""
    at: Any
    """Its `tools.demo.Addresses`."""
    tunnels: dict[str, Any]
    """Per hospital, the `tools.proxy.Proxy` its edge dials the node through."""
    redis: Any
    """The `tools.proxy.Proxy` the node reaches Redis through."""
    postgres_admin: str
    databases: dict[str, str]
    """control/south/north -> URL."""
    namespace: str
    app_key: str
    restarts: int = 0
    crashes: list[str] = dataclasses.field(default_factory=list)
    """Processes that exited without being killed by the run (each started again)."""
    _turn: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def logs(self) -> Path:
        """Where every process's log goes."""
        return self.var / "demo" / "logs"

    async def kill_node(self) -> None:
        """SIGKILL the node, then start it again on the same ports and wait for the tunnels."""
        async with self._turn:
            await self._restart_node()

    async def _restart_node(self) -> None:
        from tools.demo import HOSPITALS, Child, wait_tunnels

        await self.stack.node.kill()
        self.restarts += 1
        child = Child(f"cloud-node-{self.restarts}", "node", self.logs)
        await self.stack.start_node(child, self.stack.node_argv)
        await wait_tunnels(self.var, self.at.internal, {h.hospital_id for h in HOSPITALS})

    async def kill_edge(self, hospital_id: str) -> None:
        """SIGKILL a hospital's edge, then start it again (it dials the node again)."""
        async with self._turn:
            await self._restart_edge(hospital_id)

    async def _restart_edge(self, hospital_id: str) -> None:
        from tools.demo import Child, wait_tunnels

        await self.stack.edges[hospital_id].kill()
        self.restarts += 1
        child = Child(f"edge-{hospital_id}-{self.restarts}", "edge", self.logs)
        await self.stack.start_edge(hospital_id, child)
        await wait_tunnels(self.var, self.at.internal, {hospital_id})

    async def supervise(self) -> None:
        """As a service manager does: start again a node or edge that exited on its own.

        Each such exit is a finding (``crashes``), reported with its exit code and the
        last line of its log. Runs until cancelled.
        """
        while True:
            await asyncio.sleep(1.0)  # the processes are not ours to await while they run
            async with self._turn:
                node = self.stack.node
                if node.proc is not None and node.proc.returncode is not None:
                    self.crashes.append(f"node exited {node.proc.returncode}: {_last(node)}")
                    await self._restart_node()
                for hospital_id, edge in list(self.stack.edges.items()):
                    if edge.proc is not None and edge.proc.returncode is not None:
                        self.crashes.append(
                            f"edge {hospital_id} exited {edge.proc.returncode}: {_last(edge)}"
                        )
                        await self._restart_edge(hospital_id)

    async def drop_tunnel(self, hospital_id: str) -> None:
        """Close the edge's connections to the node (calls in flight fail), then reopen."""
        proxy = self.tunnels[hospital_id]
        await proxy.cut()
        await proxy.restore()

    async def cut_redis(self, seconds: float) -> None:
        """The node loses Redis (connections closed, new ones refused) for ``seconds``."""
        await self.redis.cut()
        try:
            await asyncio.sleep(seconds)  # an outage's length, not a synchronisation
        finally:
            await self.redis.restore()

    async def drop_postgres(self) -> int:
        """Terminate every connection the node holds to its databases."""
        from sqlalchemy.engine import make_url

        names = [str(make_url(u).database) for u in self.databases.values()]
        return await drop_postgres_connections(self.postgres_admin, names)


def _last(child: Any) -> str:
    lines = [x.strip() for x in child.lines if x.strip()]
    return lines[-1][:300] if lines else "(no output)"


@contextlib.asynccontextmanager
async def open_world(
    var: Path, *, postgres_url: str = DEFAULT_POSTGRES, redis_url: str = DEFAULT_REDIS
) -> AsyncIterator[World]:
    """Launch the stack under ``var``; stop it, drop its databases and Redis keys after."""
    from redis.asyncio import Redis

    from tools.demo import HOSPITALS, Child, Stack
    from tools.proxy import Proxy

    logs = var / "demo" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    namespace = f"hplus-chaos-{uuid.uuid4().hex[:10]}:"
    target = urllib.parse.urlsplit(redis_url)
    redis_proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await redis_proxy.start()
    proxied_redis = target._replace(netloc=f"127.0.0.1:{redis_proxy.port}").geturl()
    async with postgres_databases(postgres_url, _DATABASES, prefix="hplus_chaos") as urls:
        stack = Stack(
            var=var,
            node=Child("cloud-node", "node", logs),
            sims={h.hospital_id: Child(f"his-{h.hospital_id}", "sim", logs) for h in HOSPITALS},
            edges={h.hospital_id: Child(f"edge-{h.hospital_id}", "edge", logs) for h in HOSPITALS},
            pay=Child("pay-sim", "sim", logs),
            node_toml=_node_toml(urls, proxied_redis, namespace),
        )
        # The tunnels' proxies start before the node: their targets are set once it listens.
        tunnels = {h.hospital_id: Proxy("127.0.0.1", 0) for h in HOSPITALS}
        for hid, proxy in tunnels.items():
            await proxy.start()
            stack.gateways[hid] = f"localhost:{proxy.port}"
        try:
            at = await _launch(stack, tunnels)
            world = World(
                var=var,
                stack=stack,
                at=at,
                tunnels=tunnels,
                redis=redis_proxy,
                postgres_admin=postgres_url,
                databases=urls,
                namespace=namespace,
                app_key=(var / "demo" / "app.key").read_text().strip(),
            )
            yield world
        finally:
            await stack.stop(quiet=True)
            for proxy in tunnels.values():
                await proxy.close()
            await redis_proxy.close()
            client = Redis.from_url(redis_url)
            try:
                keys = [k async for k in client.scan_iter(match=f"{namespace}*", count=500)]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()


async def _launch(stack: Any, tunnels: dict[str, Any]) -> Any:
    """Start the stack with the node on ports it keeps across restarts."""

    async def aim() -> None:
        # Once the node listens, its public port is the tunnels' proxies' target.
        await stack.node.ready
        printed = "".join(stack.node.lines)
        public = re.search(r"hplus cloud node \S+ listening on 127\.0\.0\.1:(\d+)", printed)
        if public is None:
            raise RuntimeError(f"the cloud node printed no address; see {stack.node.log}")
        for proxy in tunnels.values():
            proxy.target = ("127.0.0.1", int(public.group(1)))

    aiming = asyncio.ensure_future(aim())
    try:
        at = await stack.launch("127.0.0.1:0", "127.0.0.1:0", None, None)
    finally:
        aiming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await aiming
    # A restart takes the same ports: the edges' proxies, the apps' channel and the
    # channel's notification URL stay valid.
    argv = list(stack.node_argv)
    for flag, address in (
        ("--listen", at.public),
        ("--internal-listen", at.internal),
    ):
        argv[argv.index(flag) + 1] = address
    argv += ["--registry-listen", at.registry]
    stack.node_argv = argv
    if at.notify:
        port = re.search(r":(\d+)/", at.notify)
        if port is not None:
            _pin_notify(Path(argv[argv.index("--config") + 1]), port.group(1))
    return at


def _pin_notify(config: Path, port: str) -> None:
    """The node's notification endpoint keeps its port across restarts."""
    text = config.read_text(encoding="utf-8")
    pinned = f'notify_listen = "127.0.0.1:{port}"'
    config.write_text(text.replace('notify_listen = "127.0.0.1:0"', pinned), encoding="utf-8")

"""Arenas for the attacks: real processes to attack, a well-behaved hospital to watch.

`NodeArena`: a cloud node process (``hplus cloud run``, dev TLS) with a well-behaved edge
process (``hplus edge run``) connected to it; attacks come from hostile edges
(``python -m tools.hostile ATTACK --target``). `EdgeArena`: a real edge process that dials two
gateways, a hostile one (``python -m tools.hostile ATTACK --listen``) and a well-behaved
in-process `TunnelGateway`. `Arena.measure` runs one attack and reports what the issue asks
to watch: the target's peak RSS above its baseline (``VmRSS`` of ``/proc/PID/status``), the
well-behaved hospital's latency before and during the attack, and how the offender was closed.

The hostile-peer tests and ``bench.hostile`` both run attacks through these classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc
from hplus.tunnel.v1 import tunnel_pb2_grpc
from mesh.retry import RetryPolicy
from mesh.tls import TlsFiles, ensure_dev_pki, load_server_credentials
from mesh.tunnel import TunnelConfig, TunnelGateway, bearer_token
from tools.hostile._attacks import ATTACKS

__all__ = ["EdgeArena", "Measurement", "NodeArena", "rss_kib"]

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
GOOD = "good-hospital"
BAD = "hostile-hospital"
_ADMIN = "/hplus.hospital.v1.EdgeAdminService/GetEdgeInfo"
_OFFENCE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING mesh\.tunnel: .*? "
    r"with (?P<code>[A-Z_]+): "
)


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS``), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return env


@dataclasses.dataclass
class Measurement:
    """One attack, measured."""

    attack: str
    target: str
    """``node`` or ``edge``."""
    result: dict[str, Any]
    """The attacker's `AttackResult` (as JSON)."""
    rss_baseline_kib: int
    rss_peak_kib: int
    good_before_ms: list[float]
    """Latencies of the well-behaved hospital's calls before the attack."""
    good_during_ms: list[float]
    good_failures: list[str]
    """Calls of the well-behaved hospital that failed during the attack (code: details)."""
    target_calls: list[str] = dataclasses.field(default_factory=list)
    """How the node's calls to the hostile hospital ended (status code names)."""
    target_log: str = ""
    """What the target process logged during the attack."""
    go_at: float = 0.0
    """Wall-clock time the attack was let go."""

    @property
    def offences(self) -> list[tuple[float, str, str]]:
        """The tunnel's lines about this offender in the target's log: ``(time, code, line)``.

        The target logs one line per offence (kind) and tunnel, naming the status.
        """
        found = []
        for line in self.target_log.splitlines():
            match = _OFFENCE.search(line)
            if match is None:
                continue
            stamp = dt.datetime.strptime(match.group("time"), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, match.group("code"), line))
        return found

    @property
    def tunnel_offence(self) -> tuple[float, str, str] | None:
        """The target's line that closed the offender's tunnel (or refused its hello)."""
        for offence in self.offences:
            if "closing the tunnel" in offence[2] or "refused a hello" in offence[2]:
                return offence
        return None

    @property
    def close_seconds(self) -> float | None:
        """Seconds from the start of the attack to the target's line closing the tunnel.

        When the target did not log that (gRPC refused the message first, or only streams
        were refused), the attacker's view of the end.
        """
        offence = self.tunnel_offence
        if offence is not None:
            return round(max(offence[0] - self.go_at, 0.0), 3)
        seconds = self.result.get("seconds_to_close")
        return float(seconds) if seconds is not None else None

    @property
    def code(self) -> str:
        """The status the offender got.

        The one the target closed the tunnel with (from its log, else the attacker's view),
        or, when the tunnel stayed up, the one it refused streams with.
        """
        offence = self.tunnel_offence
        if offence is not None:
            return offence[1]
        if self.result.get("closed"):
            return str(self.result.get("code", ""))
        return self.offences[0][1] if self.offences else ""

    @property
    def rss_growth_mib(self) -> float:
        """Peak RSS above the baseline, MiB."""
        return (self.rss_peak_kib - self.rss_baseline_kib) / 1024

    @staticmethod
    def percentile(values: Sequence[float], q: float) -> float:
        """The ``q`` quantile (0..1) of ``values`` (nan when empty)."""
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(int(len(ordered) * q), len(ordered) - 1)]

    def summary(self) -> dict[str, Any]:
        """The figures the benchmark prints."""
        p = self.percentile
        return {
            "attack": self.attack,
            "target": self.target,
            "code": self.code,
            "closed": self.result.get("closed", False),
            "seconds_to_close": self.close_seconds,
            "log_lines": len(self.offences),
            "rss_growth_mib": round(self.rss_growth_mib, 1),
            "good_p50_before_ms": round(statistics.median(self.good_before_ms), 2)
            if self.good_before_ms
            else None,
            "good_p99_before_ms": round(p(self.good_before_ms, 0.99), 2),
            "good_p50_during_ms": round(statistics.median(self.good_during_ms), 2)
            if self.good_during_ms
            else None,
            "good_p99_during_ms": round(p(self.good_during_ms, 0.99), 2),
            "good_failures": len(self.good_failures),
            "notes": self.result.get("notes", {}),
        }


class _Process:
    """A child process whose stdout lines are read as they come and stderr goes to a file."""

    def __init__(self, name: str, log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def start(self, *argv: str, stdin: bool = False) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=REPO,
                env=_env(),
            )
        self._pump = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.put_nowait(line.decode(errors="replace"))
        self.lines.put_nowait("")

    async def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:  # noqa: ASYNC109
        """Waits for a stdout line matching ``pattern``."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if not line:
                    raise RuntimeError(f"{self.name} exited; see {self.log}")
                match = re.search(pattern, line)
                if match is not None:
                    return match

    async def event(self, name: str, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Waits for the hostile tool's JSON event ``name`` (or its final result)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if not line:
                    raise RuntimeError(f"{self.name} exited; see {self.log}")
                with contextlib.suppress(json.JSONDecodeError):
                    event = json.loads(line)
                    if event.get("event") == name or (name == "result" and "attack" in event):
                        return dict(event)

    def say(self, text: str) -> None:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await asyncio.gather(self._pump, return_exceptions=True)


class _Watch:
    """Samples the target's RSS and calls the well-behaved hospital while it runs."""

    def __init__(self, pid: int, call: Any) -> None:
        self._pid = pid
        self._call = call
        self.peak = 0
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.enough = asyncio.Event()
        """Set once ten calls were made while watching (short attacks still get a sample)."""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Watch:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sample()), loop.create_task(self._probe())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self._pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.01)

    async def _probe(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                await self._call()
                self.latencies.append((time.perf_counter() - started) * 1000)
            except grpc.aio.AioRpcError as err:
                self.failures.append(f"{err.code().name}: {err.details()}")
            if len(self.latencies) + len(self.failures) >= 10:
                self.enough.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)


async def _baseline(pid: int, call: Any, calls: int = 20) -> tuple[int, list[float]]:
    """The target's RSS (median of samples) and the good hospital's latency, at rest."""
    samples = []
    latencies = []
    for _ in range(calls):
        samples.append(rss_kib(pid))
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    return int(statistics.median(samples)), latencies


class NodeArena:
    """A cloud node process and a well-behaved edge process, in ``directory``.

    Args:
        directory: Data directory of the node, logs, credentials (a fresh one).
        tunnel: ``[tunnel]`` settings of the node (short ping interval by default, so a peer
            that does not read is found out in seconds).
    """

    def __init__(self, directory: Path, *, tunnel: dict[str, float] | None = None) -> None:
        self.dir = directory
        self.tunnel = {"ping_interval": 0.5, **(tunnel or {})}
        self.node = _Process("node", directory / "logs")
        self.good_edge = _Process("good-edge", directory / "logs")
        self.port = 0
        self.internal_port = 0
        self._channel: grpc.aio.Channel | None = None
        self._secret = ""
        self.ca = directory / "tls" / "ca.pem"

    async def __aenter__(self) -> NodeArena:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "node.toml"
        settings = "\n".join(f"{k} = {v}" for k, v in self.tunnel.items())
        config.write_text(f"[tunnel]\n{settings}\n")
        cli = [PYTHON, "-m", "tools.cli"]
        await self.node.start(
            *cli, "cloud", "run", "--config", str(config), "--data-dir", str(self.dir),
            "--listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0",
            "--node-id", "arena",
        )  # fmt: skip
        self.port = int((await self.node.expect(r"listening on 127\.0\.0\.1:(\d+)")).group(1))
        self.internal_port = int(
            (await self.node.expect(r"internal endpoint: 127\.0\.0\.1:(\d+)")).group(1)
        )
        await asyncio.gather(*(self._issue(h) for h in (GOOD, BAD)))
        await self.good_edge.start(
            *cli, "edge", "run", "--cloud", f"localhost:{self.port}", "--hospital", GOOD,
            "--credential", str(self.dir / f"{GOOD}.cred"), "--ca", str(self.ca),
            "--edge-id", "good-edge",
        )  # fmt: skip
        self._secret = (self.dir / "cluster-secret").read_text().strip()
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        self._channel = grpc.aio.secure_channel(f"localhost:{self.internal_port}", creds)
        async with asyncio.timeout(60):
            while True:  # the edge connects on its own time
                try:
                    await self.call_good()
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()
        await self.good_edge.stop()
        await self.node.stop()

    async def _issue(self, hospital: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "tools.cli", "cloud", "credentials", "issue", hospital,
            "--data-dir", str(self.dir), "--out", str(self.dir / f"{hospital}.cred"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            cwd=REPO, env=_env(),
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"cannot issue a credential: {err.decode()}")

    def _call(self, hospital: str, payload: bytes, timeout: float) -> Any:
        # Imported here: the cloud package is heavy, and the attack tool itself needs none of it.
        from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY

        assert self._channel is not None
        method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(_ADMIN)
        metadata = ((ROUTE_KEY, hospital), (INTERNAL_AUTH_KEY, self._secret))
        return method(payload, metadata=metadata, timeout=timeout)

    async def call_good(self) -> None:
        """One call of the well-behaved hospital, through the node."""
        await self._call(GOOD, b"", 5.0)

    async def _calls_to_bad(self, count: int, size: int, timeout: float) -> list[str]:  # noqa: ASYNC109
        # The hostile edge says "connected" once its handshake is answered; the node may
        # route to that tunnel a moment later. A call that finds the hospital not connected
        # yet is made again (until its deadline), so the attack meets the call it waits
        # for; any other failure (the attacked tunnel closed) is the call's result.
        policy = RetryPolicy(initial=0.05, maximum=0.5, deadline=timeout)

        def not_yet(err: BaseException) -> bool:
            return (
                isinstance(err, grpc.aio.AioRpcError)
                and err.code() == grpc.StatusCode.UNAVAILABLE
                and "is not connected" in (err.details() or "")
            )

        async def call() -> None:
            await self._call(BAD, b"\x00" * size, timeout)

        async def one() -> str:
            try:
                await policy.retrying(retry_on=not_yet)(call)
                return "OK"
            except grpc.aio.AioRpcError as err:
                return err.code().name

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def measure(
        self, attack_name: str, *, seconds: float = 5.0, close_within: float = 15.0
    ) -> Measurement:
        """Runs one attack from a hostile edge process and measures it.

        Args:
            attack_name: A key of `ATTACKS`.
            seconds: How long the attack may run (and the deadline of the node's calls).
            close_within: How long the attacker waits for the node to end its tunnel.
        """
        attack = ATTACKS[attack_name]
        hostile = _Process(f"hostile-{attack_name}", self.dir / "logs")
        log_start = self.node.log_size()
        rss, before = await _baseline(self.node.pid, self.call_good)
        await hostile.start(
            PYTHON, "-m", "tools.hostile", attack_name, "--target", f"localhost:{self.port}",
            "--credential", str(self.dir / f"{BAD}.cred"), "--ca", str(self.ca),
            "--hospital", BAD, "--seconds", str(seconds), "--close-within", str(close_within),
            "--wait-go",
            stdin=True,
        )  # fmt: skip
        calls: list[str] = []
        try:
            await hostile.event("connected", 30)
            async with _Watch(self.node.pid, self.call_good) as watch:
                go_at = time.time()
                hostile.say("go")
                if attack.calls:
                    await hostile.event("attacking", 30)
                    calls = await self._calls_to_bad(attack.calls, attack.call_bytes, seconds)
                result = await hostile.event("result", seconds + 60)
                await asyncio.wait_for(watch.enough.wait(), 30)
        finally:
            await hostile.stop()
        return Measurement(
            attack=attack_name,
            target="node",
            result=result,
            rss_baseline_kib=rss,
            rss_peak_kib=max(watch.peak, rss),
            good_before_ms=before,
            good_during_ms=watch.latencies,
            good_failures=watch.failures,
            target_calls=calls,
            target_log=self.node.log_since(log_start),
            go_at=go_at,
        )


class EdgeArena:
    """A real edge process per attack, dialling a hostile gateway and a well-behaved one.

    Args:
        directory: TLS material, logs, the edge's data (a fresh one).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.tls: TlsFiles | None = None
        self.gateway = TunnelGateway(
            authenticate=lambda md: GOOD if bearer_token(md) == "good-token" else None,
            node_id="good-gateway",
            config=TunnelConfig(ping_interval=0.5),
        )
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> EdgeArena:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = await asyncio.to_thread(ensure_dev_pki, self.dir / "tls")
        (self.dir / "edge.cred").write_text("good-token\n")
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(self.gateway, server)
        self.port = server.add_secure_port("127.0.0.1:0", load_server_credentials(self.tls))
        await server.start()
        self._server = server
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.gateway.shutdown(0.5)
        if self._server is not None:
            await self._server.stop(None)

    @contextlib.asynccontextmanager
    async def edge(self, hostile_port: int, *, both: bool = True) -> AsyncIterator[_Process]:
        """An edge process dialling the hostile gateway first (and the good one, ``both``)."""
        assert self.tls is not None
        edge = _Process(f"edge-{hostile_port}", self.dir / "logs")
        clouds = ["--cloud", f"localhost:{hostile_port}"]
        if both:
            clouds += ["--cloud", f"localhost:{self.port}"]
        await edge.start(
            PYTHON, "-m", "tools.cli", "edge", "run", *clouds, "--hospital", GOOD,
            "--credential", str(self.dir / "edge.cred"), "--ca", str(self.tls.ca_cert),
            "--edge-id", f"arena-edge-{hostile_port}",
        )  # fmt: skip
        try:
            yield edge
        finally:
            await edge.stop()

    async def call_good(self) -> None:
        """One call of the edge through the well-behaved gateway."""
        stub = admin_pb2_grpc.EdgeAdminServiceStub(self.gateway.channel(GOOD))
        await stub.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=5)

    async def _hostile(
        self, attack_name: str, seconds: float, extra: Sequence[str], close_within: float = 15.0
    ) -> _Process:
        assert self.tls is not None
        hostile = _Process(f"hostile-gw-{attack_name}", self.dir / "logs")
        await hostile.start(
            PYTHON, "-m", "tools.hostile", attack_name, "--listen", "127.0.0.1:0",
            "--tls-dir", str(self.tls.ca_cert.parent), "--seconds", str(seconds),
            "--close-within", str(close_within), "--wait-go", *extra,
            stdin=True,
        )  # fmt: skip
        return hostile

    async def measure(
        self, attack_name: str, *, seconds: float = 5.0, close_within: float = 15.0
    ) -> Measurement:
        """Runs one attack from a hostile gateway against a fresh edge process.

        Args:
            attack_name: A key of `ATTACKS`.
            seconds: How long the attack may run.
            close_within: How long the attacker waits for the edge to end its tunnel.
        """
        hostile = await self._hostile(attack_name, seconds, (), close_within)
        try:
            port = int((await hostile.event("listening", 30))["port"])
            async with self.edge(port) as edge:
                await hostile.event("connected", 60)
                await asyncio.wait_for(self.gateway.wait_for_hospital(GOOD), 60)
                log_start = edge.log_size()
                rss, before = await _baseline(edge.pid, self.call_good)
                async with _Watch(edge.pid, self.call_good) as watch:
                    go_at = time.time()
                    hostile.say("go")
                    result = await hostile.event("result", seconds + 60)
                    await asyncio.wait_for(watch.enough.wait(), 30)
                log = edge.log_since(log_start)
        finally:
            await hostile.stop()
        return Measurement(
            attack=attack_name,
            target="edge",
            result=result,
            rss_baseline_kib=rss,
            rss_peak_kib=max(watch.peak, rss),
            good_before_ms=before,
            good_during_ms=watch.latencies,
            good_failures=watch.failures,
            target_log=log,
            go_at=go_at,
        )

    async def drain_storm(self, *, seconds: float, reconnect_after: float = 0.0) -> dict[str, Any]:
        """Runs the drain storm against an edge that has only the hostile gateway."""
        extra = ["--reconnect-after", str(reconnect_after)] if reconnect_after else []
        hostile = await self._hostile("drain-storm", seconds, extra)
        try:
            port = int((await hostile.event("listening", 30))["port"])
            async with self.edge(port, both=False):
                return await hostile.event("result", seconds + 60)
        finally:
            await hostile.stop()

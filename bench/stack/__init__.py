"""A real node and a fleet of simulated hospitals as separate processes, for benchmarks.

`Stack` starts ``hplus cloud run`` (dev TLS, its state in a temporary directory, an
optional TOML config) after importing the fleet's hospital master data, then
``python -m tools.fleet_sim`` with N edges dialing it (credentials issued through the
node's fleet database), and issues an app key. Both children's output is read
continuously; `Stack.close` stops the fleet, then the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tools.fleet_sim import fleet_hospitals, write_hospitals_toml

__all__ = ["Child", "Stack", "cpu_seconds", "rss_mib"]

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def rss_mib(pid: int) -> float:
    """A process's resident set size in MiB (0 where /proc is missing)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used, in seconds (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A child process whose output is kept and searched."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._pump: asyncio.Task[None] | None = None
        self._ended = False

    async def start(self, *argv: str) -> None:
        """Starts ``python argv…`` in the repository."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=REPO, env=_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._pump = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()
        async with self._changed:
            self._ended = True
            self._changed.notify_all()

    async def expect(self, pattern: str, limit: float) -> re.Match[str]:
        """The first line (of all so far) matching ``pattern``."""
        async with asyncio.timeout(limit), self._changed:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    found = re.search(pattern, line)
                    if found:
                        return found
                seen = len(self.lines)
                if self._ended:
                    tail = "\n".join(self.lines[-15:])
                    raise RuntimeError(f"{self.name} ended before {pattern!r}:\n{tail}")
                await self._changed.wait()

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    async def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            await self._pump


async def _cli(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.cli", *argv, cwd=REPO, env=_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"hplus {' '.join(argv)}: {err.decode(errors='replace')}")
    return out.decode()


@dataclass
class Stack:
    """A node and a fleet (see the module docstring).

    Args:
        hospitals: edges in the fleet.
        node_toml: the node's config file content ("" for none).
        fleet_args: further ``tools.fleet_sim`` flags (shape, change rate).
    """

    hospitals: int
    node_toml: str = ""
    fleet_args: tuple[str, ...] = ()
    seed: int = 1
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hplus-bench-")))
    node: Child = field(default_factory=lambda: Child("node"))
    fleet: Child = field(default_factory=lambda: Child("fleet"))
    port: int = 0
    internal: str = ""
    app_key: str = ""
    fleet_ready_s: float = 0.0
    fleet_started: float = 0.0
    """``time.perf_counter()`` when the fleet process was started (edges begin to dial)."""

    @property
    def hospital_ids(self) -> list[str]:
        """The fleet's hospital ids."""
        return [h.hospital_id for h in fleet_hospitals(self.hospitals, seed=self.seed)]

    @property
    def secret(self) -> str:
        """The cluster secret (the internal endpoint's credential)."""
        return (self.data_dir / "cluster-secret").read_text().strip()

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS credentials trusting the node's dev CA."""
        ca = (self.data_dir / "tls" / "ca.pem").read_bytes()
        return grpc.ssl_channel_credentials(root_certificates=ca)

    def _config_flags(self) -> list[str]:
        if not self.node_toml:
            return ["--data-dir", str(self.data_dir)]
        path = self.data_dir / "node.toml"
        return ["--config", str(path), "--data-dir", str(self.data_dir)]

    async def start(self) -> None:
        """Node first (hospitals imported before it), then the fleet; returns when dialed."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.node_toml:
            (self.data_dir / "node.toml").write_text(self.node_toml)
        toml = self.data_dir / "hospitals.toml"
        write_hospitals_toml(toml, fleet_hospitals(self.hospitals, seed=self.seed), seed=self.seed)
        await _cli("cloud", "hospitals", "import", str(toml), *self._config_flags())
        await self.node.start(
            "-m", "tools.cli", "cloud", "run", *self._config_flags(),
            "--listen", "127.0.0.1:0", "--internal-listen", "127.0.0.1:0", "--node-id", "bench",
        )  # fmt: skip
        self.port = int(
            (
                await self.node.expect(
                    r"hplus cloud node \S+ listening on 127\.0\.0\.1:(\d+) \(", 120
                )
            )[1]
        )
        self.internal = (await self.node.expect(r"internal endpoint: (\S+)", 30))[1]
        key = self.data_dir / "bench-app.key"
        await _cli(
            "cloud", "apps", "issue", "bench", "--channel", "web", "--rate", "1000000/1s",
            "--out", str(key), *self._config_flags(),
        )  # fmt: skip
        self.app_key = key.read_text().strip()
        node_flags = ["--node-data-dir", str(self.data_dir)]
        if self.node_toml:
            node_flags += ["--node-config", str(self.data_dir / "node.toml")]
        self.fleet_started = time.perf_counter()
        await self.fleet.start(
            "-m", "tools.fleet_sim", "--hospitals", str(self.hospitals),
            "--cloud", f"localhost:{self.port}", "--seed", str(self.seed), *node_flags,
            *self.fleet_args,
        )  # fmt: skip
        ready = await self.fleet.expect(
            r"ready: (\d+) of (\d+) edges connected .* in ([\d.]+) s", 900
        )
        if ready[1] != ready[2]:
            tail = "\n".join(self.fleet.lines[-10:] + self.node.lines[-10:])
            raise RuntimeError(f"only {ready[1]} of {ready[2]} edges connected:\n{tail}")
        self.fleet_ready_s = float(ready[3])

    async def close(self) -> None:
        """Stops the fleet, then the node (state directory removed)."""
        await self.fleet.stop()
        await self.node.stop()
        import shutil

        shutil.rmtree(self.data_dir, ignore_errors=True)

"""``make run``: a cloud node and three simulated hospitals whose edges dial out to it.

Starts, as child processes of this launcher:

1. a cloud node (``hplus cloud run``) with its state under ``VAR`` (SQLite, dev TLS);
2. three HIS simulators, one per dialect (REST, SOAP, database on a SQLite file);
3. a credential per hospital, and three front-end servers (``hplus edge run --profile``)
   whose profiles extend the examples in ``frontend_server/profiles`` and only point the
   HIS endpoint at the simulator (generated under ``VAR/demo/profiles``);
4. an app key for signing in by hand (``VAR/demo/app.key``, mode 0600);
5. the payment channel simulator (``tools.pay_sim``, state in ``VAR/demo/pay_sim.db``), which
   the node takes as its payment channel through ``VAR/demo/node.toml`` (``[payments]``).

It prints where to look and example ``hplus cloud call`` lines, then stays up until
SIGINT (Ctrl-C) or SIGTERM, and stops the edges, the simulators and the node in that
order. Run ``python -m tools.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["HOSPITALS", "Addresses", "Child", "DemoHospital", "Stack", "main", "wait_tunnels"]

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "frontend_server" / "profiles"
DEMO_HOSPITALS = REPO / "tools" / "demo_hospitals.toml"
"""Public master data of the three hospitals (names patients search for), imported at start."""
PYTHON = sys.executable
HPLUS = (PYTHON, "-m", "tools.cli")


@dataclasses.dataclass(frozen=True)
class DemoHospital:
    """One simulated hospital of the demo."""

    hospital_id: str
    """Its id (as in its example profile)."""
    dialect: str
    """The simulator's dialect."""
    profile: str
    """The example profile it extends."""
    seed: int
    """The simulator's data seed."""


HOSPITALS = (
    DemoHospital("city-first", "rest", "city-first-hospital.toml", 1),
    DemoHospital("river-county", "soap", "river-county-hospital.toml", 2),
    DemoHospital("lakeside", "db", "lakeside-clinic.toml", 3),
)
"""The three hospitals, one per dialect."""

_READY = {
    "node": re.compile(r"registry endpoint: (\S+)"),
    "sim": re.compile(r"ready at (\S+)"),
    "edge": re.compile(r"dialing "),
}
_STARTUP_SECONDS = 60.0


class Child:
    """A child process whose output goes to a log file; knows when it said it is ready.

    Args:
        name: short name for messages and the log file.
        kind: ``node``, ``sim`` or ``edge`` (which ready line to wait for).
        logs: directory of the log files.
    """

    def __init__(self, name: str, kind: str, logs: Path) -> None:
        self.name = name
        self.kind = kind
        self.log = logs / f"{name}.log"
        self.lines: list[str] = []
        self.ready: asyncio.Future[re.Match[str]] = asyncio.get_running_loop().create_future()
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self, *argv: str) -> None:
        """Starts the process in its own session (Ctrl-C reaches only the launcher)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "gen"), str(REPO)])
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = asyncio.create_task(self._copy(), name=f"demo-log-{self.name}")

    async def _copy(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        pattern = _READY[self.kind]
        with self.log.open("w", encoding="utf-8") as out:
            async for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                out.write(line)
                out.flush()
                self.lines.append(line)
                match = pattern.search(line)
                if match is not None and not self.ready.done():
                    self.ready.set_result(match)
        if not self.ready.done():
            self.ready.set_exception(
                RuntimeError(f"{self.name} exited before it was ready; see {self.log}")
            )

    async def wait_ready(self) -> re.Match[str]:
        """The ready line's match; raises if the process exits first or is too slow."""
        async with asyncio.timeout(_STARTUP_SECONDS):
            return await self.ready

    async def kill(self) -> None:
        """SIGKILL (a crash: nothing drains); returns once the process is gone."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump

    async def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await self._pump
        return proc.returncode


def _profile_override(base: Path, url: str) -> str:
    return (
        "# Generated by tools.demo: the example profile, with the HIS endpoint pointed at\n"
        "# the simulator. Edit the example, not this file.\n"
        f'extends = "{base.as_posix()}"\n\n'
        "[[his.endpoints]]\n"
        'name = "simulator"\n'
        f'url = "{url}"\n'
    )


async def _run_cli(*argv: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "gen"), str(REPO)])
    proc = await asyncio.create_subprocess_exec(
        *HPLUS,
        *argv,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"hplus {' '.join(argv)} failed: {err.decode(errors='replace')}")
    return out.decode()


async def wait_tunnels(var: Path, internal: str, expected: set[str]) -> None:
    """Returns once the node lists a tunnel for every expected hospital."""
    import grpc

    from cloud.gateway import INTERNAL_AUTH_KEY
    from hplus.cloud.v1 import operations_pb2, operations_pb2_grpc

    secret = (var / "cluster-secret").read_text().strip()
    creds = grpc.ssl_channel_credentials(root_certificates=(var / "tls" / "ca.pem").read_bytes())
    async with asyncio.timeout(_STARTUP_SECONDS):
        async with grpc.aio.secure_channel(internal, creds) as channel:
            stub = operations_pb2_grpc.OperationsServiceStub(channel)
            while True:
                reply = await stub.ListConnectedHospitals(
                    operations_pb2.ListConnectedHospitalsRequest(page_size=500),
                    metadata=((INTERNAL_AUTH_KEY, secret),),
                    timeout=10,
                )
                if expected <= {c.hospital_id for c in reply.connections}:
                    return
                # The node offers no watch of its tunnels: ask again shortly.
                await asyncio.sleep(0.2)


_NODE_TOML = "".join(
    [
        "# Written by make run: business probes every 30 s (default 5 min), with a known\n",
        "# test patient per hospital (hplus cloud probes shows them).\n",
        "[probes]\ninterval = 30.0\n",
        *(f'\n[probes.hospitals.{h.hospital_id}]\npatient_id = "P00000010"\n' for h in HOSPITALS),
    ]
)


def _command() -> str:
    """How a person runs hplus here: the installed script, relative to the cwd if inside."""
    script = Path(PYTHON).with_name("hplus")
    if not script.exists():
        return f"{PYTHON} -m tools.cli"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _examples(var: Path, internal: str, slot_hint: str) -> list[str]:
    flags = f"--data-dir {shlex.quote(str(var))} --node {internal}"
    hplus = _command()
    call = f"{hplus} cloud call"
    lines = [f"  {hplus} cloud tunnels {flags}"]
    lines.append(f"  {hplus} cloud sync status --data-dir {shlex.quote(str(var))}")
    lines.append(f"  {hplus} cloud health --data-dir {shlex.quote(str(var))}")
    lines.append(
        f"  {hplus} cloud probes --config {shlex.quote(str(var / 'demo' / 'node.toml'))} "
        f"--data-dir {shlex.quote(str(var))}"
    )
    for h in HOSPITALS:
        lines.append(f"  {call} {h.hospital_id} DirectoryService/ListDepartments '{{}}' {flags}")
    patient = json.dumps({"patient": {"patientId": "P00000010"}})
    lines.append(f"  {call} city-first BillingService/ListPayableBills '{patient}' {flags}")
    lines.append(f"  {call} river-county ReportService/ListReports '{patient}' {flags}")
    lines.append(
        f"  {call} lakeside AppointmentService/BookAppointment "
        f'\'{{"idempotencyKey": "demo-1", "slotId": "{slot_hint}", '
        f'"patient": {{"patientId": "P00000010"}}}}\' {flags}'
    )
    lines.append(f"  {call} lakeside EdgeAdminService/GetEdgeInfo '{{}}' {flags}")
    return lines


def _sign_in_hint(var: Path, public: str, key: Path) -> list[str]:
    """How to sign in by hand with buf curl over reflection (README: "Sign in and read")."""
    buf = Path(PYTHON).with_name("buf")
    url = f"https://{public.replace('127.0.0.1', 'localhost')}/hplus.cloud.v1.AccountService"
    ca = var / "tls" / "ca.pem"
    return [
        f"  KEY=$(cat {key}); RID=$({PYTHON} -c 'import uuid; print(uuid.uuid4())')",
        f'  {buf} curl --protocol grpc --cacert {ca} -H "x-hplus-app-key: $KEY" \\',
        f'      -d \'{{"requestId": "\'$RID\'", "phone": "+8613800138000"}}\' {url}/StartSignIn',
        f"  tail -n 1 {var / 'sign-in-codes.log'}   # the code; then CompleteSignIn, GetAccount",
    ]


def _patient_api_hint(var: Path, public: str, key: Path) -> list[str]:
    """A first read of the patient API with buf curl (README: "Find a hospital and its slots")."""
    buf = Path(PYTHON).with_name("buf")
    url = f"https://{public.replace('127.0.0.1', 'localhost')}/hplus.cloud.v1.PatientApiService"
    ca = var / "tls" / "ca.pem"
    return [
        f'  {buf} curl --protocol grpc --cacert {ca} -H "x-hplus-app-key: $(cat {key})" \\',
        f'      -d \'{{"query": "rmyy"}}\' {url}/SearchHospitals',
    ]


@dataclasses.dataclass(frozen=True)
class Addresses:
    """Where a launched stack answers."""

    public: str
    """The node's public endpoint (tunnels, the patient API), ``127.0.0.1:PORT``."""
    internal: str
    """The node's internal endpoint (operations, ``hplus reconcile``)."""
    registry: str
    """The node's registry endpoint."""
    dashboard: re.Match[str] | None
    """The dashboard line's match (URL, password file), if it serves one."""
    his: dict[str, str]
    """Each hospital's HIS simulator: the URL its edge is given."""
    his_admin: dict[str, str]
    """Each hospital's HIS simulator: the base URL of its admin API (``/_admin/...``)."""
    notify: str
    """The node's payment notification URL ("" without payments)."""


@dataclasses.dataclass
class Stack:
    """The processes of a node, three simulated hospitals and the payment simulator.

    ``make run`` launches it as is; ``bench.chaos`` launches it with the node's databases
    on PostgreSQL and Redis (``node_toml``), each edge dialing through a proxy
    (``gateways``), and kills and restarts its processes (``start_node``, ``start_edge``).
    """

    var: Path
    node: Child
    sims: dict[str, Child]
    edges: dict[str, Child]
    pay: Child | None = None
    """The payment channel simulator (``tools.pay_sim``), the node's ``[payments]``."""
    pay_url: str = ""
    node_toml: str = _NODE_TOML
    """TOML appended to the generated ``node.toml`` after ``[payments]``."""
    gateways: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per hospital, the address its edge dials (default: the node's public endpoint)."""
    node_argv: list[str] = dataclasses.field(default_factory=list)
    """How the node was started (``start_node`` starts it again so)."""
    edge_argv: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """How each edge was started."""
    profile_extra: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per hospital, TOML appended to its generated profile."""

    @property
    def demo(self) -> Path:
        """Where the launcher's generated files and logs go."""
        return self.var / "demo"

    async def launch(
        self,
        listen: str,
        internal_listen: str,
        registry_listen: str | None = None,
        dashboard_listen: str | None = "127.0.0.1:50080",
    ) -> Addresses:
        """Starts everything; returns once every tunnel is up and the app key is issued."""
        var, demo = self.var, self.demo
        profiles = demo / "profiles"
        profiles.mkdir(parents=True, exist_ok=True)
        # The payment channel first (it starts meanwhile): the node's [payments] names it.
        await self._start_pay(demo)
        # Before the node starts, so its sync engine finds the hospitals on its first round.
        await _run_cli("cloud", "hospitals", "import", str(DEMO_HOSPITALS), "--data-dir", str(var))
        node_config = await self._pay_config(demo)
        self.node_argv = [
            *HPLUS, "cloud", "run",
            "--config", str(node_config),
            "--data-dir", str(var),
            "--listen", listen,
            "--internal-listen", internal_listen,
            *(("--registry-listen", registry_listen) if registry_listen else ()),
            *(("--dashboard-listen", dashboard_listen) if dashboard_listen else ()),
            "--node-id", "demo",
        ]  # fmt: skip
        await self.node.start(*self.node_argv)
        for h in HOSPITALS:
            argv = [PYTHON, "-m", "tools.his_sim", "--dialect", h.dialect, "--seed", str(h.seed)]
            if h.dialect == "db":
                db_file = demo / f"his-{h.hospital_id}.sqlite"
                db_file.unlink(missing_ok=True)
                argv += ["--db-url", f"sqlite+aiosqlite:///{db_file}"]
            await self.sims[h.hospital_id].start(*argv)
        registry = (await self.node.wait_ready()).group(1)
        printed = "".join(self.node.lines)
        public = re.search(r"hplus cloud node \S+ listening on (\S+)", printed)
        internal_match = re.search(r"internal endpoint: (\S+)", printed)
        dashboard = re.search(r"dashboard: (\S+) \(password in (\S+)\)", printed)
        notify = re.search(r"payment notifications: (\S+)", printed)
        if public is None or internal_match is None:
            raise RuntimeError(f"the cloud node printed no address; see {self.node.log}")
        internal = internal_match.group(1)
        gateway = public.group(1).replace("127.0.0.1", "localhost")  # the dev cert's name
        urls: dict[str, str] = {}
        admin: dict[str, str] = {}
        for h in HOSPITALS:
            sim = self.sims[h.hospital_id]
            urls[h.hospital_id] = (await sim.wait_ready()).group(1)
            db_admin = re.search(r"\(admin API (\S+)\)", "".join(sim.lines))
            admin[h.hospital_id] = db_admin.group(1) if db_admin else urls[h.hospital_id]
        for h in HOSPITALS:
            credential = demo / f"{h.hospital_id}.credential"
            credential.unlink(missing_ok=True)
            await _run_cli(
                "cloud", "credentials", "issue", h.hospital_id, "--label", "make run",
                "--out", str(credential), "--data-dir", str(var),
            )  # fmt: skip
            profile = profiles / f"{h.hospital_id}.toml"
            profile.write_text(
                _profile_override(PROFILES / h.profile, urls[h.hospital_id])
                + self.profile_extra.get(h.hospital_id, "")
            )
            self.edge_argv[h.hospital_id] = [
                *HPLUS, "edge", "run",
                "--cloud", self.gateways.get(h.hospital_id, gateway),
                "--credential", str(credential),
                "--ca", str(var / "tls" / "ca.pem"),
                "--profile", str(profile),
                "--data-dir", str(demo / f"edge-{h.hospital_id}"),
                "--edge-id", f"demo-{h.hospital_id}",
            ]  # fmt: skip
            await self.edges[h.hospital_id].start(*self.edge_argv[h.hospital_id])
        for h in HOSPITALS:
            await self.edges[h.hospital_id].wait_ready()
        await wait_tunnels(var, internal, {h.hospital_id for h in HOSPITALS})
        key = demo / "app.key"
        key.unlink(missing_ok=True)
        await _run_cli(
            "cloud", "apps", "issue", f"demo-{time.strftime('%Y%m%d-%H%M%S')}",
            "--channel", "web", "--out", str(key), "--data-dir", str(var),
            "--config", str(node_config),
        )  # fmt: skip
        return Addresses(
            public=public.group(1),
            internal=internal,
            registry=registry,
            dashboard=dashboard,
            his=urls,
            his_admin=admin,
            notify=notify.group(1) if notify else "",
        )

    async def start_node(self, node: Child, argv: Sequence[str]) -> None:
        """Starts the node (again) as ``node`` with ``argv``; returns once it is ready."""
        self.node = node
        self.node_argv = list(argv)
        await node.start(*argv)
        await node.wait_ready()

    async def start_edge(self, hospital_id: str, edge: Child) -> None:
        """Starts a hospital's edge (again) as it was first started; returns once it dials."""
        self.edges[hospital_id] = edge
        await edge.start(*self.edge_argv[hospital_id])
        await edge.wait_ready()

    async def start(
        self,
        listen: str,
        internal_listen: str,
        registry_listen: str | None = None,
        dashboard_listen: str = "127.0.0.1:50080",
    ) -> None:
        """Starts everything and prints where to look once every tunnel is up."""
        var, demo = self.var, self.demo
        at = await self.launch(listen, internal_listen, registry_listen, dashboard_listen)
        for h in HOSPITALS:
            print(f"HIS {h.dialect:<4} for {h.hospital_id:<13} at {at.his[h.hospital_id]}")
        key = demo / "app.key"
        print(
            f"cloud node: public {at.public}, registry {at.registry}, internal {at.internal}, "
            f"state in {var}"
        )
        print(f"logs: {demo / 'logs'}; generated profiles: {demo / 'profiles'}")
        if at.dashboard is not None:
            print(
                f"dashboard: {at.dashboard.group(1)} (sign in with the password in "
                f"{at.dashboard.group(2)}; the browser will warn about the development CA)"
            )
        print("three hospitals are connected. Try:")
        for line in _examples(var, at.internal, "<a slotId from DirectoryService/ListSlots>"):
            print(line)
        today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))
        print(f"payment channel simulator at {self.pay_url}; reconcile today's payments:")
        print(
            f"  {_command()} reconcile {today} --data-dir {shlex.quote(str(var))} "
            f"--node {at.internal}"
        )
        print("sign in to the patient API by hand (README: Sign in and read):")
        for line in _sign_in_hint(var, at.public, key):
            print(line)
        print(
            "read hospitals and slots from the read store (README: Find a hospital and its slots):"
        )
        for line in _patient_api_hint(var, at.public, key):
            print(line)
        print("stop with Ctrl-C")
        sys.stdout.flush()

    async def _start_pay(self, demo: Path) -> None:
        """Starts the payment simulator (its keys go to ``demo/pay-keys``)."""
        assert self.pay is not None
        await self.pay.start(
            PYTHON, "-m", "tools.pay_sim",
            "--listen", "127.0.0.1:0",
            "--state", str(demo / "pay_sim.db"),
            "--write-keys", str(demo / "pay-keys"),
        )  # fmt: skip

    async def _pay_config(self, demo: Path) -> Path:
        """Once the payment simulator is ready: the node config file that points at it."""
        assert self.pay is not None
        keys = demo / "pay-keys"
        self.pay_url = (await self.pay.wait_ready()).group(1)
        config = demo / "node.toml"
        config.write_text(
            "# Written by tools.demo: the node's payment channel is the simulator.\n"
            "[payments]\n"
            f'channel_url = "{self.pay_url}"\n'
            'merchant_id = "1900000001"\n'
            'app_id = "wxhplus0000000001"\n'
            f'merchant_key_file = "{(keys / "merchant.key").absolute().as_posix()}"\n'
            f'platform_public_key_file = "{(keys / "platform_public.pem").absolute().as_posix()}"\n'
            'notify_listen = "127.0.0.1:0"\n'
            "notify_plaintext = true\n\n" + self.node_toml,
            encoding="utf-8",
        )
        return config

    async def stop(self, *, quiet: bool = False) -> None:
        """Stops the edges (they drain), then the simulators, then the node."""
        if not quiet:
            print("stopping: edges, simulators, cloud node")
            sys.stdout.flush()
        await asyncio.gather(*(e.stop() for e in self.edges.values()))
        await asyncio.gather(*(s.stop() for s in self.sims.values()))
        await self.node.stop()
        if self.pay is not None:
            await self.pay.stop()


async def _serve(
    var: Path,
    listen: str,
    internal_listen: str,
    registry_listen: str | None = None,
    dashboard_listen: str = "127.0.0.1:50080",
) -> int:
    logs = var / "demo" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = Stack(
        var=var,
        node=Child("cloud-node", "node", logs),
        sims={h.hospital_id: Child(f"his-{h.hospital_id}", "sim", logs) for h in HOSPITALS},
        edges={h.hospital_id: Child(f"edge-{h.hospital_id}", "edge", logs) for h in HOSPITALS},
        pay=Child("pay-sim", "sim", logs),
    )
    startup = asyncio.create_task(
        demo.start(listen, internal_listen, registry_listen, dashboard_listen), name="demo-start"
    )
    stopped = asyncio.create_task(stop.wait(), name="demo-stop")
    code = 0
    try:
        await asyncio.wait({startup, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if startup.done():
            startup.result()  # raises what failed
            await stopped
        else:
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
    except (RuntimeError, TimeoutError, OSError) as err:
        print(f"tools.demo: {err}", file=sys.stderr)
        code = 1
    finally:
        stopped.cancel()
        await demo.stop()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo until SIGINT or SIGTERM.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tools.demo",
        description="Start a cloud node and three simulated hospitals (REST, SOAP, database) "
        "whose front-end servers dial out to it; stop with Ctrl-C.",
    )
    parser.add_argument("--var", type=Path, default=REPO / "var", help="state directory")
    parser.add_argument("--listen", default="127.0.0.1:50051", help="node public address")
    parser.add_argument(
        "--internal-listen", default="127.0.0.1:50061", help="node internal address"
    )
    parser.add_argument(
        "--registry-listen", help="node registry address (default: the public host, next port)"
    )
    parser.add_argument(
        "--dashboard-listen", default="127.0.0.1:50080", help="the operators' dashboard address"
    )
    args = parser.parse_args(argv)
    var: Path = args.var.resolve()
    var.mkdir(parents=True, exist_ok=True)
    return asyncio.run(
        _serve(var, args.listen, args.internal_listen, args.registry_listen, args.dashboard_listen)
    )


if __name__ == "__main__":
    raise SystemExit(main())

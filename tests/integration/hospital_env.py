"""A cloud node, one simulated HIS and its edge (EdgeApp) in one event loop, for tests.

The edge dials the node over real TLS; tests call the hospital through the node's router,
exactly as the cloud does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from cloud.config import NodeConfig
from cloud.node import CloudNode
from frontend_server.app import EdgeApp, EdgeConfig
from frontend_server.dialer import DialerConfig
from frontend_server.profile import Profile, load_profile
from frontend_server.services import DirectoryConfig
from hplus.hospital.v1 import (
    admin_pb2_grpc,
    appointment_pb2_grpc,
    billing_pb2_grpc,
    directory_pb2_grpc,
    patient_pb2_grpc,
    report_pb2_grpc,
    task_pb2_grpc,
)
from mesh.tunnel import TunnelConfig
from tools.his_sim import DbHis, RestHis, SimBase, SoapHis

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "frontend_server" / "profiles"
EXAMPLES = {
    "rest": "city-first-hospital.toml",
    "soap": "river-county-hospital.toml",
    "db": "lakeside-clinic.toml",
}
SEED = 11
# The simulator runs in the test's event loop: rendering a large answer (the bulk slot read
# of a 7-day directory) holds the loop for a while, which a 0.5 s ping would take for a dead
# peer on a loaded machine. Dead-peer detection is tested in test_tunnel_faults.
FAST = TunnelConfig(ping_interval=2.0, handshake_timeout=5.0, drain_grace=2.0)


def simulator(dialect: str) -> SimBase:
    if dialect == "rest":
        return RestHis(seed=SEED)
    if dialect == "soap":
        return SoapHis(seed=SEED)
    return DbHis(seed=SEED, poll_interval=0.005)


def his_url(his: SimBase) -> str:
    return his.db_url if isinstance(his, DbHis) else his.base_url


def write_profile(
    directory: Path, dialect: str, url: str, *, extra: str = "", write_seconds: float = 1.0
) -> Path:
    """A hospital override of the dialect's example profile pointing at ``url``."""
    path = directory / f"{dialect}-profile.toml"
    path.write_text(
        f"""extends = "{(PROFILES / EXAMPLES[dialect]).as_posix()}"

[[his.endpoints]]
name = "sim"
url = "{url}"

[his.timeouts]
connect_seconds = 2.0
read_seconds = 5.0
write_seconds = {write_seconds}

{extra}
""",
        encoding="utf-8",
    )
    return path


@dataclasses.dataclass
class Env:
    dialect: str
    his: SimBase
    app: EdgeApp
    node: CloudNode
    channel: grpc.aio.Channel

    @property
    def profile(self) -> Profile:
        return self.app.config.profile

    @property
    def hospital_id(self) -> str:
        return self.profile.hospital_id

    @property
    def appointments(self) -> appointment_pb2_grpc.AppointmentServiceStub:
        return appointment_pb2_grpc.AppointmentServiceStub(self.channel)

    @property
    def billing(self) -> billing_pb2_grpc.BillingServiceStub:
        return billing_pb2_grpc.BillingServiceStub(self.channel)

    @property
    def directory(self) -> directory_pb2_grpc.DirectoryServiceStub:
        return directory_pb2_grpc.DirectoryServiceStub(self.channel)

    @property
    def reports(self) -> report_pb2_grpc.ReportServiceStub:
        return report_pb2_grpc.ReportServiceStub(self.channel)

    @property
    def patients(self) -> patient_pb2_grpc.PatientServiceStub:
        return patient_pb2_grpc.PatientServiceStub(self.channel)

    @property
    def tasks(self) -> task_pb2_grpc.TaskServiceStub:
        return task_pb2_grpc.TaskServiceStub(self.channel)

    @property
    def admin(self) -> admin_pb2_grpc.EdgeAdminServiceStub:
        return admin_pb2_grpc.EdgeAdminServiceStub(self.channel)

    @property
    def can_hold(self) -> bool:
        return self.profile.capabilities.can("appointment", "hold")


@asynccontextmanager
async def cloud_node(data_dir: Path) -> AsyncIterator[CloudNode]:
    config = NodeConfig(
        listen="127.0.0.1:0",
        internal_listen="127.0.0.1:0",
        data_dir=data_dir,
        node_id="n1",
        grace_seconds=2.0,
    )
    async with CloudNode(config, tunnel_config=FAST) as node:
        yield node


def edge_config(
    node: CloudNode,
    profile: Profile,
    token: str,
    data_dir: Path,
    his: SimBase,
    directory: DirectoryConfig | None = None,
) -> EdgeConfig:
    assert node.tls is not None
    overrides: dict[str, object] = {}
    if isinstance(his, DbHis):
        overrides = {
            "table_prefix": his.prefix,
            "db_poll_initial_seconds": 0.002,
            "db_poll_max_seconds": 0.02,
        }
    return EdgeConfig(
        profile=profile,
        data_dir=data_dir,
        dialer=DialerConfig(
            gateways=(f"localhost:{node.port}",),
            hospital_id=profile.hospital_id,
            edge_id="edge-test",
            credential=token,
            ca_cert=node.tls.ca_cert.read_bytes(),
            backoff_initial=0.05,
            backoff_max=0.2,
            tunnel=FAST,
        ),
        adapter_overrides=overrides,
        resolve_interval_seconds=60.0,
        grace_seconds=1.0,
        directory=directory or DirectoryConfig(),
    )


@asynccontextmanager
async def hospital(
    dialect: str,
    tmp_path: Path,
    *,
    extra: str = "",
    write_seconds: float = 1.0,
    directory: DirectoryConfig | None = None,
    before_edge: Callable[[SimBase], Awaitable[None]] | None = None,
) -> AsyncIterator[Env]:
    """A running simulator, cloud node and edge for the dialect's example hospital.

    ``directory`` configures the edge's directory mirror; ``before_edge`` runs once the
    simulator is up, before the edge starts (to inject a fault the edge meets at start).
    """
    async with simulator(dialect) as his, cloud_node(tmp_path / "cloud") as node:
        if before_edge is not None:
            await before_edge(his)
        profile = load_profile(
            write_profile(tmp_path, dialect, his_url(his), extra=extra, write_seconds=write_seconds)
        )
        assert node.credentials is not None
        assert node.router is not None
        token = (await node.credentials.issue(profile.hospital_id)).token
        app = EdgeApp(edge_config(node, profile, token, tmp_path / "edge", his, directory))
        async with app:
            assert app.dialer is not None
            await asyncio.wait_for(app.dialer.connected.wait(), 10)
            # The directory mirror reads the HIS as the edge starts: let that first read
            # finish (or fail) so it does not run under the test's own measurements.
            with contextlib.suppress(Exception):
                await app.refresher.refresh()
            channel = await node.router.channel_for(profile.hospital_id)
            yield Env(dialect=dialect, his=his, app=app, node=node, channel=channel)


def error_reason(err: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call ("" when it carries none)."""
    status = rpc_status.from_call(err)
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "hospital.hplus"
            return info.reason
    return ""


def field_violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    out: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend(v.field for v in bad.field_violations)
    return out

"""The measurements of ``bench.observability`` (see ``__main__``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import wrappers_pb2

from bench.tunnel import SERVICE
from cloud.accounts import Channel, Rate
from cloud.config import NodeConfig
from cloud.db import create_engine
from cloud.gateway import INTERNAL_AUTH_KEY, ROUTE_KEY
from cloud.node import CloudNode
from cloud.readstore import HospitalRecord
from cloud.traces import NodeSpanStore, migrate_traces
from frontend_server.app import EdgeApp, EdgeConfig
from frontend_server.dialer import DialerConfig
from frontend_server.profile import load_profile
from hplus.cloud.v1 import patient_pb2, patient_pb2_grpc
from hplus.hospital.v1 import appointment_pb2, appointment_pb2_grpc, common_pb2
from hplus.tunnel.v1 import tunnel_pb2_grpc
from mesh.observability import ObservabilityConfig, Tracing, TunnelClientHook
from mesh.tunnel import TunnelChannel, TunnelConfig, TunnelGateway, bearer_token
from tools.his_sim import RestHis

_REQUEST = wrappers_pb2.BytesValue(value=b"q" * 100)
_PROFILES = Path(__file__).resolve().parents[2] / "frontend_server" / "profiles"
Call = Callable[[], Awaitable[Any]]


def _authenticate(metadata: list[tuple[str, str | bytes]]) -> str | None:
    token = bearer_token(metadata)
    return token[len("bench-") :] if token and token.startswith("bench-") else None


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of this process, or of child ``pid``."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(call: Call, seconds: float, concurrency: int) -> tuple[float, int]:
    """Calls per second of ``concurrency`` workers calling for ``seconds``, and calls made."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while loop.time() < end:
            await call()
            done += 1

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (loop.time() - began), done


async def _alternate(
    plain: Call,
    observed: Call,
    *,
    seconds: float,
    rounds: int,
    concurrency: int,
    plain_pids: tuple[int | None, ...] = (None,),
    observed_pids: tuple[int | None, ...] = (None,),
) -> dict[str, Any]:
    """Rounds of both arms, the order swapped each round; ratios observed / plain.

    Besides throughput, each arm's CPU time per call (this process and the arm's child
    processes): on a shared machine throughput swings with other load, CPU per call much
    less.
    """
    await _load(plain, 0.3, concurrency)
    await _load(observed, 0.3, concurrency)
    rates: dict[str, list[float]] = {"plain": [], "observed": []}
    cpu: dict[str, list[float]] = {"plain": [], "observed": []}
    arms = {"plain": (plain, plain_pids), "observed": (observed, observed_pids)}

    async def measure(arm: str) -> None:
        call, pids = arms[arm]
        before = sum(_cpu_seconds(p) for p in pids)
        rate, calls = await _load(call, seconds, concurrency)
        used = sum(_cpu_seconds(p) for p in pids) - before
        rates[arm].append(rate)
        cpu[arm].append(used / max(1, calls) * 1e6)

    for r in range(rounds):
        for arm in ("plain", "observed") if r % 2 == 0 else ("observed", "plain"):
            await measure(arm)
    ratios = [o / p for o, p in zip(rates["observed"], rates["plain"], strict=True)]
    cpu_ratios = [o / p for o, p in zip(cpu["observed"], cpu["plain"], strict=True)]
    return {
        "plain_calls_per_s": [round(x) for x in rates["plain"]],
        "observed_calls_per_s": [round(x) for x in rates["observed"]],
        "ratio_median": statistics.median(ratios),
        "ratios": [round(x, 3) for x in ratios],
        "overhead_pct": round((1 - statistics.median(ratios)) * 100, 2),
        "plain_cpu_us_per_call": round(statistics.median(cpu["plain"]), 1),
        "observed_cpu_us_per_call": round(statistics.median(cpu["observed"]), 1),
        "cpu_ratios": [round(x, 3) for x in cpu_ratios],
        "cpu_overhead_pct": round((statistics.median(cpu_ratios) - 1) * 100, 2),
        "observed_calls": round(sum(rates["observed"]) * seconds),
    }


def _bytes(directory: Path, name: str) -> int:
    return sum(p.stat().st_size for p in directory.glob(f"{name}*") if p.is_file())


async def _edge_process(port: int, hospital: str, observe: str) -> asyncio.subprocess.Process:
    args = ["-m", "bench.tunnel", "--role", "edge", "--cloud", f"127.0.0.1:{port}"]
    args += ["--hospital", hospital]
    if observe:
        args += ["--observe", observe]
    child = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    await asyncio.wait_for(child.stdout.readline(), 30)  # READY <port>
    return child


async def _stop(child: asyncio.subprocess.Process) -> str:
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.close()
    out = (await child.stdout.read()).decode()
    await child.wait()
    return out


async def tunnel_figure(work: Path, *, seconds: float, rounds: int) -> dict[str, Any]:
    """Unary c=64 through the tunnel, without and with observability on both ends."""
    gateway = TunnelGateway(authenticate=_authenticate, node_id="bench")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tunnel_pb2_grpc.add_TunnelServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    engine = create_engine(f"sqlite+aiosqlite:///{work / 'node-traces.db'}")
    await migrate_traces(engine)
    store = NodeSpanStore(engine, max_spans=2_000_000, retention=3600.0)
    tracing = Tracing(
        service="hplus-node",
        node="bench",
        sink=store,
        sample_rate=ObservabilityConfig().span_sample_rate,
    )
    tracing.start()
    edge_dir = work / "edge"
    edge_dir.mkdir()
    plain_edge = await _edge_process(port, "h0", "")
    observed_edge = await _edge_process(port, "h1", str(edge_dir))
    try:
        await asyncio.wait_for(gateway.wait_for_hospital("h0"), 30)
        await asyncio.wait_for(gateway.wait_for_hospital("h1"), 30)

        def unary(channel: grpc.aio.Channel) -> Call:
            multi = channel.unary_unary(
                f"/{SERVICE}/Unary",
                request_serializer=wrappers_pb2.BytesValue.SerializeToString,
                response_deserializer=wrappers_pb2.BytesValue.FromString,
            )
            return lambda: multi(_REQUEST, timeout=10)

        plain = unary(TunnelChannel(lambda: gateway.pick("h0")))
        observed = unary(
            TunnelChannel(lambda: gateway.pick("h1"), hooks=[TunnelClientHook(tracing)])
        )
        result = await _alternate(
            plain,
            observed,
            seconds=seconds,
            rounds=rounds,
            concurrency=64,
            plain_pids=(None, plain_edge.pid),
            observed_pids=(None, observed_edge.pid),
        )
    finally:
        await _stop(plain_edge)
        edge_out = await _stop(observed_edge)
        await gateway.shutdown(1.0)
        await server.stop(None)
        await tracing.shutdown()
        stored = await store.count()
        await engine.dispose()
    edge_spans = int(edge_out.split()[1]) if edge_out.startswith("SPANS") else 0
    calls = result["observed_calls"]
    span_bytes = _bytes(work, "node-traces.db") + _bytes(edge_dir, "traces.db")
    result.update(
        node_spans=stored,
        edge_spans=edge_spans,
        span_bytes=span_bytes,
        span_bytes_per_call=round(span_bytes / max(1, calls), 1),
        span_bytes_per_kept_call=round(span_bytes / max(1, stored + edge_spans) * 2),
        span_bytes_note="SQLite files (rows, indexes, WAL) of node + edge; per kept call: "
        "two spans (cloud client, edge server)",
    )
    return result


def _profile(directory: Path, url: str) -> Path:
    path = directory / "profile.toml"
    path.write_text(
        f'extends = "{(_PROFILES / "city-first-hospital.toml").as_posix()}"\n\n'
        f'[[his.endpoints]]\nname = "sim"\nurl = "{url}"\n\n'
        "[his.limits]\nrate_per_second = 100000.0\nburst = 100000\nmax_concurrency = 64\n",
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def _hospital_stack(work: Path, *, observed: bool) -> AsyncIterator[Stack]:
    """A node, an edge and a REST HIS; yields a hospital call and a patient API read."""
    fast = TunnelConfig(ping_interval=2.0, handshake_timeout=5.0, drain_grace=1.0)
    obs = ObservabilityConfig(enabled=observed)
    async with RestHis(seed=11) as his:
        node_cfg = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=work / "cloud",
            node_id="bench-node",
            grace_seconds=1.0,
            census_rate=0.0,
            observability=obs,
        )
        async with CloudNode(node_cfg, tunnel_config=fast) as node:
            assert node.credentials is not None
            assert node.tls is not None
            assert node.readstore is not None
            assert node.accounts is not None
            profile = load_profile(_profile(work, his.base_url))
            token = (await node.credentials.issue(profile.hospital_id)).token
            await node.readstore.put_hospitals(
                [HospitalRecord(hospital_id=profile.hospital_id, name="City First Hospital")]
            )
            app_key = (
                await node.accounts.apps.issue(
                    f"bench-{observed}", Channel.WEB, Rate(10_000_000, 1.0)
                )
            ).key
            app = EdgeApp(
                EdgeConfig(
                    profile=profile,
                    data_dir=work / "edge",
                    dialer=DialerConfig(
                        gateways=(f"localhost:{node.port}",),
                        hospital_id=profile.hospital_id,
                        edge_id="bench-edge",
                        credential=token,
                        ca_cert=node.tls.ca_cert.read_bytes(),
                        tunnel=fast,
                    ),
                    observability=obs,
                )
            )
            async with app:
                assert app.dialer is not None
                await asyncio.wait_for(app.dialer.connected.wait(), 30)
                secret = (work / "cloud" / "cluster-secret").read_text().strip()
                creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
                async with (
                    grpc.aio.secure_channel(f"localhost:{node.internal_port}", creds) as internal,
                    grpc.aio.secure_channel(f"localhost:{node.port}", creds) as public,
                ):
                    stub = appointment_pb2_grpc.AppointmentServiceStub(internal)
                    request = appointment_pb2.ListPatientAppointmentsRequest(
                        patient=common_pb2.PatientRef(patient_id="P00000010")
                    )
                    metadata = ((INTERNAL_AUTH_KEY, secret), (ROUTE_KEY, profile.hospital_id))
                    api = patient_pb2_grpc.PatientApiServiceStub(public)
                    read = patient_pb2.ListDepartmentsRequest(hospital_id=profile.hospital_id)
                    key = (("x-hplus-app-key", app_key),)
                    yield Stack(
                        hospital_call=lambda: stub.ListPatientAppointments(
                            request, metadata=metadata, timeout=30
                        ),
                        patient_read=lambda: api.ListDepartments(read, metadata=key, timeout=30),
                        tracings=(node.tracing, app.tracing),
                    )


@dataclasses.dataclass
class Stack:
    """The calls of one `_hospital_stack`, and its tracings (None when unobserved)."""

    hospital_call: Call
    patient_read: Call
    tracings: tuple[Tracing | None, ...]


async def node_figures(work: Path, *, seconds: float, rounds: int) -> dict[str, Any]:
    """Through a node: a hospital call (internal endpoint → tunnel → edge → REST HIS) and
    the patient API's read (public endpoint, app key, read store), each with and without
    observability; then the span files' bytes per observed call of both."""
    (work / "plain").mkdir()
    (work / "observed").mkdir()
    async with (
        _hospital_stack(work / "plain", observed=False) as plain,
        _hospital_stack(work / "observed", observed=True) as observed,
    ):
        hospital = await _alternate(
            plain.hospital_call,
            observed.hospital_call,
            seconds=seconds,
            rounds=rounds,
            concurrency=16,
        )
        patient = await _alternate(
            plain.patient_read,
            observed.patient_read,
            seconds=seconds,
            rounds=rounds,
            concurrency=16,
        )
        kept = sum(t.kept for t in observed.tracings if t is not None)
    calls = hospital["observed_calls"] + patient["observed_calls"]
    span_bytes = _bytes(work / "observed" / "cloud", "traces.db") + _bytes(
        work / "observed" / "edge", "traces.db"
    )
    storage = {
        "kept_spans": kept,
        "span_bytes": span_bytes,
        "span_bytes_per_call": round(span_bytes / max(1, calls), 1),
        "span_bytes_note": "SQLite span files (rows, indexes, WAL) of the observed node and "
        "edge over the observed calls of both figures",
    }
    return {"hospital_call": hospital, "patient_read": patient, "storage": storage}


def _row(name: str, r: dict[str, Any]) -> str:
    return (
        f"{name:<34} plain {statistics.median(r['plain_calls_per_s']):>7.0f}/s "
        f"{r['plain_cpu_us_per_call']:>7.1f} us CPU/call  observed "
        f"{statistics.median(r['observed_calls_per_s']):>7.0f}/s "
        f"{r['observed_cpu_us_per_call']:>7.1f} us CPU/call  throughput ratio "
        f"{r['ratio_median']:.3f}  CPU per call +{r['cpu_overhead_pct']:.1f} % (target <= 5 %)"
    )


async def run(*, seconds: float, rounds: int) -> None:
    """Runs the three figures and prints them."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hplus-bench-obs-") as tmp:
        work = Path(tmp)
        (work / "tunnel").mkdir()
        (work / "node").mkdir()
        tunnel = await tunnel_figure(work / "tunnel", seconds=seconds, rounds=rounds)
        node = await node_figures(work / "node", seconds=seconds, rounds=rounds)
    results: dict[str, Any] = {
        "seconds_per_round": seconds,
        "rounds": rounds,
        "span_sample_rate": ObservabilityConfig().span_sample_rate,
        "tunnel_unary_c64": tunnel,
        "node_hospital_call_c16": node["hospital_call"],
        "patient_api_read_c16": node["patient_read"],
        "node_span_storage": node["storage"],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(_row("tunnel unary c=64", tunnel))
    print(_row("hospital call through a node c=16", node["hospital_call"]))
    print(_row("patient API read c=16", node["patient_read"]))
    print(
        f"span storage at the default sample rate ({results['span_sample_rate']}): tunnel "
        f"{tunnel['span_bytes_per_call']} bytes per call ({tunnel['node_spans']} node + "
        f"{tunnel['edge_spans']} edge spans of {tunnel['observed_calls']} calls, "
        f"{tunnel['span_bytes_per_kept_call']} bytes per kept call); through the node "
        f"{node['storage']['span_bytes_per_call']} bytes per call "
        f"({node['storage']['kept_spans']} spans kept)"
    )
    print(json.dumps(results))

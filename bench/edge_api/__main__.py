"""``python -m bench.edge_api [--seconds S] [--concurrency N] [--rounds R] [--quick]``.

What EdgeService costs a node: ReportHealth calls per second (credential checked in the fleet
database, rate charged, report and history written, alerts evaluated) and task results per
second through ReportTaskResults (batches of 100, each stored by the reports sink), each
against the node's plain ``grpc.health.v1.Health/Check`` on the same TLS channel, measured
in interleaved rounds in one run. The node runs in this process (SQLite databases in a
temporary directory). Prints a table and, on the last line, the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import sqlalchemy as sa
from google.protobuf import any_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud.config import NodeConfig
from cloud.edgeconfig import EdgeApiConfig
from cloud.node import CloudNode
from hplus.cloud.v1 import edge_pb2, edge_pb2_grpc
from hplus.hospital.v1 import report_pb2

_INSERT = sa.text(
    "INSERT INTO report_lookups (lookup_key, subject, hospital_id, account_id, kind, state, "
    "task_id, submitted_at, expires_at, error) VALUES (:lookup_key, :subject, :hospital_id, "
    ":account_id, :kind, :state, :task_id, :submitted_at, :expires_at, :error)"
)


async def _rate(call: Callable[[], Awaitable[int]], seconds: float, concurrency: int) -> float:
    """Units per second ``call`` completes with ``concurrency`` callers for ``seconds``."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            done += await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def _run(seconds: float, concurrency: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = NodeConfig(
            listen="127.0.0.1:0",
            internal_listen="127.0.0.1:0",
            data_dir=Path(tmp),
            node_id="bench",
            edge_api=EdgeApiConfig(calls_per_minute=10**9),
        )
        async with CloudNode(config) as node:
            assert node.credentials is not None
            assert node.tls is not None
            reports = node.reports
            assert reports is not None
            token = (await node.credentials.issue("h1")).token
            md = (("authorization", f"Bearer {token}"),)
            creds = grpc.ssl_channel_credentials(node.tls.ca_cert.read_bytes())
            async with grpc.aio.secure_channel(f"localhost:{node.port}", creds) as channel:
                edge = edge_pb2_grpc.EdgeServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                report = edge_pb2.ReportHealthRequest(edge_id="e1", software_version="1.3.0")
                report.queues.add(queue="list_reports", backlog=3)
                report.his_interfaces.add(interface="directory", reachability=1)
                packed = any_pb2.Any()
                packed.Pack(
                    report_pb2.ListReportsResponse(
                        reports=[report_pb2.ReportSummary(report_id="R1", title="血常规")]
                    )
                )

                async def baseline() -> int:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    return 1

                async def report_health() -> int:
                    report.request_id = str(uuid.uuid4())
                    await edge.ReportHealth(report, metadata=md, timeout=10)
                    return 1

                async def results() -> int:
                    keys = [f"rpt-{uuid.uuid4().hex}" for _ in range(100)]
                    now = dt.datetime.now(dt.UTC)
                    # What ReportApi records when it submits a lookup: the results then
                    # find pending lookups, as they do in service.
                    async with reports._engine.begin() as conn:
                        await conn.execute(
                            _INSERT,
                            [
                                {
                                    "lookup_key": k, "subject": k, "hospital_id": "h1",
                                    "account_id": "a", "kind": "list", "state": "PENDING",
                                    "task_id": "", "submitted_at": now,
                                    "expires_at": now + dt.timedelta(hours=1), "error": "",
                                }
                                for k in keys
                            ],
                        )  # fmt: skip
                    request = edge_pb2.ReportTaskResultsRequest(
                        request_id=str(uuid.uuid4()),
                        edge_id="e1",
                        results=[
                            edge_pb2.TaskResult(
                                task_id=k[-12:], idempotency_key=k,
                                outcome=edge_pb2.TASK_OUTCOME_SUCCEEDED, result=packed,
                            )
                            for k in keys
                        ],
                    )  # fmt: skip
                    reply = await edge.ReportTaskResults(request, metadata=md, timeout=30)
                    return len(reply.acknowledged_task_ids)

                figures: dict[str, list[float]] = {"baseline": [], "health": [], "results": []}
                for _ in range(rounds):
                    figures["baseline"].append(await _rate(baseline, seconds, concurrency))
                    figures["health"].append(await _rate(report_health, seconds, concurrency))
                    figures["results"].append(
                        await _rate(results, seconds, max(concurrency // 8, 1))
                    )
    out = {name: statistics.median(values) for name, values in figures.items()}
    out["health_vs_baseline"] = out["health"] / out["baseline"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.edge_api", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per figure")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="1 s per figure, 1 round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    out = asyncio.run(_run(args.seconds, args.concurrency, args.rounds))
    print(f"{'figure':<34} {'per second':>12}")
    print(f"{'Health/Check (baseline), calls':<34} {out['baseline']:>12.0f}")
    print(f"{'ReportHealth, calls':<34} {out['health']:>12.0f}")
    print(f"{'ReportTaskResults, results':<34} {out['results']:>12.0f}")
    print(f"ReportHealth / baseline: {out['health_vs_baseline']:.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

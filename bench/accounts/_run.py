"""The accounts benchmark: sign-ins per second, and what the per-call authentication costs.

A child process serves, on one ``grpc.aio`` server over TLS (as a node's public endpoint):
the real ``AccountService`` over real partitions (SQLite files, the node's defaults), and
one no-op method three ways — without authentication, with `authenticate_app` (the app key
checked, its rate limit taken) and with `authenticate_account` (app key and access token,
the session read from its partition at most once a second). The codes the child would send
are kept in memory and read back through one more method, so a sign-in is StartSignIn,
that read, and CompleteSignIn. The parent drives each figure at a fixed concurrency for a
fixed time, interleaving the variants, and prints calls per second and the ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from tools.scratchdb import postgres_databases

_NOOP = "/bench.Noop/"
_CODES = "/bench.Codes/Get"
_READY = "bench-accounts ready on port "


def _identity(data: bytes) -> bytes:
    return data


async def _serve(data_dir: Path, postgres: str | None) -> None:  # the child
    from cloud.accounts import Accounts, Channel, InProcessBuckets, Rate, SentCode
    from cloud.config import AccountsConfig
    from cloud.partitioned import SCHEMAS
    from cloud.partitions import PartitionSet, default_urls
    from hplus.cloud.v1 import account_pb2_grpc
    from mesh.tls import ensure_dev_pki, load_server_credentials

    codes: dict[str, str] = {}

    class Sender:
        async def send(self, message: SentCode) -> None:
            codes[message.challenge_id] = message.code

    async def offline(hospital_id: str) -> grpc.aio.Channel:
        raise RuntimeError("no hospitals in this benchmark")

    async def unknown(hospital_id: str) -> bool:
        return False

    unlimited = "1000000/1s"
    if postgres is None:
        control, first = f"sqlite+aiosqlite:///{data_dir / 'partitions.db'}", default_urls(data_dir)
    else:
        urls = json.loads(postgres)
        control, first = urls["control"], {n: urls[n] for n in ("south", "north")}
    parts = await PartitionSet.open(control, first_urls=first, schemas=SCHEMAS)
    accounts = await Accounts.open(
        parts,
        config=AccountsConfig(
            codes_per_phone=unlimited,
            codes_per_address=unlimited,
            attempts_per_phone=unlimited,
            attempts_per_address=unlimited,
        ),
        sender=Sender(),
        buckets=InProcessBuckets(),
        channel_for=offline,
        known_hospital=unknown,
    )
    app = await accounts.apps.issue("bench", Channel.WEB, Rate(1_000_000, 1.0))
    auth = accounts.auth

    async def plain(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return request

    async def with_app(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await auth.caller(context, account=False)
        return request

    async def with_account(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await auth.caller(context, account=True)
        return request

    async def code(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return codes.pop(request.decode(), "").encode()

    def unary(fn: Any) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_identity, response_serializer=_identity
        )

    tls = ensure_dev_pki(data_dir / "tls")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    account_pb2_grpc.add_AccountServiceServicer_to_server(accounts.servicer, server)
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Noop",
                {"Plain": unary(plain), "App": unary(with_app), "Account": unary(with_account)},
            ),
            grpc.method_handlers_generic_handler("bench.Codes", {"Get": unary(code)}),
        ]
    )
    port = server.add_secure_port("127.0.0.1:0", load_server_credentials(tls))
    await server.start()
    print(f"{_READY}{port} key {app.key}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    await server.stop(1)
    await accounts.close()
    await parts.close()


async def _drive(
    call: Callable[[], Awaitable[None]], *, concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            await call()
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "calls": float(len(latencies)),
    }


async def _bench(
    *, seconds: float, concurrency: int, rounds: int, postgres: str | None
) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        urls = (
            None
            if postgres is None
            else await stack.enter_async_context(
                postgres_databases(postgres, ("control", "south", "north"), prefix="bench_accounts")
            )
        )
        return await _bench_on(seconds=seconds, concurrency=concurrency, rounds=rounds, urls=urls)


async def _bench_on(
    *, seconds: float, concurrency: int, rounds: int, urls: dict[str, str] | None
) -> dict[str, Any]:
    from hplus.cloud.v1 import account_pb2, account_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
        data_dir = Path(tmp)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        extra = [] if urls is None else ["--databases", json.dumps(urls)]
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.accounts", "--serve", str(data_dir), *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert child.stdout is not None
        assert child.stdin is not None
        try:
            line = (await asyncio.wait_for(child.stdout.readline(), 60)).decode()
            if not line.startswith(_READY):
                raise RuntimeError(f"the benchmark server did not start: {line!r}")
            _, _, rest = line.partition(_READY)
            port, _, key = rest.strip().partition(" key ")
            creds = grpc.ssl_channel_credentials(
                root_certificates=(data_dir / "tls" / "ca.pem").read_bytes()
            )
            async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
                return await _measure(
                    channel, key, account_pb2, account_pb2_grpc,
                    seconds=seconds, concurrency=concurrency, rounds=rounds,
                )  # fmt: skip
        finally:
            child.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(child.wait(), 10)
            if child.returncode is None:
                child.kill()
                await child.wait()


async def _measure(
    channel: grpc.aio.Channel,
    key: str,
    account_pb2: Any,
    account_pb2_grpc: Any,
    *,
    seconds: float,
    concurrency: int,
    rounds: int,
) -> dict[str, Any]:
    stub = account_pb2_grpc.AccountServiceStub(channel)
    codes = channel.unary_unary(
        _CODES, request_serializer=_identity, response_deserializer=_identity
    )
    app_md = (("x-hplus-app-key", key),)
    counter = iter(range(10**9))

    async def sign_in() -> str:
        n = next(counter)
        phone = f"+86138{n % 10_000:04d}{n // 10_000 % 10_000:04d}"
        started = await stub.StartSignIn(
            account_pb2.StartSignInRequest(request_id=str(uuid.uuid4()), phone=phone),
            metadata=app_md,
            timeout=30,
        )
        code = (await codes(started.challenge_id.encode(), timeout=30)).decode()
        done = await stub.CompleteSignIn(
            account_pb2.CompleteSignInRequest(
                request_id=str(uuid.uuid4()), challenge_id=started.challenge_id, code=code
            ),
            metadata=app_md,
            timeout=30,
        )
        return str(done.access_token)

    token = await sign_in()
    account_md = (*app_md, ("authorization", f"Bearer {token}"))
    payload = b"x" * 16
    variants: dict[str, Callable[[], Awaitable[None]]] = {}

    def noop(name: str, md: tuple[tuple[str, str], ...]) -> Callable[[], Awaitable[None]]:
        method = channel.unary_unary(
            _NOOP + name, request_serializer=_identity, response_deserializer=_identity
        )

        async def call() -> None:
            await method(payload, metadata=md, timeout=30)

        return call

    variants["no-op, no authentication"] = noop("Plain", ())
    variants["no-op, app key"] = noop("App", app_md)
    variants["no-op, app key + access token"] = noop("Account", account_md)

    async def get_account() -> None:
        await stub.GetAccount(account_pb2.GetAccountRequest(), metadata=account_md, timeout=30)

    async def one_sign_in() -> None:
        await sign_in()

    variants["GetAccount (authenticated, one partition read)"] = get_account
    variants["sign-in (StartSignIn + CompleteSignIn)"] = one_sign_in
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for call in variants.values():  # warm up every path once
        await _drive(call, concurrency=concurrency, seconds=min(1.0, seconds))
    for _ in range(rounds):
        for name, call in variants.items():
            figures[name].append(await _drive(call, concurrency=concurrency, seconds=seconds))
    return {
        name: {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        for name, runs in figures.items()
    }


def run(*, seconds: float, concurrency: int, rounds: int, postgres: str | None = None) -> None:
    """Measure and print the table, then the figures as JSON on the last line.

    Args:
        seconds: per figure and round.
        concurrency: calls in flight.
        rounds: interleaved rounds (the median is printed).
        postgres: an admin URL of a PostgreSQL server: the partitions are databases made
            there for the run (else SQLite files, the node's default).
    """
    figures = asyncio.run(
        _bench(seconds=seconds, concurrency=concurrency, rounds=rounds, postgres=postgres)
    )
    base = figures["no-op, no authentication"]["per_second"]
    where = "SQLite partitions" if postgres is None else "PostgreSQL partitions"
    print(
        f"one server (TLS, {where}), concurrency {concurrency}, {seconds:g} s per "
        f"figure, median of {rounds} interleaved rounds"
    )
    print(f"{'call':<50} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs no auth':>11}")
    for name, f in figures.items():
        print(
            f"{name:<50} {f['per_second']:>9.0f} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f} "
            f"{f['per_second'] / base:>10.2f}x"
        )
    app = figures["no-op, app key"]["per_second"]
    account = figures["no-op, app key + access token"]["per_second"]
    print(
        f"authentication cost per call: app key {1e6 / app - 1e6 / base:.0f} µs, app key + "
        f"token {1e6 / account - 1e6 / base:.0f} µs (of the server's time at this load)"
    )
    print(
        json.dumps(
            {
                "concurrency": concurrency,
                "seconds": seconds,
                "partitions": "sqlite" if postgres is None else "postgresql",
                "figures": figures,
            }
        )
    )


def serve(data_dir: Path, databases: str | None) -> None:
    """The child's entry point (``databases``: JSON of PostgreSQL URLs, or SQLite files)."""
    asyncio.run(_serve(data_dir, databases))

"""The edge's records across restarts of a real ``hplus edge run --profile`` process.

A ledger or task store that is damaged, deleted, emptied, swapped for another directory's
or written by a newer release refuses the start: one line on stderr naming the file and
what to do, exit code 65, no traceback. ``--reset-ledger`` archives and begins anew. The
stores and the data directory are private (0600 / 0700).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import sqlite3
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from cloud.node import CloudNode
from frontend_server.ledger import HisOutcome, Ledger
from frontend_server.profile import load_profile
from hplus.hospital.v1 import (
    admin_pb2,
    appointment_pb2,
    appointment_pb2_grpc,
    common_pb2,
    directory_pb2,
    directory_pb2_grpc,
)
from tests.integration.hospital_env import (
    REPO,
    cloud_node,
    error_reason,
    his_url,
    hospital,
    simulator,
    write_profile,
)
from tests.support.waiting import until
from tools.his_sim import SimBase

EXIT_STORE_REFUSED = 65
BOOK = "hplus.hospital.v1.AppointmentService/BookAppointment"
PATIENT = "P00000010"
T = 15.0
STARTUP = 60.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPLUS_")}
    env["PYTHONPATH"] = f"{REPO / 'gen'}{os.pathsep}{REPO}"
    return env


class Edge:
    """An ``hplus edge run`` process; knows whether it started (its banner) or exited."""

    def __init__(self, *argv: str) -> None:
        self.argv = argv
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.started = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []

    async def _pump(self, stream: asyncio.StreamReader, lines: list[str]) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            lines.append(line)
            if lines is self.stdout and "dialing " in line:
                self.started.set()

    async def __aenter__(self) -> Edge:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.cli", "edge", "run", *self.argv,
            cwd=REPO, env=_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self.proc.stdout, self.stdout)),
            asyncio.create_task(self._pump(self.proc.stderr, self.stderr)),
        ]
        return self

    async def outcome(self) -> int | None:
        """``None`` once the edge serves (its banner), else its exit code."""
        assert self.proc is not None
        banner = asyncio.create_task(self.started.wait())
        exited = asyncio.create_task(self.proc.wait())
        try:
            async with asyncio.timeout(STARTUP):
                await asyncio.wait({banner, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            banner.cancel()
        if self.started.is_set():
            exited.cancel()
            return None
        await asyncio.gather(*self._pumps)
        return exited.result()

    async def stop(self) -> int:
        """SIGTERM (drain and stop cleanly); the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await self.proc.wait()
            await asyncio.gather(*self._pumps)
        return code

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)


@dataclasses.dataclass(frozen=True)
class Setup:
    profile: Path
    credential: Path
    data: Path

    def argv(self, data: Path, *extra: str, cloud: str = "127.0.0.1:1") -> list[str]:
        return [
            "--cloud", cloud, "--insecure",
            "--credential", str(self.credential),
            "--profile", str(self.profile),
            "--data-dir", str(data),
            "--edge-id", "edge-records",
            *extra,
        ]  # fmt: skip


async def serves_then_stops(*argv: str) -> Edge:
    async with Edge(*argv) as edge:
        assert await edge.outcome() is None, "\n".join(edge.stderr)
        assert await edge.stop() == 0, "\n".join(edge.stderr)
    return edge


async def refused(*argv: str) -> str:
    """The one line an edge refused to start with (exit code 65)."""
    async with Edge(*argv) as edge:
        code = await edge.outcome()
    assert code is not None, "the edge started"
    assert code == EXIT_STORE_REFUSED, "\n".join(edge.stderr)
    assert not any("Traceback" in line for line in edge.stderr)
    (line,) = edge.stderr
    assert line.startswith("hplus: error: ")
    return line.removeprefix("hplus: error: ")


async def _fill(ledger_file: Path, entries: int) -> None:
    async with Ledger.open(ledger_file) as ledger:
        for n in range(entries):
            await ledger.begin(f"k-{n}", method=BOOK, fingerprint="f")
            await ledger.succeed(f"k-{n}", HisOutcome(receipt=f"R{n}", result=b"x" * 200))


async def _populate(root: Path) -> Setup:
    # The HIS and the cloud are never reached: the edge starts, retries, and is stopped.
    setup = Setup(
        profile=write_profile(root, "rest", "http://127.0.0.1:9"),
        credential=root / "credential",
        data=root / "edge",
    )
    setup.credential.write_text("h-unused-token\n")
    await serves_then_stops(*setup.argv(setup.data))
    await _fill(setup.data / "ledger.db", 3)
    await serves_then_stops(*setup.argv(setup.data))  # records the clean stop: 3 entries
    return setup


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """A data directory an edge process made, wrote 3 ledger entries to, and stopped."""
    return asyncio.run(_populate(tmp_path_factory.mktemp("edge-records")))


@pytest.fixture
def copy(original: Setup, tmp_path: Path) -> Path:
    data = tmp_path / "edge"
    shutil.copytree(original.data, data)
    return data


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def files(path: Path) -> list[Path]:
    """Every file under ``path``, the profile history in ``config/`` included."""
    return sorted(p for p in path.rglob("*") if p.is_file())


def directories(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_dir())


def history(data: Path) -> str:
    record = json.loads((data / "edge-identity.json").read_text())
    created = record["stores"]["ledger"]["created_at"].replace("T", " ").replace("Z", " UTC")
    stopped = record["last_clean_stop"].replace("T", " ").replace("Z", " UTC")
    return f"created {created}, 3 entries at the last clean stop on {stopped}"


def test_the_stores_and_the_data_directory_are_private(original: Setup) -> None:
    data = original.data
    assert mode(data) == 0o700
    present = files(data)
    assert {"ledger.db", "tasks.db", "edge-identity.json", "r000001.json"} <= {
        p.name for p in present
    }
    for path in present:
        assert mode(path) == 0o600, path
    assert directories(data) == [data / "config"]
    assert mode(data / "config") == 0o700


async def test_a_ledger_truncated_to_zero_bytes_refuses_the_start(
    original: Setup, copy: Path
) -> None:
    (copy / "ledger.db").write_bytes(b"")
    line = await refused(*original.argv(copy))
    assert line == (
        f"{copy / 'ledger.db'}: the ledger is empty but this data directory had one "
        f"({history(copy)}): restore it from backup, or start with --reset-ledger to "
        "archive it and begin a new one"
    )


async def test_a_deleted_ledger_refuses_the_start(original: Setup, copy: Path) -> None:
    (copy / "ledger.db").unlink()
    line = await refused(*original.argv(copy))
    assert line == (
        f"{copy / 'ledger.db'}: the ledger is missing but this data directory had one "
        f"({history(copy)}): restore it from backup, or start with --reset-ledger to "
        "archive it and begin a new one"
    )


async def test_random_bytes_over_a_page_refuse_the_start(original: Setup, copy: Path) -> None:
    with (copy / "ledger.db").open("r+b") as f:
        f.seek(4096)
        f.write(random.Random(5).randbytes(4096))
    line = await refused(*original.argv(copy))
    assert line.startswith(f"{copy / 'ledger.db'}: the ledger is damaged (")
    assert line.endswith(
        "): restore it from backup, or start with --reset-ledger to archive it and begin a new one"
    )


async def test_a_damaged_header_refuses_the_start(original: Setup, copy: Path) -> None:
    with (copy / "tasks.db").open("r+b") as f:
        f.write(b"garbage!" * 8)
    line = await refused(*original.argv(copy))
    assert line == (
        f"{copy / 'tasks.db'}: the task store is damaged (its header is not SQLite's): "
        "restore it from backup, or start with --reset-tasks to archive it and begin a new one"
    )


async def test_a_ledger_from_another_data_directory_refuses_the_start(
    original: Setup, copy: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    await serves_then_stops(*original.argv(other))
    shutil.copyfile(other / "ledger.db", copy / "ledger.db")
    line = await refused(*original.argv(copy))
    assert line.startswith(f"{copy / 'ledger.db'}: the ledger is another data directory's (")
    assert line.endswith(
        "put back this data directory's ledger.db (restore it from backup), or start with "
        "--reset-ledger to archive it and begin a new one"
    )


async def test_a_ledger_written_by_a_newer_schema_refuses_the_start(
    original: Setup, copy: Path
) -> None:
    with contextlib.closing(sqlite3.connect(copy / "ledger.db")) as connection:
        connection.execute("PRAGMA user_version = 2")
    line = await refused(*original.argv(copy))
    assert line == (
        f"{copy / 'ledger.db'}: the ledger was written by a newer release of hplus (schema 2; "
        "this one knows up to 1): run the release that wrote it, or start with --reset-ledger "
        "to archive it and begin a new one"
    )


async def test_reset_ledger_archives_the_old_file_and_starts(original: Setup, copy: Path) -> None:
    for path in (copy, *files(copy)):
        path.chmod(0o755 if path.is_dir() else 0o644)  # as an older release left them
    (copy / "ledger.db").write_bytes(b"")
    edge = await serves_then_stops(*original.argv(copy, "--reset-ledger"))
    archived = [p for p in files(copy) if p.name.startswith("ledger-archived-")]
    assert [p.name for p in archived if p.suffix == ".db"], archived
    assert all(mode(p) == 0o600 for p in files(copy))
    assert mode(copy) == 0o700
    log = "\n".join(edge.stderr)
    assert "tightened to owner-only" in log
    assert "the ledger is empty but this data directory had one" in log
    assert "reset as asked: archived as ledger-archived-" in log
    record = json.loads((copy / "edge-identity.json").read_text())
    assert [a["store"] for a in record["archived"]] == ["ledger"]
    assert record["stores"]["ledger"]["entries_at_last_clean_stop"] == 0
    # The new ledger is this directory's: the next start needs no flag.
    await serves_then_stops(*original.argv(copy))


async def test_reset_flags_need_a_profile(original: Setup, tmp_path: Path) -> None:
    argv = [a for a in original.argv(tmp_path / "edge", "--reset-tasks")]
    argv[argv.index("--profile") : argv.index("--profile") + 2] = ["--hospital", "h-001"]
    async with Edge(*argv) as edge:
        assert await edge.outcome() == 2
    assert edge.stderr == [
        "hplus: error: --reset-tasks needs --profile (an edge without one keeps no stores)"
    ]


@contextlib.asynccontextmanager
async def _booking_world(tmp_path: Path) -> AsyncIterator[tuple[SimBase, CloudNode, Setup]]:
    async with simulator("db") as his, cloud_node(tmp_path / "cloud") as node:
        profile = write_profile(tmp_path, "db", his_url(his))
        hospital_id = load_profile(profile).hospital_id
        assert node.credentials is not None
        credential = tmp_path / "credential"
        credential.write_text((await node.credentials.issue(hospital_id)).token)
        yield his, node, Setup(profile=profile, credential=credential, data=tmp_path / "edge")


async def test_a_retried_booking_is_never_recorded_failed_after_the_ledger_was_emptied(
    tmp_path: Path,
) -> None:
    async with _booking_world(tmp_path) as (his, node, setup):
        assert node.tls is not None
        assert node.router is not None
        router = node.router
        argv = setup.argv(setup.data, "--ca", str(node.tls.ca_cert), cloud=f"localhost:{node.port}")
        argv.remove("--insecure")
        hospital_id = load_profile(setup.profile).hospital_id
        slot = his.core.bookable_slot(patient_id=PATIENT, min_days_ahead=2)
        request = appointment_pb2.BookAppointmentRequest(
            idempotency_key="retried-1",
            slot_id=slot.slot_id,
            patient=common_pb2.PatientRef(patient_id=PATIENT),
        )

        async def connected() -> bool:
            try:
                await router.channel_for(hospital_id)
            except Exception:
                return False
            return True

        async with Edge(*argv) as edge:
            assert await edge.outcome() is None
            await until(connected, STARTUP)
            channel = await router.channel_for(hospital_id)
            await directory_pb2_grpc.DirectoryServiceStub(channel).ListSlots(
                directory_pb2.ListSlotsRequest(schedule_id=slot.schedule_id), timeout=T
            )
            stub = appointment_pb2_grpc.AppointmentServiceStub(channel)
            booked = (await stub.BookAppointment(request, timeout=T)).appointment
            assert await edge.stop() == 0
        backup = tmp_path / "ledger-backup.db"
        shutil.copyfile(setup.data / "ledger.db", backup)  # the operator's nightly backup

        # The ledger is emptied; the cloud, which never got the answer, will retry.
        (setup.data / "ledger.db").write_bytes(b"")
        line = await refused(*argv)
        assert line.startswith(f"{setup.data / 'ledger.db'}: the ledger is empty")
        assert len(his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1

        # Restored from backup, the edge starts and the retry replays the original booking.
        shutil.copyfile(backup, setup.data / "ledger.db")
        async with Edge(*argv) as edge:
            assert await edge.outcome() is None
            await until(connected, STARTUP)
            stub = appointment_pb2_grpc.AppointmentServiceStub(
                await router.channel_for(hospital_id)
            )
            retried = (await stub.BookAppointment(request, timeout=T)).appointment
            got = await stub.GetAppointment(
                appointment_pb2.GetAppointmentRequest(idempotency_key="retried-1"), timeout=T
            )
            assert await edge.stop() == 0
        assert retried.appointment_id == booked.appointment_id
        assert got.operation.state == common_pb2.OPERATION_STATE_SUCCEEDED
        assert len(his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id)) == 1


async def test_damage_found_while_running_fails_calls_with_data_loss_and_shows_in_edge_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A ledger big enough that the running edge has not read (cached) most of its pages.
    (tmp_path / "edge").mkdir()
    await _fill(tmp_path / "edge" / "ledger.db", 300)
    async with hospital("db", tmp_path) as env:
        ledger_file = tmp_path / "edge" / "ledger.db"
        size = ledger_file.stat().st_size
        with ledger_file.open("r+b") as f:
            f.seek(4096)
            f.write(random.Random(11).randbytes(size - 4096))
        slot = env.his.core.bookable_slot(patient_id=PATIENT, min_days_ahead=2)
        with caplog.at_level(logging.ERROR):
            for key in ("k-150", "k-151"):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await env.appointments.GetAppointment(
                        appointment_pb2.GetAppointmentRequest(idempotency_key=key), timeout=T
                    )
                assert info.value.code() == grpc.StatusCode.DATA_LOSS
                assert error_reason(info.value) == "LEDGER_DAMAGED"
            # A new write is refused before the HIS is called: nothing is booked unrecorded.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await env.appointments.BookAppointment(
                    appointment_pb2.BookAppointmentRequest(
                        idempotency_key="after-damage",
                        slot_id=slot.slot_id,
                        patient=common_pb2.PatientRef(patient_id=PATIENT),
                    ),
                    timeout=T,
                )
            assert info.value.code() == grpc.StatusCode.DATA_LOSS
        assert env.his.core.bookings(patient_id=PATIENT, slot_id=slot.slot_id) == []
        damaged = [r for r in caplog.records if "reports the file damaged" in r.getMessage()]
        assert len(damaged) == 1
        info_reply = await env.admin.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=T)
        states = {c.name: c for c in info_reply.components}
        assert states["ledger"].state == admin_pb2.COMPONENT_STATE_NOT_SERVING
        assert str(ledger_file) in states["ledger"].detail
        assert states["tasks"].state == admin_pb2.COMPONENT_STATE_SERVING
        assert states["tunnel"].state == admin_pb2.COMPONENT_STATE_SERVING
        # Reads that need no ledger still work.
        await env.directory.ListDepartments(directory_pb2.ListDepartmentsRequest(), timeout=T)

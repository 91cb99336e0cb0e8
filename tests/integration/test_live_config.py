"""Live configuration on a real edge: ApplyConfig / RollbackConfig / history through the tunnel.

A cloud node, a HIS simulator and the edge run in this event loop (``hospital_env``); the
admin calls go through the node's router and the tunnel, as the cloud makes them.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from hplus.hospital.v1 import admin_pb2, directory_pb2
from tests.integration.hospital_env import SEED, Env, error_reason, field_violations, hospital
from tools.his_sim import RestHis


async def _active(env: Env, revision: int = 0) -> admin_pb2.ConfigProfile:
    reply = await env.admin.GetConfig(admin_pb2.GetConfigRequest(revision=revision), timeout=10)
    return reply.profile


def _content(profile: admin_pb2.ConfigProfile) -> dict[str, Any]:
    content: dict[str, Any] = json_format.MessageToDict(profile.content)
    return content


def _struct(content: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(content)
    return out


async def _apply(
    env: Env, content: dict[str, Any], digest: str, key: str, **extra: Any
) -> admin_pb2.ApplyConfigResponse:
    return await env.admin.ApplyConfig(
        admin_pb2.ApplyConfigRequest(
            idempotency_key=key,
            expected_digest=digest,
            content=_struct(content),
            requested_by="test@ci",
            **extra,
        ),
        timeout=30,
    )


def _pointing_at(content: dict[str, Any], url: str, read_seconds: float) -> dict[str, Any]:
    out = copy.deepcopy(content)
    out["his"]["endpoints"] = [{"name": "sim", "url": url}]
    out["his"]["timeouts"]["read_seconds"] = read_seconds
    return out


def _closed_port_url() -> str:
    """An http URL on which nothing listens (a port bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Traffic:
    """Reads flowing through the tunnel until stopped; every failure is kept."""

    def __init__(self, env: Env, workers: int = 4) -> None:
        self._env = env
        self._stop = asyncio.Event()
        self.ok = 0
        self.failures: list[str] = []
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(workers)]
        self.progress = asyncio.Condition()

    async def _run(self, index: int) -> None:
        directory = self._env.directory
        while not self._stop.is_set():
            try:
                if index % 2:
                    await directory.ListDepartments(
                        directory_pb2.ListDepartmentsRequest(), timeout=20
                    )
                else:
                    await directory.ListDoctors(directory_pb2.ListDoctorsRequest(), timeout=20)
                self.ok += 1
            except grpc.aio.AioRpcError as err:
                self.failures.append(f"{err.code().name}: {err.details()}")
            async with self.progress:
                self.progress.notify_all()

    async def at_least(self, count: int) -> None:
        async with self.progress:
            await asyncio.wait_for(self.progress.wait_for(lambda: self.ok >= count), 60)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_apply_while_calls_flow_swaps_the_his_without_failing_a_call(
    tmp_path: Path,
) -> None:
    async with hospital("rest", tmp_path) as env, RestHis(seed=SEED) as other:
        first = await _active(env)
        base = _content(first)
        urls = [other.base_url, env.his.base_url]
        traffic = _Traffic(env)
        try:
            await traffic.at_least(20)
            digest = first.info.digest
            revisions = [first.info.revision]
            for round_ in range(4):
                target = urls[round_ % 2]
                reply = await _apply(
                    env, _pointing_at(base, target, 4.0 + round_), digest, f"flow-{round_}"
                )
                assert reply.applied
                assert reply.profile.digest != digest
                assert "his-adapter" in reply.reloaded_components
                digest = reply.profile.digest
                revisions.append(reply.profile.revision)
                # Calls that arrive from now on reach the HIS the new profile names.
                used = other if target == other.base_url else env.his
                before = len(used.request_log)
                seen = traffic.ok
                await traffic.at_least(seen + 20)
                assert len(used.request_log) > before
        finally:
            await traffic.stop()
        assert traffic.failures == []
        assert traffic.ok >= 100
        assert revisions == sorted(set(revisions))
        info = await env.admin.GetEdgeInfo(admin_pb2.GetEdgeInfoRequest(), timeout=10)
        assert info.config.digest == digest
        assert info.config.revision == revisions[-1]
        assert env.app.hospital.profile.digest == digest
        assert env.app.hospital.profile.his.timeouts.read_seconds == 7.0
        # The history is on disk, each revision private.
        files = sorted((tmp_path / "edge" / "config").glob("r0*.json"))
        assert len(files) == 5
        files.append(tmp_path / "edge" / "config" / "results.json")
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        assert stat.S_IMODE((tmp_path / "edge" / "config").stat().st_mode) == 0o700


async def test_invalid_profile_and_restart_only_changes_are_refused_with_field_violations(
    tmp_path: Path,
) -> None:
    async with hospital("rest", tmp_path) as env:
        active = await _active(env)
        base = _content(active)
        digest = active.info.digest

        bad = copy.deepcopy(base)
        bad["his"]["timeouts"]["read_seconds"] = -1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, bad, digest, "bad-1")
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == ["content.his.timeouts.read_seconds"]

        missing = copy.deepcopy(base)
        del missing["fields"]["patient"]["phone"]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, missing, digest, "bad-2")
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == ["content.fields.patient.phone"]

        moved = copy.deepcopy(base)
        moved["profile"]["hospital_id"] = "someone-else"
        moved["tasks"]["max_concurrency"] = 7
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, moved, digest, "bad-3")
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == [
            "content.profile.hospital_id",
            "content.tasks.max_concurrency",
        ]
        assert "restart" in (caught.value.details() or "")

        # Nothing changed, and a refused request did not use up its key.
        assert (await _active(env)).info.digest == digest
        fixed = copy.deepcopy(base)
        fixed["his"]["timeouts"]["read_seconds"] = 6
        reply = await _apply(env, fixed, digest, "bad-1")
        assert reply.applied


async def test_digest_mismatch_is_aborted(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        active = await _active(env)
        changed = copy.deepcopy(_content(active))
        cutoff = changed["appointment"]["cancel_cutoff_minutes"]
        changed["appointment"]["cancel_cutoff_minutes"] = cutoff + 15
        stale = "sha256:" + "0" * 64
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, changed, stale, "stale-1")
        assert caught.value.code() is grpc.StatusCode.ABORTED
        assert error_reason(caught.value) == "CONFIG_DIGEST_MISMATCH"
        # Two operators based on the same digest: the second loses.
        assert (await _apply(env, changed, active.info.digest, "op-a")).applied
        again = copy.deepcopy(changed)
        again["appointment"]["cancel_cutoff_minutes"] = cutoff + 30
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, again, active.info.digest, "op-b")
        assert caught.value.code() is grpc.StatusCode.ABORTED
        assert error_reason(caught.value) == "CONFIG_DIGEST_MISMATCH"


async def test_failed_health_gate_rolls_back_and_is_reported(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        active = await _active(env)
        broken = _pointing_at(_content(active), _closed_port_url(), 2.0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, broken, active.info.digest, "gate-1")
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(caught.value) == "CONFIG_ROLLED_BACK"
        assert "his-adapter" in (caught.value.details() or "")
        # The previous profile serves on.
        assert (await _active(env)).info.digest == active.info.digest
        departments = await env.directory.ListDepartments(
            directory_pb2.ListDepartmentsRequest(), timeout=10
        )
        assert departments.departments
        history = await env.admin.ListConfigRevisions(
            admin_pb2.ListConfigRevisionsRequest(), timeout=10
        )
        newest, start = history.revisions[0], history.revisions[1]
        assert newest.rolled_back
        assert not newest.active
        assert newest.idempotency_key == "gate-1"
        assert newest.requested_by == "test@ci"
        assert "his-adapter" in newest.rollback_reason
        assert start.active
        assert start.source == admin_pb2.CONFIG_REVISION_SOURCE_START
        # A retry with the same key gets the original answer, without a second attempt.
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await _apply(env, broken, active.info.digest, "gate-1")
        assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert error_reason(again.value) == "CONFIG_ROLLED_BACK"
        history = await env.admin.ListConfigRevisions(
            admin_pb2.ListConfigRevisionsRequest(), timeout=10
        )
        assert len(history.revisions) == 2


async def test_idempotent_retry_returns_the_original_result(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        active = await _active(env)
        changed = copy.deepcopy(_content(active))
        rate = changed["his"]["limits"]["rate_per_second"]
        changed["his"]["limits"]["rate_per_second"] = rate + 5
        first = await _apply(env, changed, active.info.digest, "same-key")
        assert first.applied
        # The retry carries the digest the original was based on: it is answered from the
        # record, not refused as stale.
        second = await _apply(env, changed, active.info.digest, "same-key")
        assert second == first
        other = copy.deepcopy(changed)
        other["his"]["limits"]["rate_per_second"] = rate + 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, other, active.info.digest, "same-key")
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"
        # The same profile under another key changes nothing.
        unchanged = await _apply(env, changed, first.profile.digest, "other-key")
        assert not unchanged.applied
        assert unchanged.profile.revision == first.profile.revision
        history = await env.admin.ListConfigRevisions(
            admin_pb2.ListConfigRevisionsRequest(), timeout=10
        )
        assert [r.info.revision for r in history.revisions] == [2, 1]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _apply(env, changed, first.profile.digest, "")
        assert field_violations(caught.value) == ["idempotency_key"]


async def test_rollback_to_a_revision(tmp_path: Path) -> None:
    async with hospital("rest", tmp_path) as env:
        start = await _active(env)
        digests = [start.info.digest]
        content = _content(start)
        start_minutes = content["appointment"]["cancel_cutoff_minutes"]
        for minutes in (start_minutes + 30, start_minutes + 60):
            content = copy.deepcopy(content)
            content["appointment"]["cancel_cutoff_minutes"] = minutes
            reply = await _apply(env, content, digests[-1], f"cut-{minutes}")
            digests.append(reply.profile.digest)
        assert env.app.hospital.profile.appointment.cancel_cutoff_minutes == start_minutes + 60

        # Revision 1's content, as the history keeps it.
        kept = await _active(env, revision=1)
        assert kept.info.digest == digests[0]

        back = await env.admin.RollbackConfig(
            admin_pb2.RollbackConfigRequest(
                idempotency_key="rb-1", expected_digest=digests[-1], revision=1
            ),
            timeout=30,
        )
        assert back.applied
        assert back.profile.revision == 4
        assert back.profile.digest == digests[0]
        assert env.app.hospital.profile.appointment.cancel_cutoff_minutes == start_minutes
        # Revision 0: the one active before the active one (revision 3).
        previous = await env.admin.RollbackConfig(
            admin_pb2.RollbackConfigRequest(idempotency_key="rb-2", expected_digest=digests[0]),
            timeout=30,
        )
        assert previous.profile.digest == digests[2]
        history = await env.admin.ListConfigRevisions(
            admin_pb2.ListConfigRevisionsRequest(), timeout=10
        )
        newest = history.revisions[0]
        assert newest.active
        assert newest.source == admin_pb2.CONFIG_REVISION_SOURCE_ROLLBACK
        assert newest.restored_revision == 3
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.admin.RollbackConfig(
                admin_pb2.RollbackConfigRequest(
                    idempotency_key="rb-3", expected_digest=digests[2], revision=99
                ),
                timeout=30,
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        await env.directory.ListDepartments(directory_pb2.ListDepartmentsRequest(), timeout=10)

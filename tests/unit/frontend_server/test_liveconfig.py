"""LiveConfig with parts of our own making (the ProfileParts seam): swap, gate, store."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from frontend_server.liveconfig import ConfigStore, HealthFailure, LiveConfig, RevisionSource
from frontend_server.profile import Profile, load_profile, load_profile_content
from mesh import errors
from mesh.tunnel import TunnelServer

PROFILES = Path(__file__).parents[3] / "frontend_server" / "profiles"
METHOD = "/test.Svc/Echo"


def _profile(read_seconds: float | None = None, **tasks: Any) -> Profile:
    base = load_profile(PROFILES / "city-first-hospital.toml")
    if read_seconds is None and not tasks:
        return base
    content = json.loads(json.dumps(dict(base.content), default=str))
    if read_seconds is not None:
        content["his"]["timeouts"]["read_seconds"] = read_seconds
    content.setdefault("tasks", {}).update(tasks)
    return load_profile_content(content)


class Parts:
    """Parts whose handler answers with their profile's read timeout."""

    components = ("his-adapter",)

    def __init__(self, profile: Profile, checks: list[str | None] | None = None) -> None:
        self.profile = profile
        self.checks = list(checks or [])
        self.closed = asyncio.Event()
        self.activated = 0
        self.hold: asyncio.Event | None = None
        self.registrar = TunnelServer()
        self.registrar.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "test.Svc", {"Echo": grpc.unary_unary_rpc_method_handler(self._echo)}
                )
            ]
        )

    async def _echo(self, request: Any, context: Any) -> float:
        if self.hold is not None:
            await self.hold.wait()
        return self.profile.his.timeouts.read_seconds

    async def check(self) -> None:
        problem = self.checks.pop(0) if self.checks else None
        if problem == "block":
            await asyncio.Event().wait()
        if problem:
            raise HealthFailure("his-adapter", problem)

    def activate(self) -> None:
        self.activated += 1

    async def aclose(self) -> None:
        self.closed.set()


class Edge:
    def __init__(
        self,
        tmp_path: Path,
        first: Parts,
        next_parts: Callable[[Profile], Parts],
        *,
        post_checks: Callable[[], Sequence[str]] = lambda: (),
        limit: int = 20,
        health_seconds: float = 5.0,
    ) -> None:
        self.server = TunnelServer()
        self.built: list[Parts] = []

        def build(profile: Profile) -> Parts:
            parts = next_parts(profile)
            self.built.append(parts)
            return parts

        self.live = LiveConfig(
            server=self.server,
            first=first,
            build=build,
            store=ConfigStore(tmp_path / "config", limit=limit),
            health_seconds=health_seconds,
            drain_seconds=30.0,
            post_checks=post_checks,
        )

    async def call(self) -> Any:
        handler = self.server.lookup(METHOD, [])
        assert handler is not None
        return await handler.unary_unary(None, None)

    async def apply(self, profile: Profile, key: str) -> Any:
        return await self.live.apply(
            idempotency_key=key,
            fingerprint=profile.digest,
            expected_digest=self.live.profile.digest,
            requested_by="tester",
            make_candidate=lambda _active: profile,
        )


async def test_a_call_in_flight_finishes_on_its_profile_and_the_old_parts_close_after_it(
    tmp_path: Path,
) -> None:
    first = Parts(_profile())
    edge = Edge(tmp_path, first, Parts)
    await edge.live.open()
    first.hold = asyncio.Event()
    handler = edge.server.lookup(METHOD, [])
    assert handler is not None
    in_flight = asyncio.create_task(handler.unary_unary(None, None))
    new = _profile(read_seconds=first.profile.his.timeouts.read_seconds + 3)
    outcome = await edge.apply(new, "k1")
    assert outcome.applied
    assert outcome.revision.revision == 2
    assert await edge.call() == new.his.timeouts.read_seconds
    # The old parts wait for the call that started on them.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(first.closed.wait()), 0.2)
    first.hold.set()
    assert await in_flight == first.profile.his.timeouts.read_seconds
    await asyncio.wait_for(first.closed.wait(), 5)
    assert edge.built[0].activated == 1


async def test_a_component_failing_after_the_switch_switches_back(tmp_path: Path) -> None:
    problems: list[str] = []
    first = Parts(_profile())
    edge = Edge(tmp_path, first, Parts, post_checks=lambda: problems)
    await edge.live.open()
    problems.append("ledger: damaged")
    new = _profile(read_seconds=first.profile.his.timeouts.read_seconds + 1)
    with pytest.raises(errors.FailedPrecondition) as caught:
        await edge.apply(new, "k1")
    assert caught.value.reason == "CONFIG_ROLLED_BACK"
    assert "ledger: damaged" in caught.value.message
    assert edge.live.profile is first.profile
    assert first.activated == 1  # pointed back at the old parts
    assert await edge.call() == first.profile.his.timeouts.read_seconds
    await asyncio.wait_for(edge.built[0].closed.wait(), 5)
    newest = edge.live.store.revisions()[0]
    assert newest.rolled_back
    assert newest.rollback_reason == "ledger: damaged"
    assert edge.live.store.active() == edge.live.revision


async def test_a_check_that_never_answers_fails_at_the_deadline(tmp_path: Path) -> None:
    first = Parts(_profile())
    edge = Edge(tmp_path, first, lambda p: Parts(p, ["block"]), health_seconds=0.2)
    await edge.live.open()
    with pytest.raises(errors.FailedPrecondition) as caught:
        await edge.apply(_profile(read_seconds=1.5), "k1")
    assert "deadline" in caught.value.message
    assert edge.built[0].closed.is_set()
    assert edge.live.profile is first.profile


async def test_a_repeat_while_the_original_runs_is_aborted(tmp_path: Path) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    class Slow(Parts):
        async def check(self) -> None:
            started.set()
            await release.wait()

    edge = Edge(tmp_path, Parts(_profile()), Slow)
    await edge.live.open()
    new = _profile(read_seconds=2.5)
    original = asyncio.create_task(edge.apply(new, "k1"))
    await asyncio.wait_for(started.wait(), 5)
    with pytest.raises(errors.Aborted) as caught:
        await edge.apply(new, "k1")
    assert caught.value.reason == "IDEMPOTENCY_KEY_IN_PROGRESS"
    release.set()
    assert (await original).applied


async def test_restart_only_changes_are_refused(tmp_path: Path) -> None:
    first = Parts(_profile())
    edge = Edge(tmp_path, first, Parts)
    await edge.live.open()
    workers = first.profile.tasks.max_concurrency + 1
    with pytest.raises(errors.InvalidArgument) as caught:
        await edge.apply(_profile(max_concurrency=workers), "k1")
    assert [v.field for v in caught.value.field_violations] == ["content.tasks.max_concurrency"]
    assert edge.built == []


async def test_history_is_bounded_private_and_answers_after_a_restart(tmp_path: Path) -> None:
    first = Parts(_profile())
    edge = Edge(tmp_path, first, Parts, limit=3)
    await edge.live.open()
    outcomes = []
    for n in range(5):
        outcomes.append(await edge.apply(_profile(read_seconds=2.0 + n), f"k{n}"))
    kept = [r.revision for r in edge.live.store.revisions()]
    assert kept == [6, 5, 4]
    directory = tmp_path / "config"
    assert sorted(p.name for p in directory.glob("r0*.json")) == [
        "r000004.json",
        "r000005.json",
        "r000006.json",
    ]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700

    # Another process on the same directory: the history and the results are still there.
    again = Edge(tmp_path, Parts(_profile(read_seconds=6.0)), Parts, limit=3)
    await again.live.open()
    assert again.live.revision is not None
    assert again.live.revision.revision == 6
    replay = await again.live.apply(
        idempotency_key="k1",
        fingerprint=_profile(read_seconds=3.0).digest,
        expected_digest="sha256:whatever-the-original-was-based-on",
        requested_by="tester",
        make_candidate=lambda _active: pytest.fail("a replay validates nothing"),
    )
    assert replay.revision.revision == outcomes[1].revision.revision
    assert replay.revision.digest == outcomes[1].revision.digest
    # Started with another profile than the active revision: a new START revision.
    other = Edge(tmp_path, Parts(_profile(read_seconds=9.0)), Parts, limit=3)
    await other.live.open()
    assert other.live.revision is not None
    assert other.live.revision.source is RevisionSource.START
    assert other.live.revision.revision == 7


async def test_rollback_needs_a_revision_in_the_history(tmp_path: Path) -> None:
    first = Parts(_profile())
    edge = Edge(tmp_path, first, Parts)
    await edge.live.open()
    with pytest.raises(errors.NotFound):
        await edge.live.rollback(
            idempotency_key="r1",
            fingerprint="f",
            expected_digest=first.profile.digest,
            requested_by="",
        )
    await edge.apply(_profile(read_seconds=3.0), "k1")
    outcome = await edge.live.rollback(
        idempotency_key="r2",
        fingerprint="f",
        expected_digest=edge.live.profile.digest,
        requested_by="",
    )
    assert outcome.revision.digest == first.profile.digest
    assert outcome.revision.restored_revision == 1
    assert await edge.call() == first.profile.his.timeouts.read_seconds

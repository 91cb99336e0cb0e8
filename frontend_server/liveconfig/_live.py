"""Applying a profile to a running edge: validated, atomic, versioned, health-gated.

:class:`LiveConfig` owns the active profile's parts (built by the composition root through a
``build`` callable: the adapter, its limits, the rules and the servicers) and swaps them:

1. the candidate is validated by the same loader and rules as a start (the caller's
   ``make_candidate``), then checked for changes that only a restart can take;
2. its parts are built in full beside the active ones, and checked (the HIS answers through
   the new adapter settings) within the health deadline; a failure closes them and the old
   profile never stopped serving;
3. the switch is one assignment: calls that arrive afterwards run on the new parts, calls in
   flight finish on the old ones, which are closed once those are done;
4. the edge's components check themselves under the new profile (stores, the HIS again)
   within what is left of the deadline; a failure switches back to the old parts;
5. the outcome is kept in the history (:class:`ConfigStore`) and, by idempotency key, in its
   results, so a retry gets the original answer.

A rolled-back change answers FAILED_PRECONDITION reason ``CONFIG_ROLLED_BACK``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Protocol

from frontend_server.liveconfig._store import ConfigStore, RevisionSource, StoredRevision
from frontend_server.liveconfig._switch import Generation, ServiceSwitch
from frontend_server.profile import (
    ConfigError,
    OperationMode,
    Profile,
    canonical_json,
    load_profile_content,
)
from mesh import errors
from mesh.tunnel import TunnelServer

__all__ = [
    "ApplyOutcome",
    "HealthFailure",
    "LiveConfig",
    "ProfileParts",
    "restart_violations",
]

log = logging.getLogger(__name__)

ROLLED_BACK = "CONFIG_ROLLED_BACK"
DIGEST_MISMATCH = "CONFIG_DIGEST_MISMATCH"
_MAX_KEY = 128


class HealthFailure(Exception):
    """A component failed its check under a profile.

    Args:
        component: e.g. ``"his-adapter"``.
        detail: what its check answered.
    """

    def __init__(self, component: str, detail: str) -> None:
        super().__init__(f"{component}: {detail}")
        self.component = component
        self.detail = detail


class ProfileParts(Protocol):
    """What the composition root builds from one profile."""

    @property
    def profile(self) -> Profile:
        """The profile they were built from."""

    @property
    def registrar(self) -> TunnelServer:
        """Where the profile's servicers registered."""

    @property
    def components(self) -> Sequence[str]:
        """Names of the components they make up (``reloaded_components``)."""

    async def check(self) -> None:
        """Checks the parts work (the HIS answers through them).

        Raises:
            HealthFailure: one does not.
        """

    def activate(self) -> None:
        """Points the edge's long-lived parts (queue, refresher, probes) at these."""

    async def aclose(self) -> None:
        """Closes them (the HIS adapter)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApplyOutcome:
    """The answer of an apply or a rollback."""

    revision: StoredRevision
    """The revision now active (``content`` may be empty in a replayed answer)."""
    applied: bool
    """False when the candidate equals the active profile."""
    reloaded: tuple[str, ...] = ()
    """Components reloaded."""


def _restart(field: str, why: str) -> tuple[str, str]:
    return (
        f"content.{field}",
        f"takes effect only at a restart ({why}): restart the edge with the new profile file",
    )


def restart_violations(old: Profile, new: Profile) -> list[tuple[str, str]]:
    """Changes a running edge cannot take: (field, description) pairs, empty when none."""
    out = []
    if old.hospital_id != new.hospital_id:
        out.append(
            _restart(
                "profile.hospital_id",
                f"the data directory and the tunnel credential belong to {old.hospital_id!r}",
            )
        )
    for name in ("max_concurrency", "lease_seconds"):
        if getattr(old.tasks, name) != getattr(new.tasks, name):
            out.append(_restart(f"tasks.{name}", "the task queue's workers read it at start"))
    was = old.mode("get_changes") is OperationMode.UNSUPPORTED
    now = new.mode("get_changes") is OperationMode.UNSUPPORTED
    if was != now:
        out.append(
            _restart("operations.get_changes", "the directory refresher starts with the edge")
        )
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LiveConfig:
    """The active profile of a running edge and the way to change it.

    Args:
        server: the edge's tunnel server (the hospital services are routed on it).
        first: the parts built from the profile the edge starts with.
        build: builds the parts of another profile (raises ``ConfigError`` for a parameter
            the adapter refuses).
        store: the history (opened by :meth:`open`).
        health_seconds: the deadline of the health gate.
        drain_seconds: how long calls in flight on replaced parts may run before the parts
            are closed anyway.
        post_checks: the edge's own components' problems after a switch (e.g. a damaged
            store), as ``"component: detail"`` lines.
    """

    def __init__(
        self,
        *,
        server: TunnelServer,
        first: ProfileParts,
        build: Callable[[Profile], ProfileParts],
        store: ConfigStore,
        health_seconds: float = 10.0,
        drain_seconds: float = 30.0,
        post_checks: Callable[[], Sequence[str]] = lambda: (),
    ) -> None:
        self._parts = first
        self._generation = Generation(first.registrar, "start")
        self._switch = ServiceSwitch(server, self._generation)
        self._build = build
        self.store = store
        self._health_seconds = health_seconds
        self._drain_seconds = drain_seconds
        self._post_checks = post_checks
        self._lock = asyncio.Lock()
        self._running: set[str] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._revision: StoredRevision | None = None

    # -- what is active ----------------------------------------------------------------

    @property
    def parts(self) -> ProfileParts:
        """The active profile's parts."""
        return self._parts

    @property
    def profile(self) -> Profile:
        """The active profile."""
        return self._parts.profile

    @property
    def revision(self) -> StoredRevision | None:
        """The active revision (``None`` before :meth:`open`)."""
        return self._revision

    @contextlib.contextmanager
    def using(self) -> Iterator[ProfileParts]:
        """The active parts, counted as one call until the block ends (task attempts)."""
        parts, generation = self._parts, self._generation
        with generation.counted():
            yield parts

    async def open(self) -> None:
        """Reads the history and records the start profile (unless it is the active one)."""
        await asyncio.to_thread(self.store.open)
        active = self.store.active()
        profile = self.profile
        if active is not None and active.digest == profile.digest:
            self._revision = active
            return
        if active is not None:
            log.warning(
                "config: starting with the profile file (%s), not revision %d applied live "
                "(%s): update the file to keep a live change across restarts",
                profile.digest,
                active.revision,
                active.digest,
            )
        self._revision = await self._record(profile, source=RevisionSource.START)

    async def _record(self, profile: Profile, **fields: Any) -> StoredRevision:
        return await asyncio.to_thread(
            self.store.record,
            profile_id=profile.profile_id,
            version=profile.version,
            digest=profile.digest,
            template_id=profile.template_id,
            applied_at=_now(),
            content=_plain(profile),
            **fields,
        )

    async def aclose(self) -> None:
        """Waits for replaced parts to close, then closes the active ones."""
        while self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        await self._parts.aclose()

    # -- changes -----------------------------------------------------------------------

    async def apply(
        self,
        *,
        idempotency_key: str,
        fingerprint: str,
        expected_digest: str,
        requested_by: str,
        make_candidate: Callable[[Profile], Profile],
    ) -> ApplyOutcome:
        """Applies the profile ``make_candidate`` derives from the active one.

        Args:
            idempotency_key: the request's key (required).
            fingerprint: a digest of the request's parameters (a reused key with other
                parameters is refused).
            expected_digest: the active profile's digest the change is based on.
            requested_by: who asked.
            make_candidate: validates the request into the new profile (raises
                ``InvalidArgument`` with field violations).

        Raises:
            errors.Aborted: ``CONFIG_DIGEST_MISMATCH``, or the key is being applied now.
            errors.InvalidArgument: invalid profile, a change that needs a restart, or the
                key was used with other parameters.
            errors.FailedPrecondition: ``CONFIG_ROLLED_BACK``.
        """
        async with self._operation(idempotency_key, fingerprint) as replay:
            if replay is not None:
                return replay
            self._check_digest(expected_digest)
            candidate = make_candidate(self.profile)
            return await self._change(
                candidate,
                key=idempotency_key,
                fingerprint=fingerprint,
                requested_by=requested_by,
                source=RevisionSource.APPLY,
            )

    async def rollback(
        self,
        *,
        idempotency_key: str,
        fingerprint: str,
        expected_digest: str,
        requested_by: str,
        revision: int = 0,
    ) -> ApplyOutcome:
        """Makes revision ``revision`` (0: the one before the active) active again.

        Raises:
            errors.NotFound: no such revision in the history.
            the errors of :meth:`apply`.
        """
        async with self._operation(idempotency_key, fingerprint) as replay:
            if replay is not None:
                return replay
            self._check_digest(expected_digest)
            target = self._target(revision)
            try:
                candidate = load_profile_content(
                    target.content, source=f"revision {target.revision}"
                )
            except ConfigError as err:
                raise errors.FailedPrecondition(
                    f"revision {target.revision} is no longer a valid profile: {err}",
                    reason="CONFIG_REVISION_INVALID",
                ) from err
            return await self._change(
                candidate,
                key=idempotency_key,
                fingerprint=fingerprint,
                requested_by=requested_by,
                source=RevisionSource.ROLLBACK,
                restored=target.revision,
            )

    def _check_digest(self, expected: str) -> None:
        if not expected:
            raise errors.InvalidArgument(field_violations=[("expected_digest", "required")])
        if expected != self.profile.digest:
            raise errors.Aborted(
                "the active profile has changed: read it again", reason=DIGEST_MISMATCH
            )

    def _target(self, revision: int) -> StoredRevision:
        active = self._revision
        if revision:
            found = self.store.get(revision)
            if found is None:
                raise errors.NotFound(
                    f"revision {revision} is not in this edge's history",
                    resource=errors.Resource(
                        resource_type="config revision",
                        resource_name=str(revision),
                        owner="",
                        description="see ListConfigRevisions",
                    ),
                )
            return found
        older = [
            r
            for r in self.store.revisions()
            if not r.rolled_back and (active is None or r.revision < active.revision)
        ]
        if not older:
            raise errors.NotFound("no earlier revision in this edge's history")
        return older[0]

    @contextlib.asynccontextmanager
    async def _operation(self, key: str, fingerprint: str) -> AsyncIterator[ApplyOutcome | None]:
        if not key:
            raise errors.InvalidArgument(field_violations=[("idempotency_key", "required")])
        if len(key) > _MAX_KEY or not key.isascii() or not key.isprintable():
            raise errors.InvalidArgument(
                field_violations=[
                    ("idempotency_key", f"at most {_MAX_KEY} printable ASCII characters")
                ]
            )
        if key in self._running:
            raise errors.Aborted(
                "this change is being applied now",
                reason="IDEMPOTENCY_KEY_IN_PROGRESS",
                retry_delay=1.0,
            )
        self._running.add(key)
        try:
            async with self._lock:
                yield _replay(self.store.result(key), fingerprint)
        finally:
            self._running.discard(key)

    async def _change(
        self,
        candidate: Profile,
        *,
        key: str,
        fingerprint: str,
        requested_by: str,
        source: RevisionSource,
        restored: int = 0,
    ) -> ApplyOutcome:
        old_parts, old_generation = self._parts, self._generation
        violations = restart_violations(old_parts.profile, candidate)
        if violations:
            raise errors.InvalidArgument(field_violations=violations)
        active = self._revision
        assert active is not None, "open() first"
        if candidate.digest == old_parts.profile.digest:
            outcome = ApplyOutcome(revision=active, applied=False)
            await self._remember(key, fingerprint, outcome=outcome)
            return outcome
        try:
            parts = self._build(candidate)
        except ConfigError as err:
            field = f"content.{err.key}" if err.key else "content"
            raise errors.InvalidArgument(field_violations=[(field, err.problem)]) from err
        deadline = asyncio.get_running_loop().time() + self._health_seconds
        fields = {
            "source": source,
            "requested_by": requested_by,
            "idempotency_key": key,
            "restored_revision": restored,
        }
        # Stage 1: the new parts, before any call runs on them.
        problem = await self._gate(parts, deadline, post=False)
        if problem is None:
            generation = Generation(parts.registrar, f"digest {candidate.digest[:19]}")
            parts.activate()
            self._switch.switch(generation)
            self._parts, self._generation = parts, generation
            # Stage 2: the edge's components, under the new profile.
            problem = await self._gate(parts, deadline, post=True)
            if problem is not None:
                old_parts.activate()
                self._switch.switch(old_generation)
                self._parts, self._generation = old_parts, old_generation
                self._retire(parts, generation)
        else:
            await parts.aclose()
        if problem is not None:
            log.warning("config: %s rolled back: %s", candidate.digest, problem)
            await self._record(candidate, rolled_back=True, rollback_reason=problem, **fields)
            message = f"rolled back to revision {active.revision}: {problem}"
            await self._remember(
                key,
                fingerprint,
                error={"code": "FAILED_PRECONDITION", "reason": ROLLED_BACK, "message": message},
            )
            raise errors.FailedPrecondition(message, reason=ROLLED_BACK)
        self._retire(old_parts, old_generation)
        self._revision = await self._record(candidate, **fields)
        log.info(
            "config: revision %d active (%s, %s by %s)",
            self._revision.revision,
            candidate.digest,
            source.value,
            requested_by or "-",
        )
        outcome = ApplyOutcome(
            revision=self._revision, applied=True, reloaded=tuple(parts.components)
        )
        await self._remember(key, fingerprint, outcome=outcome)
        return outcome

    async def _gate(self, parts: ProfileParts, deadline: float, *, post: bool) -> str | None:
        """The first problem found, or ``None`` when every check passed in time."""
        try:
            async with asyncio.timeout_at(deadline):
                if post:
                    found = list(self._post_checks())
                    if found:
                        return found[0]
                await parts.check()
        except HealthFailure as err:
            return str(err)
        except TimeoutError:
            return "health check: no answer within the deadline"
        return None

    def _retire(self, parts: ProfileParts, generation: Generation) -> None:
        async def retire() -> None:
            if not await generation.drained(self._drain_seconds):
                log.warning(
                    "config: %d call(s) still on the replaced profile after %.0f s; closing it",
                    generation.calls,
                    self._drain_seconds,
                )
            try:
                await parts.aclose()
            except Exception:
                log.exception("config: closing the replaced profile's parts failed")

        task = asyncio.get_running_loop().create_task(retire(), name="config-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _remember(
        self,
        key: str,
        fingerprint: str,
        *,
        outcome: ApplyOutcome | None = None,
        error: dict[str, str] | None = None,
    ) -> None:
        result: dict[str, Any] = {"fingerprint": fingerprint}
        if outcome is not None:
            revision = dataclasses.replace(outcome.revision, content={}).to_json()
            result["outcome"] = {
                "revision": revision,
                "applied": outcome.applied,
                "reloaded": list(outcome.reloaded),
            }
        if error is not None:
            result["error"] = error
        await asyncio.to_thread(self.store.remember, key, result)


def _replay(found: dict[str, Any] | None, fingerprint: str) -> ApplyOutcome | None:
    if found is None:
        return None
    if found.get("fingerprint") != fingerprint:
        raise errors.InvalidArgument(
            "idempotency_key: already used for another change",
            reason="IDEMPOTENCY_KEY_REUSED",
            field_violations=[("idempotency_key", "already used for another change")],
        )
    error = found.get("error")
    if error is not None:
        raise errors.error_for(error["code"])(error["message"], reason=error.get("reason", ""))
    outcome = found["outcome"]
    return ApplyOutcome(
        revision=StoredRevision.from_json(outcome["revision"]),
        applied=bool(outcome["applied"]),
        reloaded=tuple(outcome["reloaded"]),
    )


def _plain(profile: Profile) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(canonical_json(profile.content))
    return loaded

"""The cloud's side of edge upgrades: the two EdgeService RPCs and the health hook.

`UpgradeHandlers` is plugged into the EdgeService servicer (which authenticates the
hospital credential and wraps everything with the cloud's error mapping): every method
takes the authenticated ``hospital_id`` and raises `mesh.errors` tree errors.

* ``get_upgrade_manifest``: what the live rollout offers this hospital now — a DELTA from
  the exact package the edge runs (``current_package_id``) when one is stored, with the
  FULL package as fallback; else the FULL package; nothing when the hospital's wave is not
  open, the rollout is paused or over, or the edge is already current.
* ``download_upgrade``: a package's bytes from an offset, CRC32C per chunk, paced by the
  node's shared byte bucket (``[upgrades] node_max_bytes_per_second``) and by the edge's
  own cap (``max_bytes_per_second``); at most ``max_downloads_per_hospital`` streams per
  hospital.
* ``record_health``: the upgrade part of ``ReportHealth`` (versions, slots, the last
  install attempt with its reason in ``ErrorInfo``) moves the rollout; returns
  ``upgrade_available`` for the response.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from typing import IO

import semver
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from google.type import timeofday_pb2

from cloud.config import UpgradesConfig
from cloud.upgrades._bucket import ByteBucket
from cloud.upgrades._rollouts import EdgeReport, Rollouts, newer
from cloud.upgrades._store import DELTA, DOMAIN, FULL, PackageStore, StoredPackage
from hplus.cloud.v1 import common_pb2, edge_pb2
from mesh import errors
from mesh.packages import crc32c

__all__ = ["DEFAULT_CHUNK", "MAX_CHUNK", "MIN_CHUNK", "UpgradeHandlers"]

log = logging.getLogger("cloud.upgrades")

DEFAULT_CHUNK = 256 * 1024
"""Chunk size when the edge gives no hint (edge.proto)."""
MAX_CHUNK = 1024 * 1024
"""Largest chunk, whatever the hint (edge.proto)."""
MIN_CHUNK = 16 * 1024
"""Smallest chunk: a smaller hint is raised to it (a stream of tiny chunks costs the node
a message each for nothing)."""
_MAX_ID = 128
_KIND = {FULL: edge_pb2.PACKAGE_KIND_FULL, DELTA: edge_pb2.PACKAGE_KIND_DELTA}


def _digest(sha256: str) -> common_pb2.Digest:
    return common_pb2.Digest(
        algorithm=common_pb2.DIGEST_ALGORITHM_SHA256, value=bytes.fromhex(sha256)
    )


def _time_of_day(text: str) -> timeofday_pb2.TimeOfDay:
    hours, minutes = text.split(":")
    return timeofday_pb2.TimeOfDay(hours=int(hours), minutes=int(minutes))


def _package(p: StoredPackage) -> edge_pb2.UpgradePackage:
    return edge_pb2.UpgradePackage(
        package_id=p.package_id,
        kind=_KIND[p.kind],
        version=p.version,
        base_version=p.base_version,
        size_bytes=p.size,
        digest=_digest(p.sha256),
    )


def _edge_id(value: str, violations: list[tuple[str, str]]) -> None:
    if not value or len(value) > _MAX_ID:
        violations.append(("edge_id", f"required, 1 to {_MAX_ID} characters"))


class UpgradeHandlers:
    """The upgrade RPCs of ``EdgeService`` (see the module docstring).

    Args:
        store: the package store.
        rollouts: the rollouts.
        config: ``[upgrades]``.
        clock: the current time (tests).
    """

    def __init__(
        self,
        store: PackageStore,
        rollouts: Rollouts,
        config: UpgradesConfig,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._store = store
        self._rollouts = rollouts
        self._config = config
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.node_bucket = ByteBucket(config.node_max_bytes_per_second)
        self._streams: dict[str, int] = {}
        self.bytes_sent = 0
        """Package bytes sent by this node (all streams), for benchmarks and status."""

    @property
    def rollouts(self) -> Rollouts:
        """The rollouts these handlers serve (for status and tests)."""
        return self._rollouts

    def downloads(self, hospital_id: str) -> int:
        """Download streams ``hospital_id`` holds on this node now."""
        return self._streams.get(hospital_id, 0)

    def _next_check(self) -> duration_pb2.Duration:
        d = duration_pb2.Duration()
        d.FromNanoseconds(int(self._config.check_interval * 1e9))
        return d

    async def get_upgrade_manifest(
        self, request: edge_pb2.GetUpgradeManifestRequest, hospital_id: str
    ) -> edge_pb2.GetUpgradeManifestResponse:
        """What ``hospital_id``'s edge should install now (unset: nothing)."""
        violations: list[tuple[str, str]] = []
        _edge_id(request.edge_id, violations)
        try:
            semver.Version.parse(request.current_version)
        except (ValueError, TypeError):
            violations.append(("current_version", "must be a semantic version, e.g. 1.4.2"))
        if len(request.current_package_id) > _MAX_ID:
            violations.append(("current_package_id", f"at most {_MAX_ID} characters"))
        if len(request.platform) > 64:
            violations.append(("platform", "at most 64 characters"))
        if violations:
            raise errors.InvalidArgument(field_violations=violations)
        response = edge_pb2.GetUpgradeManifestResponse(next_check_after=self._next_check())
        found = await self._rollouts.assignment(hospital_id)
        if found is None:
            return response
        rollout, _ = found
        if not newer(rollout.target_version, request.current_version):
            # Already there (or past it): nothing to install, and nothing failed.
            await self._rollouts.finish(
                rollout.rollout_id,
                hospital_id,
                request.edge_id,
                ok=True,
                reason="ALREADY_CURRENT",
                message=f"runs {request.current_version}",
            )
            return response
        full = await self._store.full(rollout.target_version)
        delta = None
        if request.current_package_id:
            delta = await self._store.delta_for(full, request.current_package_id)
        manifest = edge_pb2.UpgradeManifest(
            rollout_id=rollout.rollout_id,
            target_version=full.version,
            target_contract_release=full.contract_release,
            package=_package(delta or full),
        )
        if delta is not None:
            manifest.fallback_package.CopyFrom(_package(full))
        if rollout.window is not None:
            manifest.window_start.CopyFrom(_time_of_day(rollout.window[0]))
            manifest.window_end.CopyFrom(_time_of_day(rollout.window[1]))
        manifest.health_gate_timeout.FromNanoseconds(int(self._config.health_gate_timeout * 1e9))
        expire = timestamp_pb2.Timestamp()
        expire.FromDatetime(self._clock() + dt.timedelta(seconds=self._config.manifest_ttl))
        manifest.expire_time.CopyFrom(expire)
        await self._rollouts.offered(rollout.rollout_id, hospital_id, request.edge_id)
        response.manifest.CopyFrom(manifest)
        return response

    async def download_upgrade(
        self, request: edge_pb2.DownloadUpgradeRequest, hospital_id: str
    ) -> AsyncIterator[edge_pb2.DownloadUpgradeResponse]:
        """The package's bytes from ``request.offset`` (see the module docstring)."""
        violations: list[tuple[str, str]] = []
        _edge_id(request.edge_id, violations)
        if not request.package_id or len(request.package_id) > _MAX_ID:
            violations.append(("package_id", f"required, 1 to {_MAX_ID} characters"))
        if request.offset < 0:
            violations.append(("offset", "must be >= 0"))
        if request.chunk_size_hint < 0:
            violations.append(("chunk_size_hint", "must be >= 0 (0: the default)"))
        if request.max_bytes_per_second < 0:
            violations.append(("max_bytes_per_second", "must be >= 0 (0: no cap)"))
        expected = request.expected_digest if request.HasField("expected_digest") else None
        if expected is not None and (
            expected.algorithm != common_pb2.DIGEST_ALGORITHM_SHA256 or len(expected.value) != 32
        ):
            violations.append(("expected_digest", "must be a SHA-256 digest of 32 bytes"))
        if violations:
            raise errors.InvalidArgument(field_violations=violations)
        package = await self._store.get(request.package_id)
        if package is None:
            raise errors.NotFound(
                f"no upgrade package {request.package_id!r}",
                reason="NO_SUCH_PACKAGE",
                domain=DOMAIN,
            )
        if expected is not None and expected.value.hex() != package.sha256:
            raise errors.FailedPrecondition(
                f"package {package.package_id} has digest {package.sha256[:12]}…, not the "
                f"expected {expected.value.hex()[:12]}…: start the download again",
                reason="DIGEST_CHANGED",
                domain=DOMAIN,
            )
        if request.offset > package.size:
            raise errors.OutOfRange(
                f"offset {request.offset} is past the end of the package ({package.size} bytes)",
                reason="OFFSET_PAST_END",
                domain=DOMAIN,
            )
        held = self._streams.get(hospital_id, 0)
        if held >= self._config.max_downloads_per_hospital:
            log.warning(
                "hospital %s refused a download: %d streams already (max %d)",
                hospital_id,
                held,
                self._config.max_downloads_per_hospital,
            )
            raise errors.ResourceExhausted(
                f"{held} downloads of this hospital are running "
                f"(max {self._config.max_downloads_per_hospital})",
                reason="TOO_MANY_DOWNLOADS",
                domain=DOMAIN,
                retry_delay=5.0,
            )
        chunk = request.chunk_size_hint or DEFAULT_CHUNK
        chunk = max(MIN_CHUNK, min(MAX_CHUNK, chunk))
        own = ByteBucket(request.max_bytes_per_second, burst=chunk)
        self._streams[hospital_id] = held + 1
        try:
            try:
                source: IO[bytes] = package.path.open("rb")
            except OSError as err:
                log.error("package file %s cannot be read: %s", package.path, err)
                raise errors.Unavailable(
                    "the package's file cannot be read on this node", reason="PACKAGE_UNREADABLE"
                ) from None
            with source:
                source.seek(request.offset)
                offset = request.offset
                while offset < package.size:
                    data = await asyncio.to_thread(source.read, min(chunk, package.size - offset))
                    if not data:
                        log.error("package file %s is shorter than recorded", package.path)
                        raise errors.DataLoss(
                            "the package's file is damaged on this node", reason="PACKAGE_DAMAGED"
                        )
                    await own.take(len(data))
                    await self.node_bucket.take(len(data))
                    yield edge_pb2.DownloadUpgradeResponse(
                        offset=offset, data=data, total_size=package.size, crc32c=crc32c(data)
                    )
                    offset += len(data)
                    self.bytes_sent += len(data)
        finally:
            left = self._streams[hospital_id] - 1
            if left:
                self._streams[hospital_id] = left
            else:
                del self._streams[hospital_id]

    async def record_health(self, request: edge_pb2.ReportHealthRequest, hospital_id: str) -> bool:
        """Keep the upgrade part of a health report; returns ``upgrade_available``."""
        if not request.edge_id or len(request.edge_id) > _MAX_ID:
            raise errors.InvalidArgument(
                field_violations=[("edge_id", f"required, 1 to {_MAX_ID} characters")]
            )
        u = request.upgrade
        attempt_at = None
        ok: bool | None = None
        reason = message = version = package_id = kind = ""
        if u.HasField("last_attempt_time"):
            attempt_at = u.last_attempt_time.ToDatetime(tzinfo=dt.UTC)
            ok = u.last_attempt_status.code == 0
            message = u.last_attempt_status.message
            for detail in u.last_attempt_status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason = info.reason
                    version = info.metadata.get("version", "")
                    package_id = info.metadata.get("package_id", "")
                    kind = info.metadata.get("package_kind", "")
            if not ok:
                log.warning(
                    "edge %s of %s: upgrade to %s refused or rolled back: %s [%s]",
                    request.edge_id,
                    hospital_id,
                    version or "?",
                    message,
                    reason,
                )
        await self._rollouts.record_report(
            EdgeReport(
                hospital_id=hospital_id,
                edge_id=request.edge_id,
                software_version=request.software_version,
                contract_release=request.contract_release,
                standby_version=u.standby_version,
                pending_package_id=u.pending_package_id,
                attempt_ok=ok,
                attempt_at=attempt_at,
                reason=reason,
                message=message,
                attempt_version=version,
                package_id=package_id,
                package_kind=kind,
            )
        )
        found = await self._rollouts.assignment(hospital_id)
        return found is not None and newer(found[0].target_version, request.software_version)

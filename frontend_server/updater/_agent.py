"""The edge's upgrade agent: ask, download, verify, install into the idle slot, switch.

One check (`UpgradeAgent.check_once`):

1. Ask ``GetUpgradeManifest`` with the running version and the id of the package it was
   installed from (the cloud picks the delta built for exactly that file).
2. Download the manifest's package into ``DATA_DIR/upgrades/downloads``: resumable (the
   partial file's length is the offset; a side file names the package and digest it
   belongs to), each chunk's CRC32C checked before it is stored, the expected digest sent
   so the cloud refuses to append another package's bytes, the size bounded.
3. A DELTA is applied to the installed package and the result verified; *any* failure of
   the delta (download, apply, verification) is reported and the FULL fallback is fetched.
4. `mesh.packages.verify_package` with the running version (no downgrade) and the
   announced digest: a refusal is reported with its reason and logged; nothing installs.
5. Outside the maintenance window the verified package waits (the next check finds it
   complete and does not download again); inside, it goes to the idle slot and the
   supervisor is asked to switch (``SlotsApi.request_switch``), which applies the health
   gate and rolls back by itself. The switch's outcome is reported when known
   (`report_switch`).

Every refusal and outcome reaches the cloud as the ``UpgradeHealth`` of a ``ReportHealth``
(``last_attempt_status`` with an ``ErrorInfo``: reason, package id and kind, version).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import logging
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from frontend_server.updater._seams import SlotsApi, SwitchAttempt, SwitchRefused, UpgradeUplink
from hplus.cloud.v1 import common_pb2, edge_pb2
from mesh import errors
from mesh.files import make_private_dir
from mesh.packages import (
    MAX_PACKAGE_BYTES,
    PackageError,
    TrustRoot,
    VerifiedPackage,
    apply_delta,
    crc32c,
    package_id,
    verify_package,
)
from mesh.retry import RetryPolicy, is_transient

__all__ = ["CheckResult", "Outcome", "UpdaterConfig", "UpgradeAgent", "in_window"]

log = logging.getLogger("frontend_server.updater")

DOMAIN = "upgrades.hplus"
_DEFAULT_CHECK = 900.0


def _platform() -> str:
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"{sys.platform}-{machine.lower()}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UpdaterConfig:
    """How the agent downloads and what it trusts (the edge's ``[upgrade]``)."""

    edge_id: str
    """This edge's id (as in its tunnel hello)."""
    data_dir: Path
    """The edge's data directory; downloads go to ``upgrades/`` in it."""
    trust: TrustRoot
    """The root keys packages must be certified under."""
    zone: dt.tzinfo = dt.UTC
    """The hospital's time zone (the maintenance window is hospital local time)."""
    max_package_bytes: int = MAX_PACKAGE_BYTES
    """Largest package (or delta, or delta result) accepted."""
    max_bytes_per_second: int = 0
    """Download bandwidth cap the hospital sets (0: none); the cloud paces to it."""
    chunk_size_hint: int = 0
    """Preferred chunk size (0: the cloud's default)."""
    check_interval: float = _DEFAULT_CHECK
    """Seconds between checks when the cloud does not say."""
    call_timeout: float = 30.0
    """Deadline of ``GetUpgradeManifest``."""
    retry: RetryPolicy = dataclasses.field(
        default_factory=lambda: RetryPolicy(initial=0.2, maximum=10.0, deadline=None, attempts=6)
    )
    """Retries of one download (transient errors, damaged chunks, streams cut short)."""
    platform: str = dataclasses.field(default_factory=_platform)
    """``<os>-<arch>`` sent with each check."""


class Outcome(enum.StrEnum):
    """What one check did."""

    UP_TO_DATE = "up-to-date"
    """The cloud offers nothing."""
    WAITING_FOR_WINDOW = "waiting-for-window"
    """Verified and kept; the switch waits for the maintenance window."""
    SWITCH_REQUESTED = "switch-requested"
    """Installed into the idle slot; the supervisor switches and applies the health gate."""
    REFUSED = "refused"
    """The package was refused (reason reported); nothing installed."""
    RETRY_LATER = "retry-later"
    """The download could not finish now (the cloud unreachable); the partial file stays."""
    EXPIRED = "expired"
    """The manifest had expired; ask again."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, and when to check next."""

    outcome: Outcome
    next_check: float
    version: str = ""
    reason: str = ""
    bytes_downloaded: int = 0
    """Bytes received in this check (delta and full)."""


def in_window(now: dt.time, start: dt.time, end: dt.time) -> bool:
    """Whether ``now`` is in ``[start, end)``; a window may wrap midnight (22:00-04:00)."""
    if start <= end:
        return start <= now < end
    return now >= start or now < end


class _Retryable(Exception):
    """A download attempt ended early in a way another attempt may fix."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Unreachable(Exception):
    """The cloud could not be reached for the whole retry policy."""


class UpgradeAgent:
    """The upgrade agent (see the module docstring).

    Args:
        config: what it trusts, where it downloads.
        uplink: the calls to the cloud.
        slots: the A/B slots.
        clock: the current time (tests).
    """

    def __init__(
        self,
        config: UpdaterConfig,
        uplink: UpgradeUplink,
        slots: SlotsApi,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.config = config
        self._uplink = uplink
        self._slots = slots
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._dir = config.data_dir / "upgrades"
        self._downloads = self._dir / "downloads"
        self._pending = ""
        self._pending_bytes = 0
        self._last_status: status_pb2.Status | None = None
        self._last_time: dt.datetime | None = None
        self._reported_switch: dt.datetime | None = None
        self._ids: dict[tuple[Path, int, float], str] = {}
        self._received = 0
        self.refusals: list[tuple[str, str]] = []
        """``(package kind, reason)`` of every refusal, in order (tests, status)."""
        self._stop = asyncio.Event()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Check until `stop`; the cloud says how long to wait between checks."""
        await self.report_switch()
        while not self._stop.is_set():
            try:
                result = await self.check_once()
                wait = result.next_check
            except errors.StatusError as err:
                log.warning("upgrade check failed: %s", err)
                wait = self.config.check_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stop.wait()

    def stop(self) -> None:
        """End `run`."""
        self._stop.set()

    # -- one check -----------------------------------------------------------------------

    def _package_id(self, path: Path | None, version: str) -> str:
        if path is None:
            return ""
        try:
            st = path.stat()
        except OSError:
            return ""
        key = (path, st.st_size, st.st_mtime)
        if key not in self._ids:
            h = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            self._ids[key] = package_id(version, h.hexdigest())
        return self._ids[key]

    async def check_once(self) -> CheckResult:
        """Ask, and act on the answer (see the module docstring)."""
        running = self._slots.running()
        self._received = 0
        current_id = await asyncio.to_thread(
            self._package_id, running.package_path, running.version
        )
        response = await self._uplink.get_upgrade_manifest(
            edge_pb2.GetUpgradeManifestRequest(
                edge_id=self.config.edge_id,
                current_version=running.version,
                current_package_id=current_id,
                platform=self.config.platform,
            )
        )
        wait = (
            response.next_check_after.ToTimedelta().total_seconds()
            if response.HasField("next_check_after")
            else self.config.check_interval
        ) or self.config.check_interval
        if not response.HasField("manifest"):
            return CheckResult(Outcome.UP_TO_DATE, wait)
        m = response.manifest
        if m.HasField("expire_time") and m.expire_time.ToDatetime(tzinfo=dt.UTC) < self._clock():
            return CheckResult(Outcome.EXPIRED, 0.0)
        full = m.fallback_package if m.HasField("fallback_package") else m.package
        verified: tuple[Path, VerifiedPackage] | None = None
        if m.package.kind == edge_pb2.PACKAGE_KIND_DELTA and m.HasField("fallback_package"):
            verified = await self._try_delta(m, running.version, running.package_path)
        if verified is None:
            try:
                path = await self._download(full)
            except PackageError as err:
                await self._refused(full, err)
                return CheckResult(Outcome.REFUSED, wait, full.version, err.reason, self._received)
            except _Unreachable as err:
                log.warning("download of %s stopped: %s (will resume)", full.package_id, err)
                return CheckResult(Outcome.RETRY_LATER, wait, full.version, "", self._received)
            try:
                result = await asyncio.to_thread(self._verify, path, full, running.version)
            except PackageError as err:
                path.unlink(missing_ok=True)
                await self._refused(full, err)
                return CheckResult(Outcome.REFUSED, wait, full.version, err.reason, self._received)
            verified = (path, result)
        path, result = verified
        if m.HasField("window_start") and m.HasField("window_end"):
            now = self._clock().astimezone(self.config.zone).time()
            start = dt.time(m.window_start.hours, m.window_start.minutes)
            end = dt.time(m.window_end.hours, m.window_end.minutes)
            if not in_window(now, start, end):
                log.info(
                    "upgrade to %s verified; waiting for the maintenance window %s-%s",
                    result.manifest.version,
                    start.strftime("%H:%M"),
                    end.strftime("%H:%M"),
                )
                return CheckResult(
                    Outcome.WAITING_FOR_WINDOW, wait, full.version, "", self._received
                )
        timeout = m.health_gate_timeout.ToTimedelta().total_seconds() or 300.0
        try:
            await asyncio.to_thread(self._slots.install, path, result)
            log.info(
                "upgrade to %s installed in the idle slot; switching (health gate %.0fs)",
                result.manifest.version,
                timeout,
            )
            self._pending = full.package_id
            self._slots.request_switch(timeout)
        except SwitchRefused as err:
            await self._refused(full, PackageError(err.reason, err.message))
            return CheckResult(Outcome.REFUSED, wait, full.version, err.reason, self._received)
        return CheckResult(Outcome.SWITCH_REQUESTED, wait, full.version, "", self._received)

    async def _try_delta(
        self, m: edge_pb2.UpgradeManifest, version: str, base: Path | None
    ) -> tuple[Path, VerifiedPackage] | None:
        delta, full = m.package, m.fallback_package
        try:
            if base is None:
                raise PackageError("DELTA_BASE_MISMATCH", "the installed package is unknown")
            try:
                path = await self._download(delta)
            except _Unreachable as err:
                raise PackageError(
                    "DOWNLOAD_FAILED", f"the delta did not download: {err}"
                ) from None
            target = self._downloads / f"{full.package_id}.pkg"
            result = await asyncio.to_thread(self._rebuild, base, path, target, full, version)
            path.unlink(missing_ok=True)
            return target, result
        except PackageError as err:
            log.warning(
                "delta %s refused (%s); falling back to the full package %s",
                delta.package_id,
                err,
                full.package_id,
            )
            await self._refused(delta, err)
            self._discard(delta.package_id)
            return None

    def _rebuild(
        self, base: Path, delta: Path, target: Path, full: edge_pb2.UpgradePackage, version: str
    ) -> VerifiedPackage:
        data = apply_delta(
            base.read_bytes(), delta.read_bytes(), max_bytes=self.config.max_package_bytes
        )
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        try:
            return self._verify(target, full, version)
        except PackageError:
            target.unlink(missing_ok=True)
            raise

    def _verify(self, path: Path, full: edge_pb2.UpgradePackage, version: str) -> VerifiedPackage:
        result = verify_package(
            path,
            self.config.trust,
            installed_version=version,
            expected_sha256=full.digest.value.hex(),
            max_bytes=self.config.max_package_bytes,
        )
        if result.manifest.version != full.version:
            raise PackageError(
                "VERSION_MISMATCH",
                f"the package is version {result.manifest.version}, but the cloud announced "
                f"{full.version}",
            )
        return result

    # -- downloading ---------------------------------------------------------------------

    def _paths(self, pkg: edge_pb2.UpgradePackage) -> tuple[Path, Path, Path]:
        base = self._downloads / pkg.package_id
        return (
            base.with_name(base.name + ".part"),
            base.with_name(base.name + ".meta"),
            base.with_name(base.name + ".pkg"),
        )

    def _discard(self, pid: str) -> None:
        for suffix in (".part", ".meta", ".pkg"):
            (self._downloads / f"{pid}{suffix}").unlink(missing_ok=True)

    async def _download(self, pkg: edge_pb2.UpgradePackage) -> Path:
        """Download (or resume) ``pkg``; returns the complete file.

        Raises:
            PackageError: the package is refused (``TOO_LARGE``, ``BAD_PACKAGE_ID``,
                ``SIZE_MISMATCH``, ``TRUNCATED``, ``CORRUPT_CHUNK``, ``DOWNLOAD_REFUSED``).
            _Unreachable: the cloud could not be reached; the partial file stays.
        """
        if (
            not pkg.package_id
            or "/" in pkg.package_id
            or pkg.package_id.startswith(".")
            or len(pkg.package_id) > 128
        ):
            raise PackageError("BAD_PACKAGE_ID", f"package id {pkg.package_id!r} is not usable")
        if not 0 < pkg.size_bytes <= self.config.max_package_bytes:
            raise PackageError(
                "TOO_LARGE",
                f"package {pkg.package_id} is {pkg.size_bytes} bytes "
                f"(max {self.config.max_package_bytes})",
            )
        if (
            pkg.digest.algorithm != common_pb2.DIGEST_ALGORITHM_SHA256
            or len(pkg.digest.value) != 32
        ):
            raise PackageError("BAD_DIGEST", f"package {pkg.package_id} has no SHA-256 digest")
        make_private_dir(self._downloads)
        part, meta, done = self._paths(pkg)
        identity = {
            "package_id": pkg.package_id,
            "sha256": pkg.digest.value.hex(),
            "size": pkg.size_bytes,
        }
        if done.exists():
            if _read_json(meta) == identity and done.stat().st_size == pkg.size_bytes:
                return done
            done.unlink()
        if _read_json(meta) != identity or (part.exists() and part.stat().st_size > pkg.size_bytes):
            part.unlink(missing_ok=True)
            meta.write_text(json.dumps(identity))
        part.touch()
        self._pending = pkg.package_id
        policy = self.config.retry

        def retry_on(err: BaseException) -> bool:
            return isinstance(err, _Retryable) or is_transient(err, idempotent=True)

        try:
            async for attempt in policy.retrying(retry_on=retry_on):
                with attempt:
                    await self._stream(pkg, part)
        except _Retryable as err:
            part.unlink(missing_ok=True)
            raise PackageError(err.reason, err.message) from None
        except PackageError:
            part.unlink(missing_ok=True)
            raise
        except errors.StatusError as err:
            if is_transient(err, idempotent=True):
                raise _Unreachable(str(err)) from None
            if err.code is grpc.StatusCode.FAILED_PRECONDITION:
                part.unlink(missing_ok=True)  # the cloud's package changed under us
            raise PackageError(
                "DOWNLOAD_REFUSED", f"the cloud refused the download: {err}"
            ) from None
        part.replace(done)
        return done

    async def _stream(self, pkg: edge_pb2.UpgradePackage, part: Path) -> None:
        offset = (await asyncio.to_thread(part.stat)).st_size
        self._pending_bytes = offset
        if offset == pkg.size_bytes:
            return
        request = edge_pb2.DownloadUpgradeRequest(
            edge_id=self.config.edge_id,
            package_id=pkg.package_id,
            offset=offset,
            expected_digest=pkg.digest,
            chunk_size_hint=self.config.chunk_size_hint,
            max_bytes_per_second=self.config.max_bytes_per_second,
        )
        with part.open("ab") as out:
            async for chunk in self._uplink.download_upgrade(request):
                self._received += len(chunk.data)
                if chunk.total_size != pkg.size_bytes:
                    raise PackageError(
                        "SIZE_MISMATCH",
                        f"the stream says the package is {chunk.total_size} bytes, the "
                        f"manifest {pkg.size_bytes}",
                    )
                if chunk.offset != offset:
                    raise _Retryable(
                        "TRUNCATED", f"a chunk at offset {chunk.offset}, expected {offset}"
                    )
                if offset + len(chunk.data) > pkg.size_bytes:
                    raise PackageError("TOO_LARGE", "the stream sends more than the package size")
                if crc32c(chunk.data) != chunk.crc32c:
                    out.flush()
                    raise _Retryable(
                        "CORRUPT_CHUNK",
                        f"the chunk at offset {offset} fails its CRC32C (damaged in transit)",
                    )
                out.write(chunk.data)
                offset += len(chunk.data)
                self._pending_bytes = offset
        if offset != pkg.size_bytes:
            raise _Retryable(
                "TRUNCATED",
                f"the download of {pkg.package_id} stopped at {offset} of {pkg.size_bytes} bytes",
            )

    # -- reporting -----------------------------------------------------------------------

    async def _refused(self, pkg: edge_pb2.UpgradePackage, err: PackageError) -> None:
        kind = "DELTA" if pkg.kind == edge_pb2.PACKAGE_KIND_DELTA else "FULL"
        log.warning(
            "upgrade package %s (%s %s) refused: %s", pkg.package_id, kind, pkg.version, err
        )
        self.refusals.append((kind, err.reason))
        self._last_time = self._clock()
        self._last_status = _status(
            grpc.StatusCode.FAILED_PRECONDITION,
            err.message,
            err.reason,
            {"package_id": pkg.package_id, "package_kind": kind, "version": pkg.version},
        )
        self._pending = ""
        await self._report()

    async def report_switch(self) -> SwitchAttempt | None:
        """Report the outcome of the last slot switch, once (at start, after a switch)."""
        attempt = self._slots.last_attempt()
        if attempt is None or attempt.time == self._reported_switch:
            return attempt
        self._reported_switch = attempt.time
        if attempt.ok:
            status = _status(grpc.StatusCode.OK, "", "", {})
            status.details.append(_info("COMMITTED", attempt))
            log.info("upgrade to %s committed after its health gate", attempt.version)
        else:
            status = _status(
                grpc.StatusCode.ABORTED,
                attempt.message or "the new version failed its health gate; rolled back",
                attempt.reason or "HEALTH_GATE_FAILED",
                {
                    "package_id": attempt.package_id,
                    "package_kind": "FULL",
                    "version": attempt.version,
                },
            )
            log.warning(
                "upgrade to %s rolled back: %s [%s]",
                attempt.version,
                attempt.message,
                attempt.reason or "HEALTH_GATE_FAILED",
            )
        self._last_status = status
        self._last_time = attempt.time
        self._pending = ""
        self._pending_bytes = 0
        await self._report()
        return attempt

    def upgrade_health(self) -> edge_pb2.UpgradeHealth:
        """The ``UpgradeHealth`` of this edge now (the uplink's periodic report uses it)."""
        running = self._slots.running()
        health = edge_pb2.UpgradeHealth(
            running_package_id=self._package_id(running.package_path, running.version),
            standby_version=running.standby_version,
            pending_package_id=self._pending,
            pending_bytes_downloaded=self._pending_bytes if self._pending else 0,
        )
        if self._last_status is not None and self._last_time is not None:
            health.last_attempt_status.CopyFrom(self._last_status)
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(self._last_time)
            health.last_attempt_time.CopyFrom(stamp)
        return health

    async def _report(self) -> None:
        try:
            await self._uplink.report_upgrade(await asyncio.to_thread(self.upgrade_health))
        except errors.StatusError as err:
            # The periodic report carries the same state; nothing is lost.
            log.warning("upgrade report not delivered now: %s", err)


def _info(reason: str, attempt: SwitchAttempt) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(
        error_details_pb2.ErrorInfo(
            reason=reason,
            domain=DOMAIN,
            metadata={
                "package_id": attempt.package_id,
                "package_kind": "FULL",
                "version": attempt.version,
            },
        )
    )
    return packed


def _status(
    code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]
) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message[:500])
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
        status.details.append(packed)
    return status


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

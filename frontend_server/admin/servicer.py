"""``hplus.hospital.v1.EdgeAdminService``: what the cloud may ask an edge about itself."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2
from google.rpc import status_pb2

from frontend_server.liveconfig import ApplyOutcome, LiveConfig, RevisionSource, StoredRevision
from frontend_server.profile import ConfigError, Profile, canonical_json, load_profile_content
from frontend_server.services import HOSPITAL_ERRORS, InvalidRequest
from frontend_server.tasks import QueueStats, TaskStoreDamaged
from frontend_server.traces import SpanRing
from hplus.hospital.v1 import admin_pb2, admin_pb2_grpc, task_pb2
from mesh import errors
from mesh.observability import SpanRecord, valid_trace_id
from mesh.version import CONTRACT_RELEASE, SOFTWARE_VERSION

__all__ = ["EdgeAdminServicer"]

_CONTENT = "ApplyConfig.content"

_KINDS = {
    "retrieve_archived_report": task_pb2.TASK_KIND_RETRIEVE_ARCHIVED_REPORT,
    "export_medical_record": task_pb2.TASK_KIND_EXPORT_MEDICAL_RECORD,
}


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _age(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(max(0.0, seconds) * 1e9))
    return out


def _queue(stats: QueueStats) -> admin_pb2.QueueStats:
    return admin_pb2.QueueStats(
        backlog=stats.backlog,
        running=stats.running,
        parked=stats.parked,
        oldest_queued_age=_age(stats.oldest_queued_age_seconds),
        succeeded_last_hour=stats.succeeded_last_hour,
        failed_last_hour=stats.failed_last_hour,
        drain_rate_per_second=stats.drain_rate_per_second,
        by_kind=[
            admin_pb2.TaskKindQueueStats(
                kind=_KINDS.get(kind, task_pb2.TASK_KIND_CUSTOM),
                backlog=k.backlog,
                running=k.running,
                parked=k.parked,
                oldest_queued_age=_age(k.oldest_queued_age_seconds),
            )
            for kind, k in sorted(stats.by_kind.items())
        ],
    )


_SPAN_KINDS = {
    "server": admin_pb2.SPAN_KIND_SERVER,
    "client": admin_pb2.SPAN_KIND_CLIENT,
    "internal": admin_pb2.SPAN_KIND_INTERNAL,
    "producer": admin_pb2.SPAN_KIND_PRODUCER,
    "consumer": admin_pb2.SPAN_KIND_CONSUMER,
}


def _span(record: SpanRecord) -> admin_pb2.Span:
    start = timestamp_pb2.Timestamp()
    start.FromNanoseconds(record.start_ns)
    end = timestamp_pb2.Timestamp()
    end.FromNanoseconds(record.start_ns + record.duration_ns)
    attributes = dict(record.attributes)
    attributes.setdefault("edge.id", record.node)
    return admin_pb2.Span(
        trace_id=record.trace_id,
        span_id=record.span_id,
        parent_span_id=record.parent_span_id,
        name=record.name,
        kind=_SPAN_KINDS.get(record.kind, admin_pb2.SPAN_KIND_INTERNAL),
        component="his" if record.name.startswith("his.") else "tunnel",
        start_time=start,
        end_time=end,
        status=status_pb2.Status(code=record.code, message=record.message),
        attributes=attributes,
    )


def _content(profile: Profile) -> dict[str, Any]:
    """The profile as plain JSON data (secrets are already ``secret://`` references)."""
    loaded: dict[str, Any] = json.loads(canonical_json(profile.content))
    return loaded


_SOURCES = {
    RevisionSource.START: admin_pb2.CONFIG_REVISION_SOURCE_START,
    RevisionSource.APPLY: admin_pb2.CONFIG_REVISION_SOURCE_APPLY,
    RevisionSource.ROLLBACK: admin_pb2.CONFIG_REVISION_SOURCE_ROLLBACK,
}
_MAX_REQUESTED_BY = 128


def _fingerprint(request: Any) -> str:
    """What a retry with the same idempotency key must repeat: the request but its key."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    return "sha256:" + hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def _requested_by(text: str) -> str:
    if len(text) > _MAX_REQUESTED_BY or not text.isprintable():
        raise InvalidRequest(
            [("requested_by", f"at most {_MAX_REQUESTED_BY} printable characters")]
        )
    return text


def _revision_info(revision: StoredRevision) -> admin_pb2.ConfigProfileInfo:
    applied = timestamp_pb2.Timestamp()
    applied.FromDatetime(revision.applied_at)
    return admin_pb2.ConfigProfileInfo(
        profile_id=revision.profile_id,
        version=revision.version,
        digest=revision.digest,
        template_id=revision.template_id,
        apply_time=applied,
        revision=revision.revision,
    )


def _struct(content: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(content))
    return out


@HOSPITAL_ERRORS.servicer
class EdgeAdminServicer(admin_pb2_grpc.EdgeAdminServiceServicer):
    """Answers the cloud's questions about this edge.

    Args:
        hospital_id: the hospital this edge serves.
        edge_id: this edge process.
        services: full names of the services this edge serves (for ``services``).
        components: returns the current state of each component (dialer, queue, adapter).
        started: when the process started.
        profile: the active configuration profile, when the edge runs with one.
        queue_stats: reads the pending-task queue's statistics, when the edge has a queue.
        live: the edge's live configuration (ApplyConfig applies, RollbackConfig and the
            history are served); without it, ApplyConfig only validates.
        spans: the edge's span store (LookupTrace); ``None`` answers UNIMPLEMENTED.
    """

    def __init__(
        self,
        *,
        hospital_id: str,
        edge_id: str,
        services: Callable[[], Sequence[str]],
        components: Callable[[], Sequence[admin_pb2.Component]] = lambda: (),
        started: dt.datetime | None = None,
        profile: Profile | None = None,
        queue_stats: Callable[[], Awaitable[QueueStats]] | None = None,
        live: LiveConfig | None = None,
        spans: SpanRing | None = None,
    ) -> None:
        self._spans = spans
        self._hospital_id = hospital_id
        self._edge_id = edge_id
        self._services = services
        self._components = components
        self._started = started or dt.datetime.now(dt.UTC)
        self._profile = profile
        self._queue_stats = queue_stats
        self._applied = _now()
        self._live = live

    def _info(self, profile: Profile) -> admin_pb2.ConfigProfileInfo:
        live = self._live
        if live is not None and live.revision is not None and live.profile is profile:
            return _revision_info(live.revision)
        return admin_pb2.ConfigProfileInfo(
            profile_id=profile.profile_id,
            version=profile.version,
            digest=profile.digest,
            template_id=profile.template_id,
            apply_time=self._applied,
        )

    async def GetEdgeInfo(
        self,
        request: admin_pb2.GetEdgeInfoRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.GetEdgeInfoRequest, admin_pb2.GetEdgeInfoResponse
        ],
    ) -> admin_pb2.GetEdgeInfoResponse:
        """Versions, contract release, services, components, profile, queue and clock."""
        started = timestamp_pb2.Timestamp()
        started.FromDatetime(self._started)
        out = admin_pb2.GetEdgeInfoResponse(
            hospital_id=self._hospital_id,
            edge_id=self._edge_id,
            software_version=SOFTWARE_VERSION,
            contract_release=CONTRACT_RELEASE,
            services=sorted(self._services()),
            start_time=started,
            edge_time=_now(),
        )
        if self._queue_stats is not None:
            # A damaged task store: the components say so, and the rest still answers.
            with contextlib.suppress(TaskStoreDamaged):
                out.queue.CopyFrom(_queue(await self._queue_stats()))
        # After reading the queue: a damage found just now is reported in this answer.
        out.components.extend(self._components())
        if self._profile is not None:
            out.config.CopyFrom(self._info(self._active()))
        return out

    async def LookupTrace(
        self,
        request: admin_pb2.LookupTraceRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.LookupTraceRequest, admin_pb2.LookupTraceResponse
        ],
    ) -> admin_pb2.LookupTraceResponse:
        """The spans this edge kept for one trace, by start time, paged."""
        if self._spans is None:
            raise errors.Unimplemented("this edge keeps no spans")
        if not valid_trace_id(request.trace_id):
            raise InvalidRequest([("trace_id", "must be 32 lower-case hex digits, not all zero")])
        if request.page_size < 0:
            raise InvalidRequest([("page_size", "must be >= 0")])
        size = min(request.page_size or 500, 5000)
        offset = 0
        if request.page_token:
            try:
                offset = int(base64.urlsafe_b64decode(request.page_token.encode()).decode())
            except (ValueError, UnicodeDecodeError):
                raise InvalidRequest([("page_token", "not a token this edge gave")]) from None
        found = await self._spans.lookup(request.trace_id, limit=size + 1, offset=offset)
        page = found[:size]
        more = len(found) > size
        return admin_pb2.LookupTraceResponse(
            spans=[_span(r) for r in page],
            next_page_token=base64.urlsafe_b64encode(str(offset + size).encode()).decode()
            if more
            else "",
            retention=_age(self._spans.retention),
        )

    async def GetConfig(
        self,
        request: admin_pb2.GetConfigRequest,
        context: grpc.aio.ServicerContext[admin_pb2.GetConfigRequest, admin_pb2.GetConfigResponse],
    ) -> admin_pb2.GetConfigResponse:
        """The active profile (or a revision from the history), or sections of it."""
        profile = self._active()
        info = self._info(profile)
        content = _content(profile)
        if request.revision:
            revision = self._history().store.get(request.revision)
            if revision is None:
                raise errors.NotFound(
                    f"revision {request.revision} is not in this edge's history",
                    resource=errors.Resource("config revision", str(request.revision)),
                )
            info, content = _revision_info(revision), dict(revision.content)
        wanted = list(request.read_mask.paths)
        unknown = [p for p in wanted if p not in content]
        if unknown:
            raise InvalidRequest([("read_mask", f"unknown section {p!r}") for p in unknown])
        if wanted:
            content = {k: v for k, v in content.items() if k in wanted}
        return admin_pb2.GetConfigResponse(
            profile=admin_pb2.ConfigProfile(info=info, content=_struct(content))
        )

    async def ApplyConfig(
        self,
        request: admin_pb2.ApplyConfigRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.ApplyConfigRequest, admin_pb2.ApplyConfigResponse
        ],
    ) -> admin_pb2.ApplyConfigResponse:
        """Validates a new profile and, unless ``validate_only``, applies it live.

        The live apply (see :mod:`frontend_server.liveconfig`) is atomic, versioned and
        health-gated, and idempotent by ``idempotency_key``; an edge without live
        configuration (no stores) only validates and answers UNIMPLEMENTED otherwise.
        """
        profile = self._active()
        if request.validate_only or self._live is None:
            if not request.expected_digest:
                raise InvalidRequest([("expected_digest", "required")])
            if request.expected_digest != profile.digest:
                raise errors.Aborted(
                    "the active profile has changed: read it again",
                    reason="CONFIG_DIGEST_MISMATCH",
                )
            candidate = _candidate(request, profile)
            if not request.validate_only:
                raise errors.Unimplemented(
                    "config: this edge keeps no history to apply a profile live; restart it "
                    "with the new profile file"
                )
            return admin_pb2.ApplyConfigResponse(profile=self._info(candidate), applied=False)
        outcome = await self._live.apply(
            idempotency_key=request.idempotency_key,
            fingerprint=_fingerprint(request),
            expected_digest=request.expected_digest,
            requested_by=_requested_by(request.requested_by),
            make_candidate=lambda active: _candidate(request, active),
        )
        return admin_pb2.ApplyConfigResponse(**_answer(outcome))

    async def ListConfigRevisions(
        self,
        request: admin_pb2.ListConfigRevisionsRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.ListConfigRevisionsRequest, admin_pb2.ListConfigRevisionsResponse
        ],
    ) -> admin_pb2.ListConfigRevisionsResponse:
        """The edge's history of profiles, newest first."""
        live = self._history()
        active = live.revision.revision if live.revision is not None else 0
        return admin_pb2.ListConfigRevisionsResponse(
            revisions=[
                admin_pb2.ConfigRevision(
                    info=_revision_info(r),
                    source=_SOURCES[r.source],
                    requested_by=r.requested_by,
                    idempotency_key=r.idempotency_key,
                    restored_revision=r.restored_revision,
                    rolled_back=r.rolled_back,
                    rollback_reason=r.rollback_reason,
                    active=r.revision == active,
                )
                for r in live.store.revisions()
            ],
            history_limit=live.store.limit,
        )

    async def RollbackConfig(
        self,
        request: admin_pb2.RollbackConfigRequest,
        context: grpc.aio.ServicerContext[
            admin_pb2.RollbackConfigRequest, admin_pb2.RollbackConfigResponse
        ],
    ) -> admin_pb2.RollbackConfigResponse:
        """Makes an earlier revision active again (as ApplyConfig does a new profile)."""
        self._active()
        if request.revision < 0:
            raise InvalidRequest([("revision", "must be >= 0")])
        outcome = await self._history().rollback(
            idempotency_key=request.idempotency_key,
            fingerprint=_fingerprint(request),
            expected_digest=request.expected_digest,
            requested_by=_requested_by(request.requested_by),
            revision=request.revision,
        )
        return admin_pb2.RollbackConfigResponse(**_answer(outcome))

    def _history(self) -> LiveConfig:
        if self._live is None:
            raise errors.FailedPrecondition(
                "config: this edge keeps no profile history (it runs without a profile)",
                reason="NO_PROFILE",
            )
        return self._live

    def _active(self) -> Profile:
        if self._profile is None:
            raise errors.FailedPrecondition(
                "config: this edge runs without a profile", reason="NO_PROFILE"
            )
        return self._live.profile if self._live is not None else self._profile


def _candidate(request: admin_pb2.ApplyConfigRequest, profile: Profile) -> Profile:
    """The profile a request asks for, validated as at a start (or InvalidRequest)."""
    content = _content(profile)
    new_content: dict[str, Any] = json_format.MessageToDict(request.content)
    sections = list(request.update_mask.paths)
    merged = dict(content)
    if sections:
        for section in sections:
            if section in new_content:
                merged[section] = new_content[section]
            else:
                merged.pop(section, None)
    else:
        merged = new_content
    merged.setdefault("profile", {})
    if isinstance(merged["profile"], dict):
        if request.profile_id:
            merged["profile"]["id"] = request.profile_id
        if request.version:
            merged["profile"]["version"] = request.version
    try:
        return load_profile_content(merged, source=_CONTENT)
    except ConfigError as err:
        # The located error names the profile parameter; the caller sent it in
        # ``content``, so that is the field path it gets back.
        field = f"content.{err.key}" if err.key and err.key != "profile" else "content"
        raise InvalidRequest([(field, err.problem)]) from err


def _answer(outcome: ApplyOutcome) -> dict[str, Any]:
    return {
        "profile": _revision_info(outcome.revision),
        "applied": outcome.applied,
        "reloaded_components": list(outcome.reloaded),
    }

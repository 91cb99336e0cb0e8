"""The attribution table: a failed call's status and details → owner and reason code.

One ordered list of rules (`RULES`); the first that matches a `Failure` decides. A rule
matches on the status code, the ``ErrorInfo`` domain and reason, one ``ErrorInfo.metadata``
key (the edge's ``cause`` of a HIS failure, the gateway's ``last_end`` of a hospital's
tunnel), a ``BadRequest`` field, and the hop the failure was seen at. Every rule carries
the reason it blames whom it blames (``why``), which `attribute` returns, so a row in
``hplus cloud errors`` can be explained from the table alone.

The vocabulary the rules read is set where the errors are raised:

* ``hospital.hplus`` (the edge): ``HIS_UNAVAILABLE`` / ``HIS_TIMEOUT`` /
  ``OPERATION_OUTCOME_UNKNOWN`` carry ``metadata["cause"]`` (`HIS causes`_) and
  ``metadata["dialect"]``; HIS refusals carry the contract reason and ``vendor_code``;
* ``tunnel.hplus`` (the tunnel engine): how a tunnel or a call on it ended
  (``TUNNEL_LOST``, ``PEER_SILENT``, ``PEER_CLOSED``, ``DRAINING``, ``PROTOCOL_VIOLATION``);
* ``cloud.hplus`` (the node): ``HOSPITAL_NOT_CONNECTED`` with ``metadata["last_end"]`` (how
  the hospital's last tunnel on this node ended), ``CHANNEL_*`` for the payment channel,
  and the patient API's and accounts' own refusals.

HIS causes
----------
``refused`` (nothing listens on the HIS port: the HIS is down), ``http_5xx`` and
``vendor_outage`` (the HIS answered that it is failing), ``read_timeout`` (connected, no
answer in time), ``connection_lost`` (the HIS dropped the connection mid-call),
``unreadable`` — all the HIS vendor's; ``connect_timeout`` and ``unreachable`` (no TCP
answer at all: no route, no host, a blackholed port) — the hospital's network.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc

from mesh.errors import StatusError

__all__ = ["RULES", "Attribution", "Failure", "Owner", "Rule", "attribute", "failure_of"]


class Owner(enum.StrEnum):
    """Who must act on a failed call."""

    PATIENT_INPUT = "patient_input"
    """What the patient asked for is wrong or not possible (a field, a full slot)."""
    APP = "app"
    """The app calling the patient API: its credentials, keys, tokens, rate."""
    CLOUD_PLATFORM = "cloud_platform"
    """The cloud nodes and what they run on (a bug, a database, presence)."""
    TUNNEL_NETWORK = "tunnel_network"
    """The way between node and edge: the tunnel or the internet under it."""
    FRONTEND_SERVER = "frontend_server"
    """The hospital's edge (front-end server): stopped, a bug, a misbehaving peer."""
    HIS_VENDOR = "his_vendor"
    """The hospital information system (named by its vendor dialect)."""
    HOSPITAL_NETWORK = "hospital_network"
    """The hospital's network between the edge and its HIS."""
    PAYMENT_CHANNEL = "payment_channel"
    """The payment channel (WeChat Pay and the like)."""


# Hops: where on the way the failure happened.
NODE = "node"
TUNNEL = "tunnel"
EDGE = "edge"
HIS = "his"
CHANNEL = "payment_channel"
APP_HOP = "app"

EDGE_DOMAIN = "hospital.hplus"
CLOUD_DOMAIN = "cloud.hplus"
TUNNEL_DOMAIN = "tunnel.hplus"


@dataclass(frozen=True)
class Failure:
    """A failed call as the node saw it (the input of `attribute`)."""

    code: str
    """Status code name, e.g. ``UNAVAILABLE``."""
    reason: str = ""
    """``ErrorInfo.reason``."""
    domain: str = ""
    """``ErrorInfo.domain``."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """``ErrorInfo.metadata``."""
    fields: tuple[str, ...] = ()
    """``BadRequest`` field paths."""
    side: str = "api"
    """Where the node saw it: ``api`` (a call the node served) or ``hospital`` (a call
    the node made to an edge through its tunnel)."""
    vendor: str = ""
    """The hospital's HIS vendor (profile template or dialect), when the caller knows it."""
    method: str = ""
    """The full method name (``/hplus.cloud.v1.EdgeService/ReportHealth``), when known."""


@dataclass(frozen=True)
class Attribution:
    """Whom a failure is attributed to, and why."""

    owner: Owner
    """Who must act."""
    reason: str
    """The table's reason code (``HIS_DOWN``, ``TUNNEL_LOST``, ``INVALID_FIELD`` …)."""
    why: str
    """The rule's explanation."""
    hop: str
    """Where it failed: ``app``, ``node``, ``tunnel``, ``edge``, ``his``, ``payment_channel``."""
    vendor: str = ""
    """The HIS vendor when the HIS or the hospital network owns it."""


Values = frozenset[str] | None


def _set(values: str | Iterable[str] | None) -> Values:
    if values is None:
        return None
    if isinstance(values, str):
        return frozenset({values})
    return frozenset(values)


@dataclass(frozen=True)
class Rule:
    """One row of the table: what it matches (``None``: anything) → owner, reason, hop."""

    owner: Owner
    reason: str
    hop: str
    why: str
    code: Values = None
    domain: Values = None
    error_reason: Values = None
    meta_key: str = ""
    meta_values: Values = None
    field_prefix: str = ""
    side: Values = None
    method_prefix: str = ""

    def matches(self, f: Failure) -> bool:
        """Whether ``f`` fits every condition of the row."""
        if self.code is not None and f.code not in self.code:
            return False
        if self.domain is not None and f.domain not in self.domain:
            return False
        if self.error_reason is not None and f.reason not in self.error_reason:
            return False
        if self.meta_key:
            value = f.metadata.get(self.meta_key, "")
            if self.meta_values is None and not value:
                return False
            if self.meta_values is not None and value not in self.meta_values:
                return False
        if self.field_prefix and not any(x.startswith(self.field_prefix) for x in f.fields):
            return False
        if self.method_prefix and not f.method.startswith(self.method_prefix):
            return False
        return self.side is None or f.side in self.side


def _r(
    owner: Owner,
    reason: str,
    hop: str,
    why: str,
    *,
    code: str | Iterable[str] | None = None,
    domain: str | Iterable[str] | None = None,
    error_reason: str | Iterable[str] | None = None,
    meta: tuple[str, str | Iterable[str] | None] | None = None,
    field_prefix: str = "",
    side: str | None = None,
    method_prefix: str = "",
) -> Rule:
    return Rule(
        owner=owner,
        reason=reason,
        hop=hop,
        why=why,
        code=_set(code),
        domain=_set(domain),
        error_reason=_set(error_reason),
        meta_key=meta[0] if meta else "",
        meta_values=_set(meta[1]) if meta else None,
        field_prefix=field_prefix,
        side=_set(side),
        method_prefix=method_prefix,
    )


P, A, C, T, F, H, N, M = (
    Owner.PATIENT_INPUT,
    Owner.APP,
    Owner.CLOUD_PLATFORM,
    Owner.TUNNEL_NETWORK,
    Owner.FRONTEND_SERVER,
    Owner.HIS_VENDOR,
    Owner.HOSPITAL_NETWORK,
    Owner.PAYMENT_CHANNEL,
)

_HIS_FAILURES = ("HIS_UNAVAILABLE", "HIS_TIMEOUT", "OPERATION_OUTCOME_UNKNOWN")
_NETWORK_CAUSES = ("connect_timeout", "unreachable")
_BUSINESS = (
    "SLOT_FULL",
    "BOOKING_RULE_VIOLATED",
    "HOLD_EXPIRED",
    "AMOUNT_MISMATCH",
    "BILL_NOT_PAYABLE",
    "REFUND_EXCEEDS_CHARGE",
    "CANCEL_DEADLINE_PASSED",
    "BOOKING_CLOSED",
    "ALREADY_CHECKED_IN",
    "REPORT_ARCHIVED",
    "ORDER_NOT_PAYABLE",
    "PAYMENT_DEADLINE_PASSED",
    "ORDER_NOT_CANCELLABLE",
    "CANCELLATION_REFUSED",
    "PAYMENT_ATTEMPT_EXISTS",
    "ORDER_CHANGED",
    "TOO_MANY_PATIENTS",
)
_IDENTITY = (
    "PATIENT_MISMATCH",
    "IDENTITY_MISMATCH",
    "PATIENT_NOT_BOUND",
    "CODE_INCORRECT",
    "CODE_EXPIRED",
    "TOO_MANY_ATTEMPTS",
    "CHALLENGE_USED",
    "CHALLENGE_NOT_FOUND",
)
_NOT_FOUND = (
    "HIS_NOT_FOUND",
    "ORDER_NOT_FOUND",
    "REPORT_NOT_FOUND",
    "PATIENT_NOT_FOUND",
    "PATIENT_NOT_FOUND_AT_HOSPITAL",
    "HOSPITAL_NOT_FOUND",
)
_CHANNEL_DOWN = ("CHANNEL_UNREACHABLE", "CHANNEL_UNAVAILABLE", "PAYMENTS_UNAVAILABLE")
_CHANNEL_LOST = ("CHANNEL_ANSWER_LOST",)
_CHANNEL_BAD = ("CHANNEL_BAD_ANSWER", "CHANNEL_ANSWER_TOO_LARGE")

RULES: tuple[Rule, ...] = (
    # -- the hospital's side of the edge: the HIS and the network to it ------------------
    _r(N, "HIS_UNREACHABLE", HIS,
       "the edge got no TCP answer from the HIS host (connect timeout, no route): the "
       "hospital's network between edge and HIS, not the HIS program",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES, meta=("cause", _NETWORK_CAUSES)),
    _r(H, "HIS_DOWN", HIS,
       "the HIS host answered but nothing listens on its port (connection refused)",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES, meta=("cause", "refused")),
    _r(H, "HIS_ERROR", HIS,
       "the HIS answered that it is failing (HTTP 5xx, or its own outage code)",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES,
       meta=("cause", ("http_5xx", "vendor_outage"))),
    _r(H, "HIS_ANSWER_LOST", HIS,
       "a write reached the HIS and its answer never came back (it may have committed): "
       "the HIS held or dropped the answer on a working connection",
       domain=EDGE_DOMAIN, error_reason="OPERATION_OUTCOME_UNKNOWN"),
    _r(H, "HIS_SLOW", HIS,
       "the edge was connected and the HIS did not answer within the profile's timeout",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES, meta=("cause", "read_timeout")),
    _r(H, "HIS_DROPPED_CONNECTION", HIS,
       "the HIS closed a connection it had accepted before answering",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES, meta=("cause", "connection_lost")),
    _r(F, "EDGE_ADAPTER_CLOSED", EDGE,
       "the edge's HIS adapter was closed (the edge is stopping or reconfiguring)",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES, meta=("cause", "adapter_closed")),
    _r(H, "HIS_UNAVAILABLE", HIS,
       "the edge reports the HIS unavailable without a finer cause (an older edge): the "
       "HIS is the likelier owner",
       domain=EDGE_DOMAIN, error_reason=_HIS_FAILURES),
    _r(H, "HIS_ANSWER_UNREADABLE", HIS,
       "the HIS answered something its documented dialect does not allow (a renamed "
       "field, a missing code): a vendor change the profile does not know",
       domain=EDGE_DOMAIN, error_reason="HIS_PROTOCOL_ERROR"),
    _r(H, "HIS_CODE_UNMAPPED", HIS,
       "the HIS refused with a vendor code the dialect's table does not know",
       domain=EDGE_DOMAIN, error_reason="HIS_REFUSED"),
    # -- what the patient asked for ------------------------------------------------------
    _r(P, "REFUSED_BY_RULE", HIS,
       "the hospital (its HIS or its booking rules) refused what was asked: a business "
       "answer about the request, not a fault",
       error_reason=_BUSINESS),
    _r(P, "IDENTITY_REFUSED", NODE,
       "the person or record named does not match (another patient's, a wrong code)",
       error_reason=_IDENTITY),
    _r(P, "NO_SUCH_RECORD", NODE,
       "what the patient named does not exist (order, report, patient, hospital)",
       error_reason=_NOT_FOUND),
    # -- the edges' own calls to the cloud -----------------------------------------------
    _r(F, "EDGE_CALL_REFUSED", EDGE,
       "an edge's own call to the node (health, task results, upgrades) was refused as "
       "asked: its credential, its rate or its request is the edge's",
       method_prefix="/hplus.cloud.v1.EdgeService/", side="api",
       code=("INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
             "FAILED_PRECONDITION", "NOT_FOUND", "OUT_OF_RANGE", "ALREADY_EXISTS",
             "CANCELLED")),
    # -- the app -----------------------------------------------------------------------
    _r(A, "BAD_PAGE_TOKEN", APP_HOP,
       "a page token the app altered or reused with another query",
       code="INVALID_ARGUMENT", field_prefix="page_token"),
    _r(A, "KEY_REUSED", APP_HOP,
       "the app reused a request id or idempotency key for a different request",
       error_reason=("IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_KEY_IN_PROGRESS")),
    _r(A, "BAD_REQUEST_ID", APP_HOP,
       "the app sent no usable request id (the app builds it, not the patient)",
       code="INVALID_ARGUMENT", field_prefix="request_id"),
    _r(A, "BAD_CREDENTIAL", APP_HOP,
       "the app's key or the account token it sent is missing, unknown or expired",
       code="UNAUTHENTICATED", side="api"),
    _r(A, "RATE_LIMITED", APP_HOP,
       "the app went over its rate",
       error_reason=("RATE_LIMITED", "TOO_MANY_LOOKUPS")),
    _r(A, "NOT_ALLOWED", APP_HOP,
       "the app's credential does not allow this call",
       code="PERMISSION_DENIED", side="api", domain=CLOUD_DOMAIN),
    _r(A, "CALLER_CANCELLED", APP_HOP,
       "the app gave up on the call", code="CANCELLED", side="api"),
    # -- the payment channel -----------------------------------------------------------
    _r(M, "CHANNEL_DOWN", CHANNEL,
       "the payment channel could not be reached or did not answer",
       error_reason=_CHANNEL_DOWN),
    _r(M, "CHANNEL_ANSWER_LOST", CHANNEL,
       "the payment channel took the call and its answer was lost",
       error_reason=_CHANNEL_LOST),
    _r(M, "CHANNEL_BAD_ANSWER", CHANNEL,
       "the payment channel answered something unreadable or too large",
       error_reason=_CHANNEL_BAD),
    # -- the tunnel and the edge ---------------------------------------------------------
    _r(F, "EDGE_STOPPED", EDGE,
       "the hospital is not connected and its last tunnel here was drained by the edge "
       "(an edge that stops says goodbye first): the edge was stopped",
       error_reason="HOSPITAL_NOT_CONNECTED", meta=("last_end", "DRAINED")),
    _r(F, "EDGE_PROTOCOL_VIOLATION", EDGE,
       "the hospital's last tunnel broke the tunnel protocol: a misbehaving edge",
       error_reason="HOSPITAL_NOT_CONNECTED",
       meta=("last_end", ("PROTOCOL_VIOLATION", "LIMIT_EXCEEDED"))),
    _r(T, "TUNNEL_LOST", TUNNEL,
       "the hospital is not connected and its last tunnel here was lost under it: the "
       "connection broke, went silent, or ended without the edge's goodbye (a cut "
       "connection can reach the node as a bare end of stream)",
       error_reason="HOSPITAL_NOT_CONNECTED",
       meta=("last_end", ("TUNNEL_LOST", "PEER_SILENT", "PEER_CLOSED"))),
    _r(T, "HOSPITAL_OFFLINE", TUNNEL,
       "no tunnel of the hospital is up and this node saw none end: the way from the "
       "hospital to the cloud is the likelier owner",
       error_reason="HOSPITAL_NOT_CONNECTED"),
    _r(F, "EDGE_STOPPED", EDGE,
       "the edge drained the tunnel while the call was on it (it is stopping)",
       domain=TUNNEL_DOMAIN, error_reason="DRAINING"),
    _r(F, "EDGE_PROTOCOL_VIOLATION", EDGE,
       "the edge broke the tunnel protocol or its bounds (a misbehaving peer)",
       domain=TUNNEL_DOMAIN, error_reason=("PROTOCOL_VIOLATION", "LIMIT_EXCEEDED")),
    _r(T, "TUNNEL_LOST", TUNNEL,
       "the tunnel's connection broke, went silent or ended without a goodbye while the "
       "call was on it",
       domain=TUNNEL_DOMAIN,
       error_reason=("TUNNEL_LOST", "PEER_SILENT", "PEER_CLOSED", "NO_TUNNEL")),
    _r(T, "NO_ANSWER_IN_TIME", TUNNEL,
       "a call to the edge passed its deadline without any status from the edge (a HIS "
       "timeout would have come back as HIS_TIMEOUT first): the way there",
       code="DEADLINE_EXCEEDED", side="hospital", domain=("", TUNNEL_DOMAIN)),
    _r(F, "EDGE_QUEUE_FULL", EDGE,
       "the edge's task queue is full", error_reason=("QUEUE_FULL", "HOSPITAL_QUEUE_FULL")),
    _r(F, "EDGE_NOT_OFFERED", EDGE,
       "this hospital's edge does not offer the operation (profile or dialect)",
       error_reason="OPERATION_UNSUPPORTED"),
    _r(F, "EDGE_BUG", EDGE,
       "the edge failed on its own (a bug: correlation id in its log)",
       domain=EDGE_DOMAIN, code=("INTERNAL", "UNKNOWN", "DATA_LOSS")),
    _r(F, "EDGE_UNAVAILABLE", EDGE,
       "the edge answered UNAVAILABLE for a reason of its own",
       domain=EDGE_DOMAIN, code=("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")),
    # -- the cloud -----------------------------------------------------------------------
    _r(C, "NODE_DEPENDENCY_DOWN", NODE,
       "a store the node needs (presence, a partition's database) is unavailable or moving",
       error_reason=("PRESENCE_UNAVAILABLE", "PARTITION_MOVING", "DATABASE_UNAVAILABLE")),
    _r(C, "NOT_CONFIGURED", NODE,
       "the node runs without the part this call needs",
       error_reason=("ORDERS_NOT_CONFIGURED", "REPORTS_NOT_CONFIGURED",
                     "PAYMENTS_NOT_CONFIGURED")),
    _r(C, "NODE_BUG", NODE,
       "the node failed on its own (a bug: correlation id in its log)",
       code=("INTERNAL", "UNKNOWN", "DATA_LOSS")),
    _r(C, "NODE_TOO_SLOW", NODE,
       "the app's deadline passed while the node worked on the call",
       code="DEADLINE_EXCEEDED", side="api"),
    # -- what is left, by the status code's family ---------------------------------------
    _r(P, "INVALID_FIELD", APP_HOP,
       "a field of the request is malformed (the value the patient entered)",
       code=("INVALID_ARGUMENT", "OUT_OF_RANGE")),
    _r(P, "REFUSED", NODE,
       "the request is refused as asked (the state does not allow it)",
       code=("FAILED_PRECONDITION", "ALREADY_EXISTS", "NOT_FOUND", "ABORTED")),
    _r(A, "APP_CALL_REFUSED", APP_HOP,
       "the call itself is not allowed or not offered (an app's mistake)",
       code=("UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED", "CANCELLED",
             "RESOURCE_EXHAUSTED")),
    _r(T, "UNAVAILABLE_ON_THE_WAY", TUNNEL,
       "a call to the edge ended UNAVAILABLE with nothing saying who: the way there",
       side="hospital"),
    _r(C, "NODE_UNAVAILABLE", NODE,
       "the node answered UNAVAILABLE or DEADLINE_EXCEEDED with nothing saying who",
),
)  # fmt: skip
"""The table, in order; the last row matches anything (every failure gets an owner)."""

_VENDOR_OWNERS = frozenset({Owner.HIS_VENDOR, Owner.HOSPITAL_NETWORK})


def attribute(failure: Failure) -> Attribution:
    """Who owns ``failure``, by the first rule of `RULES` that matches it.

    Args:
        failure: the status and details as the node saw them.

    Returns:
        Owner, the table's reason code, the rule's explanation, the hop; the HIS vendor
        (the failure's ``vendor``, else the edge's ``dialect``) when the HIS side owns it.
    """
    for rule in RULES:
        if rule.matches(failure):
            vendor = ""
            if rule.owner in _VENDOR_OWNERS:
                vendor = failure.vendor or failure.metadata.get("dialect", "")
            return Attribution(rule.owner, rule.reason, rule.why, rule.hop, vendor)
    raise AssertionError("unreachable: the last rule matches anything")


def failure_of(
    error: StatusError | grpc.StatusCode | str,
    *,
    side: str = "api",
    vendor: str = "",
    method: str = "",
) -> Failure:
    """The `Failure` of a tree error (or of a bare status code).

    Args:
        error: the decoded error, or a code (enum or name) when no details came.
        side: ``api`` or ``hospital`` (see `Failure.side`).
        vendor: the hospital's HIS vendor, if known.
        method: the full method name, if known.

    Returns:
        The failure, ready for `attribute`.
    """
    if isinstance(error, grpc.StatusCode):
        return Failure(code=error.name, side=side, vendor=vendor, method=method)
    if isinstance(error, str):
        return Failure(code=error, side=side, vendor=vendor, method=method)
    return Failure(
        code=error.code.name,
        reason=error.reason,
        domain=error.domain if error.reason else "",
        metadata=dict(error.metadata),
        fields=tuple(v.field for v in error.field_violations),
        side=side,
        vendor=vendor,
        method=method,
    )

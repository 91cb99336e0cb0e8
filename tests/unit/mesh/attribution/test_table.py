"""The attribution table: each rule, the order between them, and the exports."""

from __future__ import annotations

import grpc
import pytest

import mesh.attribution
from mesh import errors
from mesh.attribution import RULES, Failure, Owner, attribute, failure_of

EDGE = "hospital.hplus"
CLOUD = "cloud.hplus"
TUNNEL = "tunnel.hplus"


def his(reason: str, cause: str = "", **meta: str) -> Failure:
    metadata = {"dialect": "soap", **meta}
    if cause:
        metadata["cause"] = cause
    return Failure(code="UNAVAILABLE", reason=reason, domain=EDGE, metadata=metadata)


# (failure, owner, reason code): at least one case per rule of the table.
CASES: list[tuple[Failure, Owner, str]] = [
    (his("HIS_UNAVAILABLE", "connect_timeout"), Owner.HOSPITAL_NETWORK, "HIS_UNREACHABLE"),
    (his("HIS_UNAVAILABLE", "unreachable"), Owner.HOSPITAL_NETWORK, "HIS_UNREACHABLE"),
    (his("HIS_UNAVAILABLE", "refused"), Owner.HIS_VENDOR, "HIS_DOWN"),
    (his("HIS_UNAVAILABLE", "http_5xx"), Owner.HIS_VENDOR, "HIS_ERROR"),
    (his("HIS_UNAVAILABLE", "vendor_outage"), Owner.HIS_VENDOR, "HIS_ERROR"),
    (his("OPERATION_OUTCOME_UNKNOWN"), Owner.HIS_VENDOR, "HIS_ANSWER_LOST"),
    (his("HIS_TIMEOUT", "read_timeout"), Owner.HIS_VENDOR, "HIS_SLOW"),
    (his("HIS_UNAVAILABLE", "connection_lost"), Owner.HIS_VENDOR, "HIS_DROPPED_CONNECTION"),
    (his("HIS_UNAVAILABLE", "adapter_closed"), Owner.FRONTEND_SERVER, "EDGE_ADAPTER_CLOSED"),
    (his("HIS_UNAVAILABLE"), Owner.HIS_VENDOR, "HIS_UNAVAILABLE"),
    (his("HIS_PROTOCOL_ERROR"), Owner.HIS_VENDOR, "HIS_ANSWER_UNREADABLE"),
    (
        Failure(code="FAILED_PRECONDITION", reason="HIS_REFUSED", domain=EDGE),
        Owner.HIS_VENDOR,
        "HIS_CODE_UNMAPPED",
    ),
    (
        Failure(code="RESOURCE_EXHAUSTED", reason="SLOT_FULL", domain=EDGE),
        Owner.PATIENT_INPUT,
        "REFUSED_BY_RULE",
    ),
    (
        Failure(code="PERMISSION_DENIED", reason="PATIENT_MISMATCH", domain=EDGE),
        Owner.PATIENT_INPUT,
        "IDENTITY_REFUSED",
    ),
    (
        Failure(code="NOT_FOUND", reason="ORDER_NOT_FOUND", domain=CLOUD),
        Owner.PATIENT_INPUT,
        "NO_SUCH_RECORD",
    ),
    (
        Failure(
            code="UNAUTHENTICATED",
            reason="CREDENTIAL_INVALID",
            domain=CLOUD,
            method="/hplus.cloud.v1.EdgeService/ReportHealth",
        ),
        Owner.FRONTEND_SERVER,
        "EDGE_CALL_REFUSED",
    ),
    (
        Failure(code="INVALID_ARGUMENT", fields=("page_token",)),
        Owner.APP,
        "BAD_PAGE_TOKEN",
    ),
    (
        Failure(code="INVALID_ARGUMENT", reason="IDEMPOTENCY_KEY_REUSED", domain=CLOUD),
        Owner.APP,
        "KEY_REUSED",
    ),
    (Failure(code="INVALID_ARGUMENT", fields=("request_id",)), Owner.APP, "BAD_REQUEST_ID"),
    (Failure(code="UNAUTHENTICATED", reason="TOKEN_MISSING"), Owner.APP, "BAD_CREDENTIAL"),
    (
        Failure(code="RESOURCE_EXHAUSTED", reason="RATE_LIMITED", domain=CLOUD),
        Owner.APP,
        "RATE_LIMITED",
    ),
    (Failure(code="PERMISSION_DENIED", domain=CLOUD), Owner.APP, "NOT_ALLOWED"),
    (Failure(code="CANCELLED"), Owner.APP, "CALLER_CANCELLED"),
    (
        Failure(code="UNAVAILABLE", reason="CHANNEL_UNAVAILABLE", domain=CLOUD),
        Owner.PAYMENT_CHANNEL,
        "CHANNEL_DOWN",
    ),
    (
        Failure(code="DEADLINE_EXCEEDED", reason="CHANNEL_ANSWER_LOST"),
        Owner.PAYMENT_CHANNEL,
        "CHANNEL_ANSWER_LOST",
    ),
    (
        Failure(code="UNAVAILABLE", reason="CHANNEL_BAD_ANSWER"),
        Owner.PAYMENT_CHANNEL,
        "CHANNEL_BAD_ANSWER",
    ),
    (
        Failure(
            code="UNAVAILABLE",
            reason="HOSPITAL_NOT_CONNECTED",
            domain=CLOUD,
            metadata={"last_end": "DRAINED"},
        ),
        Owner.FRONTEND_SERVER,
        "EDGE_STOPPED",
    ),
    (
        Failure(
            code="UNAVAILABLE",
            reason="HOSPITAL_NOT_CONNECTED",
            domain=CLOUD,
            metadata={"last_end": "PROTOCOL_VIOLATION"},
        ),
        Owner.FRONTEND_SERVER,
        "EDGE_PROTOCOL_VIOLATION",
    ),
    (
        Failure(
            code="UNAVAILABLE",
            reason="HOSPITAL_NOT_CONNECTED",
            domain=CLOUD,
            metadata={"last_end": "TUNNEL_LOST"},
        ),
        Owner.TUNNEL_NETWORK,
        "TUNNEL_LOST",
    ),
    (
        # A connection cut under the tunnel can reach the node as a bare end of stream.
        Failure(
            code="UNAVAILABLE",
            reason="HOSPITAL_NOT_CONNECTED",
            domain=CLOUD,
            metadata={"last_end": "PEER_CLOSED"},
        ),
        Owner.TUNNEL_NETWORK,
        "TUNNEL_LOST",
    ),
    (
        Failure(code="UNAVAILABLE", reason="HOSPITAL_NOT_CONNECTED", domain=CLOUD),
        Owner.TUNNEL_NETWORK,
        "HOSPITAL_OFFLINE",
    ),
    (
        Failure(code="UNAVAILABLE", reason="DRAINING", domain=TUNNEL, side="hospital"),
        Owner.FRONTEND_SERVER,
        "EDGE_STOPPED",
    ),
    (
        Failure(code="INVALID_ARGUMENT", reason="PROTOCOL_VIOLATION", domain=TUNNEL),
        Owner.FRONTEND_SERVER,
        "EDGE_PROTOCOL_VIOLATION",
    ),
    (
        Failure(code="UNAVAILABLE", reason="PEER_CLOSED", domain=TUNNEL, side="hospital"),
        Owner.TUNNEL_NETWORK,
        "TUNNEL_LOST",
    ),
    (
        Failure(code="UNAVAILABLE", reason="TUNNEL_LOST", domain=TUNNEL, side="hospital"),
        Owner.TUNNEL_NETWORK,
        "TUNNEL_LOST",
    ),
    (
        Failure(code="DEADLINE_EXCEEDED", side="hospital"),
        Owner.TUNNEL_NETWORK,
        "NO_ANSWER_IN_TIME",
    ),
    (
        Failure(code="RESOURCE_EXHAUSTED", reason="QUEUE_FULL", domain=EDGE),
        Owner.FRONTEND_SERVER,
        "EDGE_QUEUE_FULL",
    ),
    (
        Failure(code="UNIMPLEMENTED", reason="OPERATION_UNSUPPORTED", domain=EDGE),
        Owner.FRONTEND_SERVER,
        "EDGE_NOT_OFFERED",
    ),
    (
        Failure(code="INTERNAL", reason="INTERNAL_ERROR", domain=EDGE),
        Owner.FRONTEND_SERVER,
        "EDGE_BUG",
    ),
    (
        Failure(code="UNAVAILABLE", reason="LEDGER_BUSY", domain=EDGE),
        Owner.FRONTEND_SERVER,
        "EDGE_UNAVAILABLE",
    ),
    (
        Failure(code="UNAVAILABLE", reason="PRESENCE_UNAVAILABLE", domain=CLOUD),
        Owner.CLOUD_PLATFORM,
        "NODE_DEPENDENCY_DOWN",
    ),
    (
        Failure(code="UNIMPLEMENTED", reason="ORDERS_NOT_CONFIGURED", domain=CLOUD),
        Owner.CLOUD_PLATFORM,
        "NOT_CONFIGURED",
    ),
    (
        Failure(code="INTERNAL", reason="INTERNAL_ERROR", domain=CLOUD),
        Owner.CLOUD_PLATFORM,
        "NODE_BUG",
    ),
    (Failure(code="DEADLINE_EXCEEDED"), Owner.CLOUD_PLATFORM, "NODE_TOO_SLOW"),
    (
        Failure(code="INVALID_ARGUMENT", fields=("patient.id_card_number",)),
        Owner.PATIENT_INPUT,
        "INVALID_FIELD",
    ),
    (Failure(code="FAILED_PRECONDITION"), Owner.PATIENT_INPUT, "REFUSED"),
    (Failure(code="UNIMPLEMENTED"), Owner.APP, "APP_CALL_REFUSED"),
    (
        Failure(code="UNAVAILABLE", side="hospital"),
        Owner.TUNNEL_NETWORK,
        "UNAVAILABLE_ON_THE_WAY",
    ),
    (Failure(code="UNAVAILABLE"), Owner.CLOUD_PLATFORM, "NODE_UNAVAILABLE"),
]


@pytest.mark.parametrize(
    ("failure", "owner", "reason"), CASES, ids=[f"{c[1].value}-{c[2]}" for c in CASES]
)
def test_rule(failure: Failure, owner: Owner, reason: str) -> None:
    found = attribute(failure)
    assert (found.owner, found.reason) == (owner, reason)
    assert found.why


def test_every_rule_has_a_case() -> None:
    first = [next(i for i, r in enumerate(RULES) if r.matches(c[0])) for c in CASES]
    assert sorted(set(first)) == list(range(len(RULES)))


def test_every_owner_is_reachable() -> None:
    assert {r.owner for r in RULES} == set(Owner)


def test_every_rule_says_why() -> None:
    assert all(len(r.why) > 20 for r in RULES)


def test_vendor_named_for_the_his_side_only() -> None:
    assert attribute(his("HIS_UNAVAILABLE", "refused")).vendor == "soap"
    assert attribute(his("HIS_UNAVAILABLE", "unreachable")).vendor == "soap"
    named = Failure(
        code="UNAVAILABLE",
        reason="HIS_TIMEOUT",
        domain=EDGE,
        metadata={"cause": "read_timeout"},
        vendor="winning-health",
    )
    assert attribute(named).vendor == "winning-health"
    assert attribute(his("HIS_UNAVAILABLE", "adapter_closed")).vendor == ""


def test_network_cause_beats_the_his_rules() -> None:
    # A connect timeout on a write (no answer at all) is the network's, whatever the reason.
    lost = his("OPERATION_OUTCOME_UNKNOWN", "connect_timeout")
    assert attribute(lost).owner is Owner.HOSPITAL_NETWORK


def test_failure_of_a_tree_error() -> None:
    error = errors.Unavailable(
        "x", reason="HIS_UNAVAILABLE", domain=EDGE, metadata={"cause": "refused"}
    )
    failure = failure_of(error, side="hospital", vendor="rest")
    assert failure == Failure(
        code="UNAVAILABLE",
        reason="HIS_UNAVAILABLE",
        domain=EDGE,
        metadata={"cause": "refused"},
        side="hospital",
        vendor="rest",
    )
    bad = errors.InvalidArgument(field_violations=[("patient.name", "required")])
    assert failure_of(bad).fields == ("patient.name",)
    assert failure_of(grpc.StatusCode.INTERNAL).code == "INTERNAL"
    assert attribute(failure_of("DATA_LOSS")).owner is Owner.CLOUD_PLATFORM


def test_exports() -> None:
    assert sorted(mesh.attribution.__all__) == [
        "Attribution",
        "Failure",
        "Owner",
        "RULES",
        "Rule",
        "attribute",
        "failure_of",
    ]

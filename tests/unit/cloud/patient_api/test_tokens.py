"""Page tokens: opaque, signed, bound to their query, expiring after 24 hours."""

from __future__ import annotations

import base64

import pytest
from google.type import date_pb2

from cloud.patient_api import PAGE_TOKEN_LIFETIME, PageTokens, TokenError
from hplus.cloud.v1 import patient_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def slots(doctor: str = "doc-1", day: int = 7, **kw: object) -> patient_pb2.ListSlotsRequest:
    return patient_pb2.ListSlotsRequest(
        hospital_id="h1",
        doctor_id=doctor,
        start_date=date_pb2.Date(year=2026, month=12, day=day),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(clock: Clock) -> PageTokens:
    return PageTokens("cluster-secret", clock=clock)


def continued(tokens: PageTokens, request: patient_pb2.ListSlotsRequest, token: str) -> str:
    follow = type(request)()
    follow.CopyFrom(request)
    follow.page_token = token
    return tokens.open("ListSlots", follow)


def test_a_token_gives_back_its_cursor_and_says_nothing_of_it(tokens: PageTokens) -> None:
    first = slots()
    token = tokens.issue("ListSlots", first, "cursor-after-slot-17")
    assert "cursor" not in token
    assert "slot" not in token
    assert continued(tokens, first, token) == "cursor-after-slot-17"
    # AIP-158: the page size may change between pages.
    assert continued(tokens, slots(page_size=7), token) == "cursor-after-slot-17"
    assert tokens.issue("ListSlots", first, "") == ""  # the last page has none
    assert tokens.open("ListSlots", first) == ""  # the first page has none


def test_an_edited_token_is_refused(tokens: PageTokens) -> None:
    first = slots()
    token = tokens.issue("ListSlots", first, "cursor-a")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    for position in (0, 5, 20, len(raw) // 2, len(raw) - 1):
        edited = bytearray(raw)
        edited[position] ^= 0x01
        bad = base64.urlsafe_b64encode(bytes(edited)).decode().rstrip("=")
        with pytest.raises(TokenError, match="not a token this server issued"):
            continued(tokens, first, bad)
    for garbage in ("!!!", "abc", "x" * 5000, token[:-3]):
        with pytest.raises(TokenError, match="not a token this server issued"):
            continued(tokens, first, garbage)


def test_a_token_from_another_node_secret_is_refused(tokens: PageTokens, clock: Clock) -> None:
    other = PageTokens("another-cluster", clock=clock)
    token = other.issue("ListSlots", slots(), "cursor-a")
    with pytest.raises(TokenError, match="not a token this server issued"):
        continued(tokens, slots(), token)
    # The same secret (another node of the cluster) accepts it.
    peer = PageTokens("another-cluster", clock=clock)
    assert continued(peer, slots(), token) == "cursor-a"


@pytest.mark.parametrize(
    "other",
    [
        slots(doctor="doc-2"),
        slots(day=8),
        slots(only_available=True),
        patient_pb2.ListSlotsRequest(
            hospital_id="h2",
            doctor_id="doc-1",
            start_date=date_pb2.Date(year=2026, month=12, day=7),
        ),
    ],
)
def test_a_token_of_another_query_is_refused(
    tokens: PageTokens, other: patient_pb2.ListSlotsRequest
) -> None:
    token = tokens.issue("ListSlots", slots(), "cursor-a")
    with pytest.raises(TokenError, match="belongs to another query"):
        continued(tokens, other, token)


def test_a_token_of_another_method_is_refused(tokens: PageTokens) -> None:
    search = patient_pb2.SearchHospitalsRequest(query="人民")
    token = tokens.issue("SearchHospitals", search, "cursor-a")
    follow = patient_pb2.SearchHospitalsRequest(query="人民", page_token=token)
    assert tokens.open("SearchHospitals", follow) == "cursor-a"
    with pytest.raises(TokenError, match="belongs to another query"):
        tokens.open("ListDoctors", follow)


def test_a_token_expires_after_24_hours(tokens: PageTokens, clock: Clock) -> None:
    token = tokens.issue("ListSlots", slots(), "cursor-a")
    clock.now += PAGE_TOKEN_LIFETIME - 1
    assert continued(tokens, slots(), token) == "cursor-a"
    clock.now += 2
    with pytest.raises(TokenError, match="has expired"):
        continued(tokens, slots(), token)


def test_a_token_from_the_future_is_refused(tokens: PageTokens, clock: Clock) -> None:
    token = tokens.issue("ListSlots", slots(), "cursor-a")
    clock.now -= 3600  # issued an hour "from now": not a clock skew between nodes
    with pytest.raises(TokenError, match="not a token this server issued"):
        continued(tokens, slots(), token)

"""The parameter change list between profiles, on the real profiles of the repository."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from frontend_server.profile import (
    ChangeKind,
    Risk,
    diff_profiles,
    format_changes,
    load_profile,
)
from mesh.config import dotted_path

PROFILES = Path(__file__).parents[4] / "frontend_server" / "profiles"
NAMES = sorted(p.name for p in PROFILES.glob("*.toml"))


def _plain(content: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(content, default=str))
    return loaded


def _flat(value: Any, path: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Every parameter by its dotted path (computed here independently of the diff)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flat(item, (*path, key)))
        if not value and path:
            out[dotted_path(path)] = {}
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for index, item in enumerate(value):
            out.update(_flat(item, (*path, index)))
    else:
        out[dotted_path(path)] = value
    return out


def test_there_are_three_real_profiles() -> None:
    assert len(NAMES) == 3


@pytest.mark.parametrize(("old_name", "new_name"), list(itertools.permutations(NAMES, 2)))
def test_the_change_list_between_real_profiles_is_complete_and_exact(
    old_name: str, new_name: str
) -> None:
    old = _plain(load_profile(PROFILES / old_name).content)
    new = _plain(load_profile(PROFILES / new_name).content)
    changes = diff_profiles(old, new)
    before, after = _flat(old), _flat(new)
    differing = {
        path
        for path in before.keys() | after.keys()
        if path not in before or path not in after or before[path] != after[path]
    }
    assert sorted(c.path for c in changes) == sorted(differing)
    for change in changes:
        if change.kind is ChangeKind.ADDED:
            assert change.path not in before
            assert change.old is None
        elif change.kind is ChangeKind.REMOVED:
            assert change.path not in after
            assert change.new is None
        else:
            assert change.old is not None
            assert change.new is not None
        # Applying the change list to the old profile gives the new one (no secrets in
        # these profiles but references, which are shown as they are).
        if change.new is not None:
            assert json.loads(change.new) == after[change.path]
        if change.old is not None:
            assert json.loads(change.old) == before[change.path]
    order = [Risk.HIGH, Risk.MEDIUM, Risk.UNKNOWN, Risk.LOW]
    ranks = [order.index(c.risk) for c in changes]
    assert ranks == sorted(ranks)
    text = format_changes(changes)
    assert len(text.splitlines()) == len(changes) + 1


@pytest.mark.parametrize("name", NAMES)
def test_a_profile_against_itself_has_no_changes(name: str) -> None:
    content = _plain(load_profile(PROFILES / name).content)
    assert diff_profiles(content, copy.deepcopy(content)) == []
    assert format_changes([]) == "no parameter changes"


def test_risks_are_judged_by_what_the_parameter_does() -> None:
    old = _plain(load_profile(PROFILES / "city-first-hospital.toml").content)
    new = copy.deepcopy(old)
    new["his"]["endpoints"][0]["url"] = "http://10.0.0.9:8080"
    new["fields"]["patient"]["phone"] = "tel"
    new["appointment"]["cancel_cutoff_minutes"] += 30
    new["his"]["timeouts"]["read_seconds"] += 1
    new["profile"]["name"] = "Renamed"
    new["tasks"]["max_attempts"] = 9
    new["something_new"] = {"x": 1}
    by_path = {c.path: c for c in diff_profiles(old, new)}
    assert by_path["his.endpoints[0].url"].risk is Risk.HIGH
    assert by_path["his.endpoints[0].url"].why == "HIS endpoint"
    assert by_path["fields.patient.phone"].risk is Risk.HIGH
    assert by_path["fields.patient.phone"].why == "field map"
    assert by_path["appointment.cancel_cutoff_minutes"].risk is Risk.MEDIUM
    assert by_path["his.timeouts.read_seconds"].risk is Risk.MEDIUM
    assert by_path["profile.name"].risk is Risk.LOW
    assert by_path["tasks.max_attempts"].risk is Risk.MEDIUM
    assert by_path["something_new.x"].risk is Risk.UNKNOWN
    assert by_path["something_new.x"].kind is ChangeKind.ADDED
    assert len(by_path) == 7


def test_secrets_are_never_shown() -> None:
    old = _plain(load_profile(PROFILES / "city-first-hospital.toml").content)
    new = copy.deepcopy(old)
    new["his"]["rest"]["token"] = "secret://his-token-2"
    db_old = {"his": {"db": {"password": "hunter2-raw", "url": "postgresql://his:pw-123@db/his"}}}
    db_new = {"his": {"db": {"password": "other-raw", "url": "postgresql://his:pw-456@db2/his"}}}
    changes = diff_profiles(old, new) + diff_profiles(db_old, db_new)
    shown = format_changes(changes) + json.dumps([c.to_json() for c in changes])
    token = next(c for c in changes if c.path == "his.rest.token")
    # References are shown as references, with the risk of a credential.
    assert token.old == '"secret://his-token"'
    assert token.new == '"secret://his-token-2"'
    assert token.risk is Risk.HIGH
    assert token.why == "HIS credential"
    for secret in ("hunter2-raw", "other-raw", "pw-123", "pw-456"):
        assert secret not in shown
    url = next(c for c in changes if c.path == "his.db.url")
    assert url.new == '"postgresql://his:<hidden>@db2/his"'


def test_numbers_equal_in_json_are_the_same_value() -> None:
    assert diff_profiles({"a": {"b": 5}}, {"a": {"b": 5.0}}) == []
    assert [c.kind for c in diff_profiles({"a": {"b": 5}}, {"a": {"b": True}})] == [
        ChangeKind.CHANGED
    ]

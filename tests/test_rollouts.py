"""The rollout value: parsing a PUT body, the stored form, and the split by key."""

from __future__ import annotations

import pytest

from bitpatch.server.core.rollouts import Rollout, bucket, parse_rollout
from bitpatch.server.errors import InvalidRequest


def test_a_body_parses_and_round_trips_through_the_stored_form():
    rollout = parse_rollout(
        {
            "canary": {"version": 3, "percent": 10},
            "shadow": {"version": 4, "percent": 25.5},
            "guard": {"metric": "agreement", "min_rows": 50, "max_drop": 2},
        }
    )
    stored = Rollout.from_json(rollout.to_json())
    assert stored == rollout and stored.live and stored.candidate.version == 3
    ended = Rollout.from_json(rollout.end("done").to_json())
    assert not ended.live and ended.ended.reason == "done" and ended.versions() == set()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON object"),
        ({"guard": {"metric": "accuracy", "min_rows": 1, "max_drop": 1}}, "canary or a shadow"),
        ({"canary": {"version": 2, "percent": 5}, "shadow": {"version": 2, "percent": 5}}, "both"),
        ({"canary": {"version": 0, "percent": 5}}, "integer >= 1"),
        ({"canary": {"version": 2, "percent": True}}, "percent"),
        ({"canary": {"version": 2}}, "canary must be"),
        (
            {
                "shadow": {"version": 2, "percent": 5},
                "guard": {"metric": "accuracy", "min_rows": 0, "max_drop": 1},
            },
            "min_rows",
        ),  # fmt: skip
        (
            {
                "shadow": {"version": 2, "percent": 5},
                "guard": {"metric": "accuracy", "min_rows": 5, "max_drop": -1},
            },
            "max_drop",
        ),  # fmt: skip
    ],
)
def test_bad_bodies_name_the_field(body, words):
    with pytest.raises(InvalidRequest, match=words):
        parse_rollout(body)


def test_buckets_are_stable_and_spread():
    assert bucket("t", "user-1", "canary") == bucket("t", "user-1", "canary")
    spread = [bucket("t", f"user-{i}", "canary") for i in range(10_000)]
    assert all(0 <= b < 100 for b in spread)
    assert abs(sum(b < 30 for b in spread) / 100 - 30) < 2  # percent of keys under 30


def test_raising_the_percent_keeps_the_keys_on_the_canary():
    small = parse_rollout({"canary": {"version": 2, "percent": 10}})
    large = parse_rollout({"canary": {"version": 2, "percent": 60}})
    keys = [f"k{i}" for i in range(500)]
    on_small = {k for k in keys if small.route("t", k, 1)[0] == 2}
    on_large = {k for k in keys if large.route("t", k, 1)[0] == 2}
    assert on_small and on_small <= on_large


def test_a_shadow_never_shadows_its_own_version():
    rollout = parse_rollout(
        {"canary": {"version": 2, "percent": 100}, "shadow": {"version": 3, "percent": 100}}
    )
    assert rollout.route("t", "k", 1) == (2, 3)
    only_shadow = parse_rollout({"shadow": {"version": 1, "percent": 100}})
    assert only_shadow.route("t", "k", 1) == (1, None)

"""The list window (RECSTREAM_LIST_WINDOW_MS, streams.core.throttle) on the embedded broker with
real workers: a user's first list leaves at once, the lists held behind it leave as one when the
window ends or before the input offsets are committed, and a kill -9 while lists are held loses
none of them (the input is read again and its outputs sent again)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from streams.core.demo import dumps
from tests.conftest import get_json, metric, records_for, wait_until

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)
ARTISTS = ("alpha", "beta", "gamma")
CATALOG = [{"id": f"{a}-{i}", "artist_id": a, "published_at": (NOW - timedelta(days=1 + i)).isoformat(),
            "price": 100.0} for a in ARTISTS for i in range(2)]


def follow(user: str, artist: str, n: int) -> tuple[bytes, bytes]:
    return user.encode(), dumps({"type": "track", "event": "followedArtist", "userId": user,
                                 "messageId": f"{user}-{n}", "timestamp": (NOW - timedelta(minutes=5 - n)).isoformat(),
                                 "properties": {"owner_id": artist}})


def start(cluster, window_ms: int, commit_s: float):
    cluster.env.update(RECSTREAM_LIST_WINDOW_MS=str(window_ms), RECSTREAM_INPUT_COMMIT_INTERVAL_S=str(commit_s))
    w = cluster.start_worker("w")
    cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in CATALOG])
    wait_until(lambda: metric(w, "recstream_catalog_records_total") >= len(CATALOG), 60, what="catalog")
    return w


def lists_of(cluster, user: str) -> list[dict]:
    return records_for(cluster, "recommendations", user)


def exposures(w) -> int:
    body = get_json(w, "/experiments")[1]
    return sum(v["exposures"] for e in body["experiments"] if e["kind"] == "recs" for v in e["variants"])


def artists_in(recs: dict) -> set[str]:
    return {i["artist_id"] for i in recs["items"] if i["source"] == "affinity"}


def first_list_then_two_more_follows(cluster, w, user: str) -> None:
    """The first follow's list, then two follows inside the window (held, as the metric shows)."""
    cluster.produce("events.segment", [follow(user, "alpha", 1)])
    wait_until(lambda: lists_of(cluster, user), 30, what="the first list, at once")
    cluster.produce("events.segment", [follow(user, "beta", 2), follow(user, "gamma", 3)])
    wait_until(lambda: metric(w, "recstream_signals_applied_total") >= 3, 30, what="the two follows applied")


def test_lists_held_in_the_window_leave_as_one_when_it_ends(cluster):
    # no commit comes first: the window's end sends it. The window must outlast reading the first
    # list back and producing the next two follows (over 1.5 s once, on a loaded CI machine).
    w = start(cluster, window_ms=8000, commit_s=60)
    first_list_then_two_more_follows(cluster, w, "busy")
    last = wait_until(lambda: (lambda got: got[-1] if got and artists_in(got[-1]) == set(ARTISTS) else None)(
        lists_of(cluster, "busy")), 30, what="the held list")
    assert last["trigger"] == "busy-3"  # the newest event held
    assert len(lists_of(cluster, "busy")) == 2 and metric(w, "recstream_held_lists_built_total") == 1
    # both lists counted as exposures in the experiment readout, the held one with no event behind it
    wait_until(lambda: exposures(w) == 2, 30, what="the held list's exposure in the readout")
    assert w.get("/recommendations/busy")[1] == dumps(last) or artists_in(last) == set(ARTISTS)


def test_held_lists_leave_before_the_input_offsets_are_committed(cluster):
    w = start(cluster, window_ms=600_000, commit_s=1)  # the window never ends here: the commit must send them
    first_list_then_two_more_follows(cluster, w, "committed")
    try:
        last = wait_until(lambda: (lambda got: got[-1] if artists_in(got[-1]) == set(ARTISTS) else None)(
            lists_of(cluster, "committed")), 60, what="the list sent before the commit")
    except pytest.fail.Exception as failed:  # once on CI: say whether commits ran and what was still held
        pytest.fail(f"{failed}; worker: " + ", ".join(f"{name} {metric(w, name)}" for name in (
            "recstream_lists_owed", "recstream_input_commits_total", "recstream_held_lists_built_total")))
    assert last["trigger"] == "committed-3" and metric(w, "recstream_held_lists_built_total") >= 1


def test_a_kill_9_while_lists_are_held_loses_none(cluster):
    w = start(cluster, window_ms=600_000, commit_s=600)  # held, and nothing committed, when the worker dies
    first_list_then_two_more_follows(cluster, w, "crashed")
    assert all(artists_in(r) == {"alpha"} for r in lists_of(cluster, "crashed"))  # still held
    w.kill()
    cluster.env.update(RECSTREAM_LIST_WINDOW_MS="500")
    cluster.start_worker("w")  # same state directory: a restart
    wait_until(lambda: artists_in(lists_of(cluster, "crashed")[-1]) == set(ARTISTS), 60,
               what="the held list after the restart")  # its trigger: a redelivered event or catalog record

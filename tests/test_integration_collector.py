"""The Segment-compatible collector on a real worker, fed by the real tracking SDKs
(segment-analytics-python and rudder-sdk-python, pinned in the dev extras), and what a fresh
worker exports before any event (every documented counter at 0, its own state partitions)."""

from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.error
import urllib.request
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from segment.analytics.request import APIError

from streams.core.demo import dumps
from streams.core.metrics import COUNTERS
from tests.conftest import Cluster, get_json, metric, records_for, wait_until

pytestmark = pytest.mark.integration

KEY = "wk-test"
NOW = datetime.now(timezone.utc)
CATALOG = [{"id": f"{artist}-{i}", "artist_id": artist, "published_at": (NOW - timedelta(days=1 + i)).isoformat(),
            "price": 500.0, "availability": "for sale", "is_merch": False}
           for artist in ("sdk-a", "sdk-b", "other") for i in range(3)]


@pytest.fixture(scope="module")
def deployment(broker, tmp_path_factory):
    cluster = Cluster(broker, tmp_path_factory.mktemp("collector"), env={"RECSTREAM_WRITE_KEYS": f"{KEY},second-key"})
    worker = cluster.start_worker()
    yield cluster, worker
    cluster.stop()


def post(worker, path: str, data: bytes, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(worker.base_url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def auth(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(), "Content-Type": "application/json"}


def top_artists(worker, user: str) -> list[str]:
    status, body = get_json(worker, f"/users/{user}/affinity")
    return [a["artist_id"] for a in body["artists"]] if status == 200 else []


def test_a_fresh_worker_exports_every_counter_and_its_own_partitions(deployment):
    _, worker = deployment
    status, body = worker.get("/metrics")
    assert status == 200
    for name in COUNTERS:  # present from the start, 0 until the first increment
        assert f"\n{name} 0\n" in "\n" + body.decode() or f"\n{name}{{" in "\n" + body.decode(), name
    assert "\nrecstream_dead_letters_total 0\n" in "\n" + body.decode()
    status, health = get_json(worker, "/health")
    # one worker owns all 4 partitions of its state (not every topic's partitions: 60+)
    assert status == 200 and health["assigned_partitions"] == 4 and health["partitions"] == [0, 1, 2, 3]


def test_segment_sdk_events_reach_affinity_and_lists(deployment):
    cluster, worker = deployment
    cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in CATALOG])
    wait_until(lambda: metric(worker, "recstream_catalog_records_total") >= len(CATALOG), 60, what="catalog")
    errors: list = []
    client = SegmentClient(KEY, host=worker.base_url, sync_mode=True, on_error=lambda e, batch: errors.append(e))
    client.track("seg-user", "followedArtist", {"owner_id": "sdk-a"}, message_id="seg-1")
    client.track("seg-user", "artworkSave", {"artwork_id": "sdk-a-1"}, message_id="seg-2")
    client.identify("seg-user", {"plan": "pro"}, message_id="seg-3")  # identify/page are accepted, not signals
    client.page("seg-user", name="Home", message_id="seg-4")
    assert not errors
    wait_until(lambda: top_artists(worker, "seg-user")[:1] == ["sdk-a"], 60, what="affinity from the Segment SDK")
    recs = wait_until(lambda: (lambda r: r if r[0] == 200 and r[1]["trigger"] != "cold-start" else None)(
        get_json(worker, "/recommendations/seg-user")), 60, what="a personal list")[1]
    assert recs["items"][0]["artist_id"] == "sdk-a" and recs["items"][0]["source"] == "affinity"
    # what the collector produced: keyed by user id, stamped with receivedAt, no credential
    produced = records_for(cluster, "events.segment", "seg-user")
    assert [m["messageId"] for m in produced] == ["seg-1", "seg-2", "seg-3", "seg-4"]
    assert all(m["receivedAt"] and "writeKey" not in m for m in produced)
    assert metric(worker, "recstream_collector_messages_total") >= 4


def test_rudder_sdk_batches_gzip_through_the_queue(deployment):
    _, worker = deployment
    errors: list = []
    client = RudderClient("second-key", host=worker.base_url, gzip=True, on_error=lambda e, batch: errors.append(e))
    for i in range(25):  # queued by the SDK's thread and sent as batches
        client.track("rudder-user", "followedArtist", {"owner_id": "sdk-b"}, message_id=f"rud-{i}")
    client.track(anonymous_id="rudder-anon", event="followedArtist", properties={"owner_id": "other"},
                 message_id="rud-x")
    client.flush()
    client.join()
    assert not errors
    wait_until(lambda: top_artists(worker, "rudder-user")[:1] == ["sdk-b"], 60, what="affinity from the RudderStack SDK")
    status, body = get_json(worker, "/users/rudder-user/affinity")
    assert body["events"] == 25  # each message applied once
    assert top_artists(worker, "rudder-anon") == ["other"]  # keyed by the anonymous id


def test_wrong_keys_and_bad_bodies_get_clear_errors_and_produce_nothing(deployment):
    cluster, worker = deployment
    msg = {"type": "track", "event": "followedArtist", "userId": "refused-user", "properties": {"owner_id": "other"}}
    status, body = post(worker, "/v1/batch", json.dumps({"batch": [msg]}).encode(), auth("not-a-key"))
    assert (status, body["success"], body["message"]) == (401, False, "unknown write key")
    status, body = post(worker, "/v1/track", json.dumps(msg).encode(), {"Content-Type": "application/json"})
    assert status == 401 and "no write key" in body["message"]
    big = {**msg, "properties": {"owner_id": "other", "note": "x" * 40_000}}
    status, body = post(worker, "/v1/batch", gzip.compress(json.dumps({"batch": [msg, big]}).encode()),
                        {**auth(KEY), "Content-Encoding": "gzip"})
    assert status == 400 and body["message"] == "batch[1]: over 32 KB"
    status, body = post(worker, "/v1/batch", b"{not json", auth(KEY))
    assert status == 400 and body["code"] == "bad_request"
    # 50 MB of spaces in 50 KB: aiohttp stops inflating at 1 MB, and the rest is left unread on a closed
    # connection (aiohttp inflated it all before the next request: a 900 MB bomb held the worker for seconds)
    bomb = gzip.compress(b" " * 50_000_000)
    status, body = post(worker, "/v1/batch", bomb, {**auth(KEY), "Content-Encoding": "gzip"})
    assert (status, body["code"], body["message"]) == (400, "bad_request", "the batch is over 500 KB")
    status, body = post(worker, "/v1/batch", b"\x1f\x8bgarbage", {**auth(KEY), "Content-Encoding": "gzip"})
    assert status == 400 and "unreadable body" in body["message"]  # a 500 before (found by fuzzing): SDKs retry those
    assert "Unhandled exception" not in (cluster.root / "w0.log").read_text()  # and no traceback logged for it
    # the SDK surfaces the server's message on a refused key
    with pytest.raises(APIError, match="unknown write key"):
        SegmentClient("bad", host=worker.base_url, sync_mode=True, max_retries=0).track(
            "refused-user", "followedArtist", {"owner_id": "other"})
    status, body = post(worker, "/v1/track", json.dumps({**msg, "userId": "accepted-user"}).encode(), auth(KEY))
    assert (status, body) == (200, {"success": True})
    wait_until(lambda: top_artists(worker, "accepted-user") == ["other"], 60, what="the accepted message")
    assert records_for(cluster, "events.segment", "refused-user") == []
    assert metric(worker, "recstream_collector_rejected_total", reason="unauthorized") >= 2
    assert metric(worker, "recstream_collector_rejected_total", reason="bad_request") >= 2


def test_a_browser_sdk_posts_across_origins_to_its_short_paths(deployment):
    """analytics.js 2.0 posts text/plain bodies holding the write key to /v1/t (one message) and /v1/b
    (batches), from a page on another origin: the paths were a 400 (unknown endpoint), a preflight a 405,
    and no answer carried Access-Control-Allow-Origin, so the browser hid each one (an outside check)."""
    _, worker = deployment
    request = urllib.request.Request(worker.base_url + "/v1/b", method="OPTIONS", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    with urllib.request.urlopen(request, timeout=15) as response:
        assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
    page = {"Origin": "https://shop.example", "Content-Type": "text/plain"}
    view = {"type": "track", "event": "followedArtist", "anonymousId": "browser-anon", "properties": {"owner_id": "br-a"}}
    one = urllib.request.Request(worker.base_url + "/v1/t", method="POST", headers=page,
                                 data=json.dumps({**view, "messageId": "br-1", "writeKey": KEY}).encode())
    with urllib.request.urlopen(one, timeout=15) as response:
        assert response.status == 200 and response.headers["Access-Control-Allow-Origin"] == "*"
    batch = {"batch": [{**view, "messageId": "br-2"}, {**view, "messageId": "br-3"}], "writeKey": KEY}
    assert post(worker, "/v1/b", json.dumps(batch).encode(), page) == (200, {"success": True})
    wait_until(lambda: get_json(worker, "/users/browser-anon/affinity")[1].get("events") == 3, 60,
               what="the browser's three messages")
    refused = urllib.request.Request(worker.base_url + "/v1/t", method="POST", headers=page, data=b"{not json")
    try:
        urllib.request.urlopen(refused, timeout=15)
    except urllib.error.HTTPError as err:  # a refusal the page can read too
        assert err.code == 400 and err.headers["Access-Control-Allow-Origin"] == "*"


def test_a_device_two_days_ahead_is_corrected_from_its_sent_at(deployment):
    """Segment's clock correction (an outside check: every event of a phone 48 h ahead was dead-lettered)."""
    _, worker = deployment
    ahead = datetime.now(timezone.utc) + timedelta(hours=48)
    msg = {"type": "track", "event": "followedArtist", "userId": "skewed-phone", "messageId": "skew-1",
           "properties": {"owner_id": "skew-a"}, "timestamp": (ahead - timedelta(seconds=5)).isoformat()}
    assert post(worker, "/v1/batch", json.dumps({"batch": [msg], "sentAt": ahead.isoformat()}).encode(),
                auth(KEY)) == (200, {"success": True})
    wait_until(lambda: top_artists(worker, "skewed-phone") == ["skew-a"], 60, what="the corrected event applied")
    assert abs(get_json(worker, "/users/skewed-phone/affinity")[1]["as_of"] - time.time()) < 60


def test_nan_and_infinity_are_a_400_and_produce_nothing_plain_or_compressed(deployment):
    """Fuzzing: {"userId":NaN} was a 200, and invalid JSON ("userId":NaN, keyed "nan") went to
    events.segment for the worker to dead-letter."""
    cluster, worker = deployment
    single = b'{"userId": "nan-user", "event": "x", "properties": {"p": NaN}}'
    batch = b'{"batch": [{"type": "track", "userId": "nan-user", "event": "x", "properties": {"p": -Infinity}}]}'
    for path, raw in (("/v1/track", single), ("/v1/track", b'{"userId": NaN, "event": "x"}'), ("/v1/batch", batch)):
        for encoding, packed in (("identity", raw), ("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
            status, body = post(worker, path, packed, {**auth(KEY), "Content-Encoding": encoding})
            assert (status, body.get("code")) == (400, "bad_request"), (path, encoding, body)
            assert "is not a JSON value" in body["message"]
    produced = cluster.consume_all("events.segment", idle_ms=700)
    assert not [r for r in produced if r.key in (b"nan-user", b"nan")]


def test_an_unknown_content_encoding_is_a_415_not_read_as_plain(deployment):
    """Fuzzing: aiohttp reads a body in a coding it does not know ("foo") as if uncompressed."""
    cluster, worker = deployment
    msg = json.dumps({"type": "track", "event": "x", "userId": "foo-coded"}).encode()
    before = metric(worker, "recstream_collector_rejected_total", reason="unsupported_encoding")
    for encoding in ("foo", "gzip, gzip", "compress"):
        status, body = post(worker, "/v1/track", msg, {**auth(KEY), "Content-Encoding": encoding})
        assert (status, body.get("code")) == (415, "unsupported_encoding"), (encoding, body)
        assert "gzip" in body["message"]
    assert post(worker, "/v1/track", msg, {**auth(KEY), "Content-Encoding": "identity"})[0] == 200
    assert len(records_for(cluster, "events.segment", "foo-coded")) == 1  # the identity one
    assert metric(worker, "recstream_collector_rejected_total", reason="unsupported_encoding") == before + 3


def test_bearer_token_does_not_guard_the_collector(broker, tmp_path):
    cluster = Cluster(broker, tmp_path, env={"RECSTREAM_API_TOKEN": "tok", "RECSTREAM_WRITE_KEYS": KEY})
    try:
        worker = cluster.start_worker()
        msg = {"type": "track", "event": "followedArtist", "userId": "u", "properties": {"owner_id": "x"}}
        assert post(worker, "/v1/track", json.dumps(msg).encode(), auth(KEY))[0] == 200
        assert post(worker, "/v1/track", json.dumps(msg).encode(), auth("wrong"))[0] == 401
    finally:
        cluster.stop()

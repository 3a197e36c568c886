"""The Segment-compatible collector's pure half (streams/core/collector.py)."""

import base64
import gzip
import json
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.collector import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    STAMPS_BYTES,
    Rejected,
    Unauthorized,
    collect,
)

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z
TRACK = {"type": "track", "userId": "u1", "event": "artworkSave", "properties": {"artwork_id": "a1"}}


def basic(key: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_batch_becomes_one_record_per_message_keyed_by_user_with_received_at():
    anon = {"type": "page", "anonymousId": "anon-7", "name": "Home"}
    out = collect("/v1/batch", body({"batch": [TRACK, anon]}), NOW, basic("wk"))
    assert out.write_key == "wk"
    assert [key for key, _ in out.records] == [b"u1", b"anon-7"]
    first, second = (json.loads(value) for _, value in out.records)
    assert first["messageId"].startswith("recstream-") and first["messageId"] != second["messageId"]
    assert first == {**TRACK, "receivedAt": "2026-09-21T14:13:20.000Z", "timestamp": "2026-09-21T14:13:20.000Z",
                     "messageId": first["messageId"]}
    assert second["receivedAt"] == "2026-09-21T14:13:20.000Z" and second["name"] == "Home"
    given = {**TRACK, "messageId": "m1", "timestamp": "2026-09-20T00:00:00Z"}  # the sender's own are kept
    kept = json.loads(collect("/v1/track", body(given), NOW).records[0][1])
    assert (kept["messageId"], kept["timestamp"]) == ("m1", "2026-09-20T00:00:00Z")


def test_a_message_is_keyed_by_the_id_the_worker_takes_and_an_id_it_refuses_goes_unkeyed():
    """An object as userId was keyed by its Python repr ("{'a': 1}", an outside fuzzer), and a blank
    userId hid the anonymousId the worker takes; each still reaches the worker, which dead-letters what
    it refuses (docs/events.md). A whole number is its decimal string, as Segment takes it (analytics-ruby
    and -php send Rails' integer ids: each event was dead-lettered, an outside check), 7187516023.0 too (a
    client whose numbers are floats: accepted, then dead-lettered); a bool is not, nor 1e25 (no one number)."""
    messages = [{"type": "track", "event": "x", "userId": {"a": 1}}, {"type": "track", "event": "x", "userId": 7},
                {"type": "track", "event": "x", "userId": "u" * 300},
                {"type": "track", "event": "x", "userId": " ", "anonymousId": "anon-1"},
                {"type": "track", "event": "x", "userId": True, "anonymousId": 12},
                {"type": "alias", "userId": "u1", "previousId": 8},
                {"type": "track", "event": "x", "userId": 7187516023.0}, {"type": "track", "event": "x", "userId": 1e25}]
    out = collect("/v1/batch", body({"batch": messages}), NOW)
    assert [key for key, _ in out.records] == [None, b"7", None, b"anon-1", b"12", b"u1", b"7187516023", None]
    assert [json.loads(value)["userId"] for _, value in out.records] == [{"a": 1}, "7", "u" * 300, " ", True, "u1",
                                                                          "7187516023", 1e25]
    assert json.loads(out.records[4][1])["anonymousId"] == "12" and json.loads(out.records[5][1])["previousId"] == "8"


def test_single_message_endpoints_take_their_type_from_the_path():
    for endpoint in ("track", "identify", "page", "screen", "alias", "group"):
        msg = {"userId": "u1", "event": "x"} if endpoint == "track" else {"userId": "u1"}
        (record,) = collect(f"v1/{endpoint}", body(msg), NOW).records
        assert json.loads(record[1])["type"] == endpoint


def test_import_is_the_old_name_of_batch():
    assert len(collect("/v1/import", body({"batch": [TRACK]}), NOW).records) == 1


def test_write_key_from_the_body_is_accepted_and_kept_out_of_the_records():
    out = collect("/v1/batch", body({"batch": [{**TRACK, "writeKey": "wk2"}], "writeKey": "wk2"}), NOW,
                  accepted_keys=frozenset({"wk2"}))
    assert out.write_key == "wk2"
    assert "writeKey" not in json.loads(out.records[0][1])


@pytest.mark.parametrize("auth", [None, basic("other"), basic(""), "Basic !!!notbase64", "Bearer wk"])
def test_unknown_or_missing_write_keys_are_unauthorized(auth):
    with pytest.raises(Unauthorized):
        collect("/v1/batch", body({"batch": [TRACK]}), NOW, auth, accepted_keys=frozenset({"wk", "wk9"}))


def test_any_key_is_accepted_when_none_are_configured():
    assert collect("/v1/track", body(TRACK), NOW, None).write_key == ""
    assert collect("/v1/track", body(TRACK), NOW, basic("whatever", "pw")).write_key == "whatever"


@pytest.mark.parametrize(("endpoint", "raw", "says"), [
    ("/v1/batch", b"not json", "the body is not JSON"),
    ("/v1/batch", b"[1, 2]", "not a JSON object"),
    ("/v1/batch", b"[" * 100_000, "the body is not JSON"),
    ("/v1/batch", gzip.compress(body({"batch": [TRACK]})), "the body is not JSON"),  # aiohttp inflates first
    ("/v1/batch", body({"batch": "x"}), "'batch' array"),
    ("/v1/batch", body({"batch": [TRACK, 5]}), "batch[1]: not a JSON object"),
    ("/v1/batch", body({"batch": [{**TRACK, "type": "purchase"}]}), "batch[0]: type must be"),
    ("/v1/batch", body({"batch": [{"type": "track", "event": "x"}]}), "batch[0]: needs userId"),
    ("/v1/track", body({"event": "x", "userId": ""}), "the message: needs userId"),
    ("/v1/events", body(TRACK), "unknown endpoint /v1/events"),
])
def test_bad_requests_are_rejected_with_the_part_at_fault(endpoint, raw, says):
    with pytest.raises(Rejected) as info:
        collect(endpoint, raw, NOW)
    assert says in str(info.value)


def test_a_message_over_32_kb_is_rejected_by_index():
    big = {**TRACK, "properties": {"artwork_id": "a1", "note": "x" * (MAX_MESSAGE_BYTES + STAMPS_BYTES)}}
    with pytest.raises(Rejected, match=r"batch\[1\]: over 32 KB"):
        collect("/v1/batch", body({"batch": [TRACK, big]}), NOW)


def test_a_message_the_sdk_measured_at_32_kb_is_taken_with_what_the_collector_adds():
    """The SDKs measure a message before the collector stamps receivedAt (and a messageId and timestamp
    when missing): one at the SDK's limit was over it once stamped, and the whole batch refused with a
    400 the SDKs do not retry (an outside check with analytics-python and analytics-node)."""
    bare = {"type": "track", "userId": "u1", "event": "artworkSave", "properties": {"note": ""}}
    pad = MAX_MESSAGE_BYTES - len(json.dumps(bare, separators=(",", ":")))
    at_limit = {**bare, "properties": {"note": "x" * pad}}
    assert len(json.dumps(at_limit, separators=(",", ":"))) == MAX_MESSAGE_BYTES
    (_, value), _ = collect("/v1/batch", body({"batch": [at_limit, TRACK]}), NOW).records
    assert len(value) > MAX_MESSAGE_BYTES and json.loads(value)["receivedAt"]
    over = {**bare, "properties": {"note": "x" * (pad + 300)}}
    with pytest.raises(Rejected, match=r"batch\[0\]: over 32 KB"):
        collect("/v1/batch", body({"batch": [over]}), NOW)


def test_the_browser_and_mobile_sdks_short_paths_are_their_endpoints():
    """analytics.js 2.0 posts one message to /v1/t, /v1/p, ... and batches to /v1/b (they were a 400)."""
    for short, kind in (("t", "track"), ("p", "page"), ("i", "identify"), ("a", "alias"), ("g", "group"),
                        ("s", "screen")):
        msg = {"userId": "u1", "event": "x"} if kind == "track" else {"userId": "u1", "previousId": "p"}
        (record,) = collect(f"/v1/{short}", body({**msg, "writeKey": "wk"}), NOW).records
        assert json.loads(record[1])["type"] == kind
    assert collect("/v1/b", body({"batch": [TRACK, TRACK], "writeKey": "wk"}), NOW).write_key == "wk"


def test_a_batch_over_500_kb_is_rejected():
    padding = "x" * (MAX_BATCH_BYTES + 1)
    with pytest.raises(Rejected, match="over 500 KB"):
        collect("/v1/batch", body({"batch": [TRACK], "pad": padding}), NOW)


@given(st.binary(max_size=2000), st.sampled_from(["/v1/batch", "/v1/track", "/v1/x"]))
def test_any_body_is_accepted_or_rejected_never_anything_else(raw, endpoint):
    try:
        out = collect(endpoint, raw, NOW)
    except (Rejected, Unauthorized):
        return
    for key, value in out.records:
        assert key and json.loads(value)["receivedAt"]


@given(st.lists(st.text(), min_size=1, max_size=3), st.sampled_from(["userId", "event", "context"]))
def test_any_json_string_even_a_lone_surrogate_is_produced_for_the_firewall_to_judge(texts, field):
    """Fuzzing: an escaped lone surrogate ("\\ud800", which JSON allows and UTF-8 cannot hold) raised
    inside the collector: HTTP 500, and the batch's other messages were refused with it."""
    from streams.core.events import parse_segment
    from streams.core.properties import Rejected as Dead

    bad = {**TRACK, field: "x\ud800" + "".join(texts)}
    raw = json.dumps({"batch": [TRACK, bad, {**TRACK, "userId": "u3"}]}).encode()  # ASCII, "\ud800" escaped
    out = collect("/v1/batch", raw, NOW)
    assert [json.loads(v)["userId"] for _, v in out.records][::2] == ["u1", "u3"]
    for key, value in out.records:
        value.decode("utf-8")  # valid UTF-8, as Kafka clients expect
        key.decode("utf-8")
    assert isinstance(parse_segment(out.records[1][1]), Dead)  # the worker dead-letters it with a reason
    assert not isinstance(parse_segment(out.records[0][1]), Dead)


@pytest.mark.parametrize("raw", [
    b'{"userId": NaN, "event": "x"}',
    b'{"userId": "u1", "event": "x", "properties": {"p": Infinity}}',
    b'{"userId": "u1", "event": "x", "properties": {"p": -Infinity}}',
    b'{"userId": "u1", "event": "x", "properties": {"price": 1e999}}',  # a float(): inf all the same
    b'{"batch": [{"type": "track", "userId": "u1", "event": "x", "properties": {"p": NaN}}]}',
])
def test_nan_and_infinity_are_not_json_and_are_rejected(raw):
    """Fuzzing: json.loads takes NaN and Infinity, and the collector answered 200 and produced
    invalid JSON ("userId":NaN, keyed "nan") for the worker to dead-letter."""
    for endpoint in ("/v1/track", "/v1/batch"):
        with pytest.raises(Rejected, match="not JSON"):
            collect(endpoint, raw, NOW)


def test_a_device_clock_is_corrected_from_sent_at_as_segment_does():
    """timestamp = receivedAt - (sentAt - originalTimestamp): a phone two days ahead had every event
    dead-lettered invalid_timestamp (an outside check with analytics-python); the device's own time
    stays as originalTimestamp. Within a second of ours, or without a usable sentAt, nothing moves."""
    ahead = 2 * 86400.0
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")  # noqa: E731
    event = {**TRACK, "timestamp": iso(NOW + ahead - 30)}  # 30 s before the batch left the phone
    (_, value), = collect("/v1/batch", body({"batch": [event], "sentAt": iso(NOW + ahead)}), NOW).records
    got = json.loads(value)
    assert got["timestamp"] == "2026-09-21T14:12:50.000Z" and got["originalTimestamp"] == event["timestamp"]
    per_message = {**event, "sentAt": iso(NOW + ahead)}  # analytics.js sets it on each message
    assert json.loads(collect("/v1/t", body(per_message), NOW).records[0][1])["timestamp"] == "2026-09-21T14:12:50.000Z"
    for sent_at in (iso(NOW + 0.5), "yesterday", 5, None, "9999-12-31T23:59:59Z"):
        untouched = {**TRACK, "timestamp": "9999-12-31T00:00:00Z" if sent_at == 5 else iso(NOW - 30)}
        (_, value), = collect("/v1/batch", body({"batch": [untouched], "sentAt": sent_at}), NOW).records
        assert json.loads(value)["timestamp"] == untouched["timestamp"] and "originalTimestamp" not in json.loads(value)


def test_a_device_time_given_only_as_original_timestamp_is_the_event_time():
    """An outside differential check: with no `timestamp` and a device clock within a second of ours, the
    collector stamped receivedAt over the device's originalTimestamp (an offline queue's unfollow of two hours
    ago beat an hour-old follow over HTTP only; Kafka and replay kept the device's time)."""
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")  # noqa: E731
    queued = {**TRACK, "originalTimestamp": iso(NOW - 7200), "sentAt": iso(NOW)}
    got = json.loads(collect("/v1/track", body(queued), NOW).records[0][1])
    assert got.get("timestamp", got["originalTimestamp"]) == iso(NOW - 7200) and got["originalTimestamp"] == iso(NOW - 7200)
    ahead = {**queued, "originalTimestamp": iso(NOW + 86400 - 7200), "sentAt": iso(NOW + 86400)}  # still corrected
    assert json.loads(collect("/v1/track", body(ahead), NOW).records[0][1])["timestamp"] == iso(NOW - 7200)[:-1] + ".000Z"
    bare = json.loads(collect("/v1/track", body(TRACK), NOW).records[0][1])
    assert bare["timestamp"] == bare["receivedAt"]  # no device time at all: the time it arrived, as Segment


@pytest.mark.parametrize("spelled", ["2026-09-23T14:13:20Z", "2026-09-23t14:13:20z", "2026-09-23T14:13:20.000+00:00"])
def test_a_device_clock_is_corrected_however_the_worker_may_spell_the_time(spelled):
    """The collector read sentAt and timestamp with Python's ISO parser, the worker with msgspec's RFC 3339 one: a
    phone 48 h ahead spelling `t`/`z` in lower case was not corrected and every event dead-lettered (an outside
    differential check)."""
    event = {**TRACK, "timestamp": spelled, "sentAt": spelled}
    assert json.loads(collect("/v1/t", body(event), NOW + 2 * 86400).records[0][1])["timestamp"] == spelled
    got = json.loads(collect("/v1/t", body(event), NOW).records[0][1])
    assert got["timestamp"] == "2026-09-21T14:13:20.000Z" and got["originalTimestamp"] == spelled


@pytest.mark.parametrize("unread", ["2026-09-23", "20260923T141320Z", "2026-09-23T14:13Z"])
def test_a_time_the_worker_cannot_read_is_left_for_it_to_refuse(unread):
    """Python's parser takes forms msgspec refuses: the collector then rewrote `timestamp` and the worker refused
    the device's string kept in originalTimestamp instead (the same verdict, another detail)."""
    event = {**TRACK, "timestamp": unread, "sentAt": "2026-09-23T14:13:20Z"}
    got = json.loads(collect("/v1/t", body(event), NOW).records[0][1])
    assert got["timestamp"] == unread and "originalTimestamp" not in got


def test_a_message_without_message_id_sent_twice_is_one_message():
    """A retry of a message without messageId (curl after a 503) counted twice over HTTP and once on Kafka, where
    identical bytes share their content id; with no device time the two sends are two arrivals, as on Segment."""
    timed = {**TRACK, "timestamp": "2026-09-21T14:00:00Z"}
    first, again = (json.loads(collect("/v1/track", body({**timed, "sentAt": s}), t).records[0][1])
                    for s, t in (("2026-09-21T14:13:20Z", NOW), ("2026-09-21T14:13:50Z", NOW + 30)))
    assert first["messageId"] == again["messageId"]
    other = json.loads(collect("/v1/track", body({**timed, "event": "artworkUnsave"}), NOW).records[0][1])
    assert other["messageId"] != first["messageId"]
    for null in (json.loads(collect("/v1/track", body({**timed, "messageId": None}), t).records[0][1])
                 for t in (NOW, NOW + 30)):
        assert null["messageId"] == first["messageId"]  # null is no id, as the worker reads it
    untimed = [json.loads(collect("/v1/track", body(TRACK), t).records[0][1])["messageId"] for t in (NOW, NOW + 30)]
    assert untimed[0] != untimed[1]


@pytest.mark.parametrize("raw", [b"\xef\xbb\xbf" + body(TRACK), body(TRACK).decode().encode("utf-16")])
def test_a_body_that_is_not_utf8_json_is_a_400(raw):
    """json.loads guesses UTF-16 and skips a BOM: the collector took bodies the topic dead-letters."""
    with pytest.raises(Rejected, match="not JSON"):
        collect("/v1/track", raw, NOW)


@pytest.mark.parametrize("blank", ["", " ", "\u200b", "\u0301"])
def test_a_message_whose_only_id_is_blank_is_a_400_as_an_empty_one(blank):
    with pytest.raises(Rejected, match="needs userId or anonymousId"):
        collect("/v1/track", body({**TRACK, "userId": blank}), NOW)
    assert collect("/v1/track", body({**TRACK, "userId": blank, "anonymousId": "a1"}), NOW).records[0][0] == b"a1"

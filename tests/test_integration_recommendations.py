"""Recommendations end to end on the embedded broker with a real worker."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from streams.core.demo import dumps
from tests.conftest import get_json, metric, records_for, wait_until

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)
ARTISTS = ["alpha", "beta", "gamma"]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def artwork(wid: str, artist: str, days_ago: float, **kw) -> dict:
    return {"id": wid, "artist_id": artist, "published_at": iso(NOW - timedelta(days=days_ago)),
            "price": 1000.0, "availability": "for sale", "is_merch": False, **kw}


CATALOG = ([artwork(f"{a}-{i}", a, 1 + i) for a in ARTISTS for i in range(3)]
           + [artwork(f"filler-{i}", f"filler-artist-{i}", 40 + i) for i in range(20)]
           + [artwork("alpha-merch", "alpha", 0.5, is_merch=True), artwork("beta-sold", "beta", 0.5, availability="sold")])
CURATED = ["filler-3", "filler-7", "beta-sold"]


def track(user: str, event: str, mid: str, anonymous: bool = False, minutes_ago: float = 1, **props) -> tuple:
    ev = {"type": "track", "event": event, "messageId": mid, "timestamp": iso(NOW - timedelta(minutes=minutes_ago)),
          "properties": props, ("anonymousId" if anonymous else "userId"): user}
    return user.encode(), dumps(ev)


@pytest.fixture(scope="module")
def worker(module_cluster):
    w = module_cluster.start_worker()
    module_cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in CATALOG])
    module_cluster.produce("catalog.curated", [(b"curated", dumps({"artwork_ids": CURATED}))])
    wait_until(lambda: metric(w, "recstream_catalog_records_total") >= len(CATALOG), 60, what="catalog")
    wait_until(lambda: metric(w, "recstream_curated_updates_total") >= 1, 60, what="curated list")
    return w


def sources(recs: dict) -> list[str]:
    return [i["source"] for i in recs["items"]]


def test_onboarding_cold_start_then_personal_after_two_follows(module_cluster, worker):
    status, cold = get_json(worker, "/recommendations/newbie")
    assert status == 200 and cold["trigger"] == "cold-start" and cold["variant"] in ("A", "B")
    assert [i["artwork_id"] for i in cold["items"][:2]] == ["filler-3", "filler-7"]  # curated first, sold one skipped
    assert len(cold["items"]) == 6 and set(sources(cold)) <= {"curated", "trending", "latest"}

    module_cluster.produce("events.segment", [
        track("newbie", "followedArtist", "nb-1", owner_id="alpha", owner_type="artist"),
        track("newbie", "followedArtist", "nb-2", owner_id="beta", owner_type="artist", minutes_ago=0.5)])
    lists = wait_until(lambda: [r for r in records_for(module_cluster, "recommendations", "newbie")
                                if r["trigger"] == "nb-2"], 30, what="personal list")
    personal = lists[-1]
    picks = [i for i in personal["items"] if i["source"] == "affinity"]
    assert {i["artist_id"] for i in picks} == {"alpha", "beta"}
    if personal["variant"] == "A":  # the strict order: the followed artists' works only
        assert len(picks) == 6
    else:  # personalised popularity: at most two works per artist while others exist
        assert len(picks) == 4 and len(personal["items"]) == 6
    assert "alpha-merch" not in json.dumps(personal) and "beta-sold" not in json.dumps(personal)
    assert get_json(worker, "/recommendations/newbie")[1]["items"] == personal["items"]


def test_new_artwork_by_followed_artist_reaches_fans(module_cluster, worker):
    module_cluster.produce("events.segment", [track("fan-1", "followedArtist", "fan-1-f", owner_id="gamma")])
    wait_until(lambda: records_for(module_cluster, "recommendations", "fan-1"), 30, what="fan's first list")
    fresh = artwork("gamma-fresh", "gamma", 0.01)
    module_cluster.produce("catalog.artworks", [(b"gamma-fresh", dumps(fresh))])
    pushed = wait_until(lambda: [r for r in records_for(module_cluster, "recommendations", "fan-1")
                                 if r["trigger"] == "catalog:gamma-fresh"], 30, what="refresh push")
    assert pushed[-1]["items"][0]["artwork_id"] == "gamma-fresh"


def test_a_new_work_reaches_every_fan_when_its_refresh_is_cut_into_chunks(module_cluster, worker):
    """An outside fuzz: one new work of an artist with 8,000 fans rebuilt every partition's 2,000 lists in one
    read. A refresh rebuilds 250 fans a read and sends the rest on to its own partition (REFRESH_CHUNK):
    with ~300 fans a partition, every fan's list still gets the work."""
    from streams.core.pipeline import REFRESH_CHUNK

    fans = [f"delta-fan-{i}" for i in range(5 * REFRESH_CHUNK)]
    module_cluster.produce("events.segment", [track(u, "followedArtist", f"{u}-f", owner_id="delta") for u in fans])
    wait_until(lambda: len({r.key for r in module_cluster.consume_all("recommendations", idle_ms=700)
                            if r.key.startswith(b"delta-fan-")}) == len(fans), 90, what="every fan's first list")
    module_cluster.produce("catalog.artworks", [(b"delta-fresh", dumps(artwork("delta-fresh", "delta", 0.01)))])

    def reached():
        return {r.key for r in module_cluster.consume_all("recommendations", idle_ms=700)
                if r.key.startswith(b"delta-fan-") and json.loads(r.value)["trigger"] == "catalog:delta-fresh"}
    wait_until(lambda: len(reached()) == len(fans), 90, what="the new work in every fan's list")


def test_new_works_of_many_artists_at_once_reach_each_fan_once_refreshes_a_budget_a_read(module_cluster, worker):
    """A read applies a partition's catalog refreshes up to 250 fans and reads the partition again from the next
    (a backlog of new works put 40 refreshes, 1.7 s, in one read while HTTP reads waited): every fan of every
    artist still gets each new work's list exactly once, and a user's signal queued behind them is applied."""
    artists = [f"omega{i}" for i in range(6)]
    fans = {a: [f"{a}-fan-{j}" for j in range(60)] for a in artists}  # 360 fans: more than one read's budget
    module_cluster.produce("events.segment", [track(u, "followedArtist", f"{u}-f", owner_id=a)
                                              for a in artists for u in fans[a]])
    wait_until(lambda: all(get_json(worker, f"/recommendations/{fans[a][-1]}")[0] == 200 for a in artists), 60,
               what="every fan's first list")
    module_cluster.produce("catalog.artworks", [(f"{a}-fresh".encode(), dumps(artwork(f"{a}-fresh", a, 0.01)))
                                                for a in artists])
    identify = {"type": "identify", "userId": "omega-member", "anonymousId": fans[artists[0]][0],
                "messageId": "omega-id", "timestamp": iso(NOW)}  # a merge goes through signals.keyed
    module_cluster.produce("events.segment", [(fans[artists[0]][0].encode(), dumps(identify))])

    def reached() -> dict:
        counts: dict = {}
        for r in module_cluster.consume_all("recommendations", idle_ms=700):
            trigger = json.loads(r.value)["trigger"] if r.value else ""
            if trigger.startswith("catalog:omega") and trigger.endswith("-fresh"):
                counts[(r.key.decode(), trigger)] = counts.get((r.key.decode(), trigger), 0) + 1
        return counts
    want = {(u, f"catalog:{a}-fresh") for a in artists for u in fans[a]} - {(fans[artists[0]][0], "catalog:omega0-fresh")}
    counts = wait_until(lambda: (lambda c: c if want <= set(c) else None)(reached()), 90, what="every fan reached")
    assert {k: n for k, n in counts.items() if n != 1} == {}, "a fan's list sent twice for one new work"
    merged = wait_until(lambda: (lambda r: r[1] if r[0] == 200 else None)(
        get_json(worker, "/users/omega-member/affinity")), 30, what="the merge behind the refreshes")
    assert [a["artist_id"] for a in merged["artists"]] == ["omega0"]


def test_a_work_moved_to_another_artist_leaves_its_old_artists_fans_lists(module_cluster, worker):
    """Fuzzing: only the new artist's fans were refreshed; the old artist's kept the work under the old
    artist until their next event or the hourly refresh."""
    module_cluster.produce("catalog.artworks", [(b"mover", dumps(artwork("mover", "old-artist", 0.02)))])
    module_cluster.produce("events.segment", [track("old-fan", "followedArtist", "of-1", owner_id="old-artist")])
    listed = lambda: {(i["artwork_id"], i["artist_id"]) for i in get_json(worker, "/recommendations/old-fan")[1]["items"]}  # noqa: E731
    wait_until(lambda: ("mover", "old-artist") in listed(), 30, what="the work in the old artist's fan's list")
    module_cluster.produce("catalog.artworks", [(b"mover", dumps(artwork("mover", "new-artist", 0.02)))])
    wait_until(lambda: ("mover", "old-artist") not in listed(), 30, what="the old fan's list without the old artist's work")


def test_alias_merges_anonymous_history_into_the_user(module_cluster, worker):
    module_cluster.produce("events.segment", [
        track("anon-9", "followedArtist", "a9-1", anonymous=True, owner_id="alpha", minutes_ago=5),
        track("anon-9", "artworkSave", "a9-2", anonymous=True, artwork_id="beta-1", minutes_ago=4)])
    wait_until(lambda: get_json(worker, "/users/anon-9/affinity")[0] == 200, 30, what="anonymous profile")
    identify = {"type": "identify", "userId": "member-9", "anonymousId": "anon-9", "messageId": "a9-id",
                "timestamp": iso(NOW - timedelta(minutes=3))}
    module_cluster.produce("events.segment", [(b"anon-9", dumps(identify))])
    merged = wait_until(lambda: (lambda r: r[1] if r[0] == 200 and len(r[1]["artists"]) == 2 else None)(
        get_json(worker, "/users/member-9/affinity")), 30, what="merged profile")
    assert {a["artist_id"] for a in merged["artists"]} == {"alpha", "beta"}
    # a pointer's events and time were whatever it applied before the link reached it (an outside check: they
    # differed after a kill -9 and between one worker and two); its history lives on at alias_of
    assert get_json(worker, "/users/anon-9/affinity")[1] == {"user_id": "anon-9", "as_of": None, "events": 0,
                                                             "alias_of": "member-9", "artists": []}
    # a later anonymous event lands on the merged profile
    module_cluster.produce("events.segment", [
        track("anon-9", "followedArtist", "a9-3", anonymous=True, owner_id="gamma", minutes_ago=1)])
    wait_until(lambda: {"alpha", "beta", "gamma"} <= {a["artist_id"] for a in get_json(
        worker, "/users/member-9/affinity")[1]["artists"]}, 30, what="forwarded event")
    assert records_for(module_cluster, "recommendations", "member-9")
    # the anonymous id's list is the member's from the merge on (it kept its own from before, for good)
    member = wait_until(lambda: (lambda r: r[1] if r[0] == 200 and "gamma" in {i["artist_id"] for i in r[1]["items"]}
                                 else None)(get_json(worker, "/recommendations/member-9")), 30, what="member's list")
    assert get_json(worker, "/recommendations/anon-9") == (200, member)
    pointer = records_for(module_cluster, "recommendations", "anon-9")[-1]
    assert pointer["alias_of"] == "member-9" and pointer["user_id"] == "anon-9"  # subscribers learn it too
    assert all("alias_of" not in r for r in records_for(module_cluster, "recommendations", "member-9"))


def test_a_message_sent_under_both_ids_before_their_identify_counts_once(module_cluster, worker):
    """An outside oracle: a view sent once keyed by the anonymousId and once by the userId (one
    messageId) before the identify counted twice in the merged profile (3.0 where 1.5)."""
    same = [track("anon-13", "item_viewed", "twice-13", anonymous=True, artwork_id="beta-1", minutes_ago=5),
            track("member-13", "item_viewed", "twice-13", artwork_id="beta-1", minutes_ago=5),
            track("anon-13", "item_viewed", "once-13", anonymous=True, artwork_id="alpha-1", minutes_ago=4)]
    module_cluster.produce("events.segment", same)
    wait_until(lambda: get_json(worker, "/users/anon-13/affinity")[1].get("events") == 2
               and get_json(worker, "/users/member-13/affinity")[1].get("events") == 1, 30, what="both profiles")
    identify = {"type": "identify", "userId": "member-13", "anonymousId": "anon-13", "messageId": "id-13",
                "timestamp": iso(NOW - timedelta(minutes=3))}
    module_cluster.produce("events.segment", [(b"anon-13", dumps(identify))])
    merged = wait_until(lambda: (lambda r: r[1] if r[0] == 200 and len(r[1]["artists"]) == 2 else None)(
        get_json(worker, "/users/member-13/affinity")), 30, what="merged profile")
    scores = {a["artist_id"]: a["score"] for a in merged["artists"]}
    assert merged["events"] == 2 and scores["beta"] == pytest.approx(scores["alpha"], rel=1e-3), merged  # one view each


def test_identifies_linking_two_ids_both_ways_leave_one_profile_and_nothing_circling(module_cluster, worker):
    """Found by fuzzing: identify(a <- b) and identify(b <- a) made a and b point at each other; every
    record for either id then circled between their partitions for ever, and their events were never
    applied. The ring breaks at its smallest id, which holds both histories and every later event."""
    module_cluster.produce("events.segment", [
        track("ring-a", "followedArtist", "ra-1", owner_id="alpha", minutes_ago=5),
        track("ring-b", "followedArtist", "rb-1", owner_id="beta", minutes_ago=5)])
    wait_until(lambda: all(get_json(worker, f"/users/{u}/affinity")[0] == 200 for u in ("ring-a", "ring-b")), 30,
               what="both profiles")
    both_ways = [{"type": "identify", "userId": new, "anonymousId": old, "messageId": f"ring-{new}",
                  "timestamp": iso(NOW - timedelta(minutes=3))} for new, old in (("ring-a", "ring-b"), ("ring-b", "ring-a"))]
    module_cluster.produce("events.segment", [(e["anonymousId"].encode(), dumps(e)) for e in both_ways])
    module_cluster.produce("events.segment", [track("ring-b", "item_viewed", "rb-2", artwork_id="gamma-1", minutes_ago=1)])
    merged = wait_until(lambda: (lambda r: r[1] if r[0] == 200 and not r[1]["alias_of"] and len(r[1]["artists"]) == 3
                                 else None)(get_json(worker, "/users/ring-a/affinity")), 30, what="one profile")
    assert {a["artist_id"] for a in merged["artists"]} == {"alpha", "beta", "gamma"}
    assert get_json(worker, "/users/ring-b/affinity")[1]["alias_of"] == "ring-a"

    def quiet() -> bool:  # no signals.keyed record sent for a second: nothing circles
        before = metric(worker, "recstream_records_sent_total", topic="signals.keyed")
        time.sleep(1.0)
        return metric(worker, "recstream_records_sent_total", topic="signals.keyed") == before

    wait_until(quiet, 30, what="signals.keyed traffic stops")


def test_fausts_own_pages_are_not_served(module_cluster, worker):
    """faust's /table/{table}/{key}/ dumped a stored profile (its message ids) to anyone, /router/ every
    worker's URL and partitions: not recstream's API (docs/http-api.md)."""
    for path in ("/table/", "/table/affinity/u1/", "/router/", "/router/affinity/u1/"):
        assert worker.get(path)[0] == 404, path


def test_no_emission_when_nothing_changed(module_cluster, worker):
    module_cluster.produce("events.segment", [track("steady", "followedArtist", "st-1", owner_id="beta")])
    wait_until(lambda: records_for(module_cluster, "recommendations", "steady"), 30, what="first list")
    before = len(records_for(module_cluster, "recommendations", "steady"))
    duplicates = metric(worker, "recstream_duplicates_total")
    module_cluster.produce("events.segment", [track("steady", "followedArtist", "st-1", owner_id="beta")] * 3)
    wait_until(lambda: metric(worker, "recstream_duplicates_total") >= duplicates + 3, 30, what="duplicates seen")
    assert len(records_for(module_cluster, "recommendations", "steady")) == before


def test_event_before_its_artwork_is_applied_once_the_catalog_has_it(module_cluster, worker):
    module_cluster.produce("events.segment", [track("early-bird", "artworkSave", "eb-1", artwork_id="late-work")])
    wait_until(lambda: metric(worker, "recstream_pending_retries_total") >= 1, 30, what="parked for retry")
    module_cluster.produce("catalog.artworks", [(b"late-work", dumps(artwork("late-work", "delta", 0.1)))])
    profile = wait_until(lambda: (lambda r: r[1] if r[0] == 200 else None)(
        get_json(worker, "/users/early-bird/affinity")), 30, what="late-resolved event")
    assert [a["artist_id"] for a in profile["artists"]] == ["delta"]
    assert metric(worker, "recstream_dead_letters_total", reason="unknown_artwork") == 0


def test_a_merged_ids_list_is_served_by_every_worker_whoever_owns_either_id(cluster):
    """The pointer followed across workers: the old id's owner forwards to the merged id's owner."""
    from streams.core.ingest import KeyPartitioner

    first, second = cluster.start_worker("w0"), cluster.start_worker("w1")
    wait_until(lambda: all(w.get("/health")[0] == 200 and not get_json(w, "/health")[1]["rebalancing"]
                           for w in (first, second)), 60, what="two workers")
    cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in CATALOG])
    wait_until(lambda: metric(first, "recstream_catalog_records_total") + metric(
        second, "recstream_catalog_records_total") >= len(CATALOG), 60, what="catalog")
    part = KeyPartitioner(4)
    pairs = [(f"anon-x{i}", f"member-x{i}") for i in range(40)]
    pairs = [(a, m) for a, m in pairs if part(a.encode()) != part(m.encode())][:6]  # each pair on two partitions
    for anon, member in pairs:
        cluster.produce("events.segment", [track(anon, "followedArtist", f"{anon}-f", anonymous=True, owner_id="beta",
                                                 minutes_ago=5)])
        identify = {"type": "identify", "userId": member, "anonymousId": anon, "messageId": f"{anon}-id",
                    "timestamp": iso(NOW - timedelta(minutes=3))}
        cluster.produce("events.segment", [(anon.encode(), dumps(identify))])
        cluster.produce("events.segment", [track(member, "followedArtist", f"{member}-f", owner_id="gamma")])
    for anon, member in pairs:
        merged = wait_until(lambda m=member: (lambda r: r[1] if r[0] == 200 and r[1]["trigger"] != "cold-start" and {
            "beta", "gamma"} <= {i["artist_id"] for i in r[1]["items"]} else None)(
            get_json(first, f"/recommendations/{m}")), 60, what=f"{member}'s merged list")
        for w in (first, second):
            assert get_json(w, f"/recommendations/{anon}") == (200, merged), (anon, w.base_url)
    # an absolute-form target (HTTP/1.1 servers must accept one) was forwarded as a URL of two authorities: 500
    member, served = pairs[0][1], None
    for w in (first, second):  # one of them forwards: the owner's no-store comes back with its answer
        for path in (f"/recommendations/{member}", f"/users/{member}/affinity"):
            with urllib.request.urlopen(w.base_url + path, timeout=10) as response:
                assert response.headers["Cache-Control"] == "no-store", (w.base_url, path)
    reads = [metric(w, "recstream_http_recommendations_total") for w in (first, second)]
    assert [raw_request(w, f"HEAD /recommendations/{member} HTTP/1.1")[0] for w in (first, second)] == [200, 200]
    # a HEAD (a probe, a link checker) is no read and no exposure, on the owner or forwarded to it
    assert [metric(w, "recstream_http_recommendations_total") for w in (first, second)] == reads
    for w in (first, second):
        status, body = raw_request(w, f"GET http://x/recommendations/{member} HTTP/1.1")
        assert status == 200 and (served is None or body == served), (w.base_url, status, body[:200])
        served = body


def raw_request(worker, line: str) -> tuple[int, bytes]:
    """A request sent as written (urllib would rewrite its target), and the status and body of the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", worker.web_port), timeout=10) as conn:
        conn.sendall(f"{line}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b"".join(iter(lambda: conn.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_topics_a_worker_creates_keep_each_users_latest_list(module_cluster, worker):
    """The recommendations topic was created with the broker's delete policy: a client bootstrapping from it read
    every list ever sent, and on Kafka lost the list of every user idle past the retention (an outside check;
    only docker-compose's job created it compacted)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    async def policies(names):
        admin = AIOKafkaAdminClient(bootstrap_servers=module_cluster.broker.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, module_cluster.topic(n))
                                                      for n in names])
        finally:
            await admin.close()
        return {module_cluster.topic(n): None for n in names} | {
            name: dict((c[0], c[1]) for c in configs).get("cleanup.policy")
            for response in described for _, _, _, name, configs in response.resources}

    names = ["recommendations", "catalog.artworks", "catalog.curated", "catalog.images", "events.segment"]
    got = asyncio.run(policies(names))
    assert [got[module_cluster.topic(n)] for n in names] == ["compact"] * 4 + [None], got


def test_a_work_that_leaves_the_catalog_leaves_every_list_not_only_its_artists_fans(cluster):
    """A delete or a sale refreshed only the artist's fans: 55 of 70 lists holding the work (as trending or
    similar) kept it until their user's next event or the hourly refresh (an outside check)."""
    module_cluster = cluster  # a deployment of its own: the module's other users' events make other works trending
    worker = cluster.start_worker()
    hot = {"omega-hot": None, "omega-sold": dumps(artwork("omega-sold", "omega", 0.05, availability="sold"))}
    module_cluster.produce("catalog.artworks", [(a["id"].encode(), dumps(a)) for a in CATALOG]
                           + [(w.encode(), dumps(artwork(w, "omega", 0.05))) for w in hot])
    module_cluster.produce("events.segment", [track(f"saver-{i}", "artworkSaved", f"sv-{i}-{w}", artwork_id=w)
                                              for i in range(30) for w in hot])
    wait_until(lambda: set(hot) <= {i["artwork_id"] for i in get_json(worker, "/recommendations/nobody")[1]["items"]},
               60, what="both works trending")
    bystanders = [f"bystander-{i}" for i in range(10)]
    module_cluster.produce("events.segment", [track(u, "followedArtist", f"{u}-f", owner_id="beta") for u in bystanders])
    listed = lambda u: {i["artwork_id"] for i in get_json(worker, f"/recommendations/{u}")[1]["items"]}  # noqa: E731
    wait_until(lambda: any(listed(u) & set(hot) for u in bystanders), 30, what="a bystander listing them")
    swept = metric(worker, "recstream_lists_holding_gone_works_total")
    module_cluster.produce("catalog.artworks", list(((w.encode(), v) for w, v in hot.items())))
    wait_until(lambda: not any(listed(u) & set(hot) for u in [*bystanders, "saver-0"]), 30, what="them out of every list")
    last = {u: records_for(module_cluster, "recommendations", u)[-1] for u in bystanders}
    assert not any({i["artwork_id"] for i in r["items"]} & set(hot) for r in last.values())
    assert metric(worker, "recstream_lists_holding_gone_works_total") > swept

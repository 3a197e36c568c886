"""Seeded demo data: a catalog of artists/artworks and realistic Segment events.

Users have a few favourite artists (Zipf-popular), mostly browse their works, sometimes save,
follow, inquire or buy; some browse anonymously first and sign up later (identify). Event
times run forward over the last `days` with jitter, so some arrive out of order.

>>> demo = DemoGenerator(users=5, artists=4, artworks=10, seed=1)
>>> len(list(demo.events(20)))
20
>>> demo.artworks()[0]["id"]
'w0'
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

# the demo ends a month later, in the past: events over a day ahead of the clock are dead letters
BASE_TIME = datetime(2026, 10, 1, tzinfo=timezone.utc)

# The most `recstream demo-events` and `dev` generate: the catalog and every user's favourites are built before
# the first event (measured: 1M users 1.4 s and ~110 MB, as 1M artworks; 10M users 16 s and 1 GB; 100M never
# answered), and the image demo every merchant's pool (10,000: 0.6 s, ~100 MB; 100,000: 9 s, 800 MB).
MAX_USERS = MAX_ARTISTS = MAX_ARTWORKS = 1_000_000
MAX_MERCHANTS = 10_000

# (kind, share of events, Segment event name); names rotate between spec variants.
MIX = [
    ("view", 0.62, ["item_viewed", "Product Viewed", "clickedMainArtworkGrid", "screen"]),
    ("save", 0.14, ["artworkSave", "addedArtworkToArtworkList", "Product Added to Wishlist"]),
    ("follow", 0.08, ["followedArtist"]),
    ("unfollow", 0.01, ["unfollowedArtist"]),
    ("unsave", 0.02, ["artworkUnsave"]),
    ("inquiry", 0.06, ["sentArtworkInquiry"]),
    ("order", 0.03, ["submittedOrder", "Order Completed"]),
    ("collection", 0.04, ["addCollectedArtwork"]),
]


class DemoGenerator:
    def __init__(self, users: int = 1000, artists: int = 200, artworks: int = 2000,
                 days: int = 30, seed: int = 7, anonymous_share: float = 0.1,
                 end_time: datetime | None = None):
        """`end_time`: when the demo's last event happens (default a fixed date, so output is
        reproducible; `recstream dev` and the tests pass "now" so recency windows apply)."""
        self.rng = random.Random(seed)
        self.base_time = (end_time - timedelta(days=days)) if end_time else BASE_TIME
        self.n_users, self.n_artists, self.n_artworks = users, artists, artworks
        self.days = days
        self.anonymous_share = anonymous_share
        # Zipf-ish artist popularity; the cumulative weights and the sorted artists are computed once (the same
        # draws as weights= per call, which summed every artist's weight for every artwork: hours at 10^6 each)
        cum_weights = list(itertools.accumulate(1.0 / (i + 1) for i in range(artists)))
        self.artist_of = [f"a{self.rng.choices(range(artists), cum_weights=cum_weights)[0]}" for _ in range(artworks)]
        self.works_by: dict[str, list[int]] = {}
        for i, a in enumerate(self.artist_of):
            self.works_by.setdefault(a, []).append(i)
        with_works = sorted(self.works_by)
        self.favourites = [self.rng.choices(with_works, k=self.rng.randint(1, 4)) for _ in range(users)]
        self._seq = 0

    def artworks(self) -> list[dict]:
        rng = random.Random(self.rng.random())
        out = []
        for i, artist in enumerate(self.artist_of):
            published = self.base_time + timedelta(days=self.days) - timedelta(days=rng.uniform(0, 60))
            out.append({
                "id": f"w{i}", "artist_id": artist, "published_at": _iso(published),
                "price": round(rng.lognormvariate(8, 1), 2), "currency": "USD",
                "is_merch": rng.random() < 0.08,
                "availability": rng.choices(["for sale", "sold", "unpublished"], [0.85, 0.1, 0.05])[0],
            })
        return out

    def events(self, n: int) -> Iterator[dict]:
        """n Segment events (dicts) in roughly increasing event time."""
        span = self.days * 86400.0
        kinds = [k for k, _, _ in MIX]
        shares = [s for _, s, _ in MIX]
        for i in range(n):
            t = self.base_time + timedelta(seconds=span * i / max(n, 1) + self.rng.uniform(-3600, 3600))
            t = min(t, self.base_time + timedelta(days=self.days))
            u = min(int(self.rng.paretovariate(1.2)) - 1, self.n_users - 1)  # a few heavy users
            u = u if self.rng.random() < 0.5 else self.rng.randrange(self.n_users)
            kind = self.rng.choices(kinds, shares)[0]
            yield self._event(u, kind, t)

    def _event(self, u: int, kind: str, t: datetime) -> dict:
        rng = self.rng
        self._seq += 1
        artist = rng.choice(self.favourites[u]) if rng.random() < 0.8 else f"a{rng.randrange(self.n_artists)}"
        work = rng.choice(self.works_by.get(artist) or [rng.randrange(self.n_artworks)])
        name = rng.choice(dict((k, names) for k, _, names in MIX)[kind])
        ev: dict = {"messageId": f"demo-{self._seq}", "timestamp": _iso(t), "userId": f"u{u}"}
        if u % int(1 / self.anonymous_share) == 0 and rng.random() < 0.3:
            ev = {**ev, "userId": None, "anonymousId": f"anon-{u}"}
        if name == "screen":
            return {**ev, "type": "screen", "properties": {
                "context_screen_owner_type": "artwork", "context_screen_owner_id": f"w{work}"}}
        ev.update(type="track", event=name)
        if kind in ("follow", "unfollow"):
            props = {"owner_id": artist, "owner_type": "artist"}
        elif kind == "collection":
            props = {"artist_id": artist}
        elif kind == "order":
            props = {"order_id": f"o{self._seq}", "products": [
                {"artwork_id": f"w{work}", "price": round(rng.lognormvariate(8, 1), 2)}]}
        elif kind == "inquiry":
            props = {"artwork_id": f"w{work}", "products": [{"price": round(rng.lognormvariate(8, 1), 2)}]}
        elif name == "addedArtworkToArtworkList":
            props = {"artwork_ids": [f"w{work}"]}
        elif name.startswith("Product"):
            props = {"product_id": f"w{work}"}
        else:
            props = {"artwork_id": f"w{work}"}
        ev["properties"] = props
        return ev

    def identify_events(self) -> Iterator[dict]:
        """Sign-ups: each anonymous demo visitor becomes its user id."""
        for u in range(0, self.n_users, int(1 / self.anonymous_share)):
            yield {"type": "identify", "userId": f"u{u}", "anonymousId": f"anon-{u}",
                   "messageId": f"demo-identify-{u}", "timestamp": _iso(self.base_time + timedelta(days=self.days))}

    def curated(self, k: int = 8) -> dict:
        """The weekly editorial list (catalog.curated value)."""
        rng = random.Random(self.n_artworks)
        return {"artwork_ids": [f"w{i}" for i in rng.sample(range(self.n_artworks), min(k, self.n_artworks))]}


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def dumps(ev: dict) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode()


TAGS = ["burger", "pizza", "sushi", "salad", "taco", "noodle", "curry", "steak", "vegan", "chicken"]
CATEGORIES = ["mains"] * 5 + ["sides", "drinks", "desserts"]


class DemoImages:
    """Merchants with image pools, true conversion rates, and impression/conversion events
    from a uniform logging policy (every pool image shown equally often)."""

    def __init__(self, merchants: int = 40, consumers: int = 500, seed: int = 5,
                 end_time: datetime | None = None):
        self.rng = random.Random(seed)
        self.n_merchants, self.n_consumers = merchants, consumers
        self.end_time = end_time or BASE_TIME + timedelta(days=30)
        self.truth: dict[str, float] = {}
        self._catalog = [self._merchant(m) for m in range(merchants)]

    def _merchant(self, m: int) -> dict:
        rng = self.rng
        images = [{"image_id": f"m{m}-header", "url": f"https://img.example/m{m}/header.jpg", "kind": "header"}]
        for i, category in enumerate(CATEGORIES):
            images.append({"image_id": f"m{m}-i{i}", "url": f"https://img.example/m{m}/{i}.jpg", "kind": "item",
                           "item_id": f"m{m}-item{i}", "category": category, "sales_rank": i + 1,
                           "tags": rng.sample(TAGS, 2)})
        for img in images:
            self.truth[f"m{m}|{img['image_id']}"] = min(0.2, rng.lognormvariate(-3.5, 0.4))
        return {"merchant_id": f"m{m}", "images": images}

    def catalog(self) -> list[dict]:
        return self._catalog

    def events(self, n: int) -> Iterator[dict]:
        import msgspec

        from streams.core.images import ImageCatalog, build_pool

        pools = {c["merchant_id"]: build_pool(msgspec.convert(c, ImageCatalog)) for c in self._catalog}
        for i in range(n):
            consumer = f"c{self.rng.randrange(self.n_consumers)}"
            merchant = f"m{self.rng.randrange(self.n_merchants)}"
            image = self.rng.choice(pools[merchant]).image_id
            t = _iso(self.end_time - timedelta(seconds=(n - i) * 10))
            props = {"merchant_id": merchant, "image_id": image}
            yield {"type": "track", "event": "Image Impression", "userId": consumer, "messageId": f"img-{i}",
                   "timestamp": t, "properties": props}
            if self.rng.random() < self.truth[f"{merchant}|{image}"]:
                yield {"type": "track", "event": "Image Conversion", "userId": consumer,
                       "messageId": f"img-{i}-conv", "timestamp": t, "properties": {**props, "order_id": f"o{i}"}}


def _end_time(text: str) -> datetime:
    """--end: now, or an ISO 8601 time (naive: UTC)."""
    import argparse

    if text == "now":
        return datetime.now(timezone.utc)
    try:
        end = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is neither now nor an ISO 8601 time") from None
    return end if end.tzinfo else end.replace(tzinfo=timezone.utc)


def main(argv: list[str]) -> int:
    """``recstream demo-events``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="recstream demo-events",
        description="Seeded demo data as JSONL on stdout: Segment events by default, or the "
                    "matching catalog records (`recstream load artworks|curated|images FILE`).")
    parser.add_argument("--users", type=int, default=1000, help=f"1 to {MAX_USERS:,}")
    parser.add_argument("--artists", type=int, default=200, help=f"1 to {MAX_ARTISTS:,}")
    parser.add_argument("--artworks", type=int, default=2000, help=f"1 to {MAX_ARTWORKS:,}")
    parser.add_argument("--events", type=int, default=10000,
                        help="events (with --image-events: impressions)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", default="now", type=_end_time,
                        help="when the last event happens and the newest works appear: an ISO 8601 time, or now "
                             "(the default: a live worker judges recency by its clock, and works dated a month "
                             "back fall out of the personal lists' window); a given time makes the output the same "
                             "bytes every run")
    parser.add_argument("--merchants", type=int, default=40,
                        help=f"merchants of --images / --image-events (1 to {MAX_MERCHANTS:,})")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--catalog", action="store_true",
                      help="print the artworks (catalog.artworks) instead")
    what.add_argument("--curated", action="store_true",
                      help="print the curated list (catalog.curated) of these --artworks instead")
    what.add_argument("--images", action="store_true",
                      help="print the merchants' image catalogs (catalog.images) instead")
    what.add_argument("--image-events", action="store_true",
                      help="print image impressions/conversions for the --images merchants instead")
    args = parser.parse_args(argv)
    if min(args.users, args.artists, args.artworks, args.merchants) < 1 or args.events < 0:
        parser.error("--users, --artists, --artworks and --merchants must be at least 1, --events at least 0")
    if (args.users > MAX_USERS or args.artists > MAX_ARTISTS or args.artworks > MAX_ARTWORKS
            or args.merchants > MAX_MERCHANTS):
        parser.error(f"--users, --artists and --artworks must be at most {MAX_USERS:,}, --merchants at most "
                     f"{MAX_MERCHANTS:,} (the demo builds them all before its first line)")
    if args.images or args.image_events:
        images = DemoImages(merchants=args.merchants, seed=args.seed, end_time=args.end)
        rows = images.catalog() if args.images else images.events(args.events)
    else:
        demo = DemoGenerator(args.users, args.artists, args.artworks, seed=args.seed, end_time=args.end)
        rows = (demo.artworks() if args.catalog else [demo.curated()] if args.curated
                else demo.events(args.events))
    out = sys.stdout.buffer
    for row in rows:
        out.write(dumps(row) + b"\n")
    out.flush()
    return 0

"""The names the live worker and the bulk rebuild must agree on (pure): the input topics with the
kind ingest expects of each, and faust's changelog naming. streams.worker.topics declares its
topics from these and streams.rebuild reads and writes by them; tests/test_topology.py checks
that faust names the worker's changelogs this way.

>>> INPUT_KINDS["events.segment"], INPUT_KINDS["signals.follow"], INPUT_KINDS["images.requests"]
(None, 'follow', 'image_request')
>>> changelog("recstream", "affinity")
'recstream-affinity-changelog'
"""

from __future__ import annotations

from streams.core.records import SIGNAL_KINDS

# logical input topic (before RECSTREAM_TOPIC_PREFIX) -> the typed kind ingest_one expects (None: Segment)
INPUT_KINDS: dict[str, str | None] = {
    "events.segment": None,
    **{f"signals.{kind}": kind for kind in SIGNAL_KINDS},
    "images.impressions": "image:impression",
    "images.conversions": "image:conversion",
    "images.requests": "image_request",
}
# the catalog's topics: their records become tables of RECSTREAM_PARTITIONS partitions, and faust refuses a source
# topic with another count (a worker will not start on them; a bulk rebuild will not write for such a worker)
CATALOG_TOPICS = ("catalog.artworks", "catalog.curated", "catalog.images")
USER_TABLES = ("affinity", "recommendations", "fans")  # partitioned, rebuilt from the signals
GLOBAL_TABLES = ("popularity", "artworks", "editorial")  # every worker holds them whole


def changelog(app_id: str, table: str) -> str:
    """faust's changelog topic for a table of app `app_id`."""
    return f"{app_id}-{table}-changelog"

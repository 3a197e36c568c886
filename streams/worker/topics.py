"""Topic declarations. Names get RECSTREAM_TOPIC_PREFIX; see docs/events.md."""

from __future__ import annotations

import os

from streams.core.ingest import DEADLETTER, IMAGES, PENDING, SIGNALS
from streams.core.metrics import metrics
from streams.core.records import SIGNAL_KINDS
from streams.core.topology import INPUT_KINDS
from streams.worker.app import app, settings

COMPACT = {"cleanup.policy": "compact"}


def _topic(name: str, internal: bool = False, **kwargs):
    full = settings.internal_topic(name) if internal else settings.topic(name)
    return app.topic(full, key_type=bytes, value_type=bytes, partitions=settings.partitions, **kwargs)


# Inputs
segment_events = _topic("events.segment")
typed_signal_topics = {kind: _topic(f"signals.{kind}") for kind in SIGNAL_KINDS}  # every name: core.topology
artworks = _topic("catalog.artworks", config=COMPACT)
image_catalog = _topic("catalog.images", config=COMPACT)
image_impressions = _topic("images.impressions")
image_conversions = _topic("images.conversions")
image_requests = _topic("images.requests")
# as many partitions as the editorial table's changelog (faust stops an agent whose source and
# table changelog differ: PartitionsMismatch); the one key "curated" lives in one of them
curated = _topic("catalog.curated", config=COMPACT)

# Internal topics belong to one app id, so that a rebuild under a new app id (a new consumer
# group, new changelogs) reads only what its own ingest wrote.
# signals, identity links, profile merges and catalog refreshes, keyed by user id
# (identity links by the previous id; refreshes go to every partition):
signals = _topic(SIGNALS, internal=True)
# image impressions/conversions and requests, keyed by consumer id:
images_keyed = _topic(IMAGES, internal=True)
# input messages waiting for an artwork to reach the catalog (retried with backoff):
pending = _topic(PENDING, internal=True)

# Outputs
affinity_updates = _topic("affinity.updates")
recommendations = _topic("recommendations", config=COMPACT)  # each user's latest list stays (docs/operations.md)
images_chosen = _topic("images.chosen")
images_replies = _topic("images.replies")
deadletter = _topic(DEADLETTER)
experiment_readouts = _topic("experiments.readouts")  # snapshots of the experiments' counts (streams.cli.readout)

TYPED_BY_NAME = {settings.topic(name): kind for name, kind in INPUT_KINDS.items() if kind is not None}

catalog_topics = (artworks, curated, image_catalog)  # read by direct ingest too (agents.catalog)

# Every input ingest reads (declared by direct ingest; one faust channel for the agent path).
input_topics = (segment_events, *typed_signal_topics.values(), image_impressions, image_conversions, image_requests)
inputs = app.topic(*(t.get_topic_name() for t in input_topics), key_type=bytes, value_type=bytes)

# What the worker reads besides its changelogs, by name: direct ingest's consumer or faust's agents (either path
# reads a batch no one can read as its marker record, streams.kafka.unreadable).
read_topics = tuple(t.get_topic_name() for t in (*input_topics, *catalog_topics, signals, images_keyed, pending))

# What clients read: a per-event rebuild (`recstream rebuild`, RECSTREAM_REBUILD=1) holds these back until it has
# caught up (streams.worker.monitoring), as the bulk phase sends none: it republished every user's history, partial
# states included, to the topics the live workers' clients read (an outside check: up to 83% of the users' newest
# list on the topic was one built from part of their history, while readers were told to keep reading the live ones).
CLIENT_OUTPUTS = frozenset({"affinity.updates", "recommendations", "images.chosen", "images.replies"})
held_outputs: set[str] = set(CLIENT_OUTPUTS) if os.environ.get("RECSTREAM_REBUILD") == "1" else set()


def released(topic: str) -> bool:
    """Whether an output record of `topic` goes out now (counted sent), or is held back (counted held)."""
    held = topic in held_outputs
    metrics.inc("recstream_records_held_total" if held else "recstream_records_sent_total", topic=topic)
    return not held

# Logical output names used by the pure pipeline -> topics.
outputs = {"affinity.updates": affinity_updates, "recommendations": recommendations, "signals.keyed": signals,
           "images.chosen": images_chosen, "images.replies": images_replies}


def declared() -> dict:
    """Every single topic declared here, by name (what a worker creates before it starts)."""
    from faust.topics import Topic

    found = [v for value in globals().values()
             for v in (value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,))]
    return {t.get_topic_name(): t for t in found if isinstance(t, Topic) and len(t.topics) == 1}

"""`recstream worker` and faust's other commands: the one place that wires a worker. It sets
the process's memory behaviour, installs the faust/aiokafka patches, registers the agents and
the web views (importing their modules), and hands over to faust's CLI. Nothing else imports
`agents`; importing a module does no I/O, installs no patch and changes no other module: it
only declares its part of the app (tables, topics, agents, views), as faust's decorators do."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

# faust stops an agent whose source topic and table changelog differ in partitions
# (PartitionsMismatch): these agents write tables, so their topics must have RECSTREAM_PARTITIONS
CATALOG_TOPICS = ("catalog.artworks", "catalog.curated", "catalog.images")


def run() -> None:
    import mode.loop

    from streams.kafka.memory import fix_mmap_threshold, limit_malloc_arenas
    from streams.worker.app import app, settings
    from streams.worker.patches import install_all

    limit_malloc_arenas(settings.malloc_arenas)  # before faust and RocksDB start their threads
    fix_mmap_threshold(settings.malloc_mmap_threshold_kb)
    import agents  # noqa: F401  (the agents)
    import streams.worker.collector_web  # noqa: F401  (the Segment-compatible collector)
    import streams.worker.web  # noqa: F401  (the HTTP API)

    streams.worker.web.install()
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    install_all(settings)
    if sys.argv[1:2] == ["worker"]:  # not for faust's other commands (help, tables, ...)
        prepare_topics(settings)
    mode.loop.use(settings.event_loop)  # the policy faust's worker creates its loop from
    app.main()


def prepare_topics(settings) -> None:
    """Create every topic the worker uses before faust starts (inputs, internal, outputs; the
    catalog ones compacted), each with its declared partitions:
    - faust's subscription had the broker auto-create the catalog topics with its own default
      partition count (the embedded broker: 4), so with any other RECSTREAM_PARTITIONS the catalog
      agents stopped (PartitionsMismatch) and the catalog never loaded while /health said ok;
    - an output topic declared at its first send raced a client's metadata request for it (a test
      reading the recommendations): the embedded broker never answered the CreateTopics, and the
      batch waiting on it held direct ingest for good (once on CI).
    A catalog topic that exists with another count stops the worker with the reason."""
    from faust.topics import Topic

    import streams.worker.topics as declared
    from streams.worker.commit import mark_declared

    found = [v for value in vars(declared).values()
             for v in (value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,))]
    topics = {t.get_topic_name(): t for t in found if isinstance(t, Topic) and len(t.topics) == 1}
    wanted = {name: (t.partitions or settings.partitions, dict(t.config or {})) for name, t in topics.items()}
    try:
        counts = asyncio.run(asyncio.wait_for(_create_and_count(settings.aiokafka_kwargs(), wanted), 60))
    except Exception as exc:  # no broker yet: faust waits for it and declares the topics itself
        logging.getLogger(__name__).warning("could not create the worker's topics: %r", exc)
        return
    mark_declared(name for name, count in counts.items() if count)
    catalog = {settings.topic(name) for name in CATALOG_TOPICS}
    wrong = {name: count for name, count in counts.items() if name in catalog and count != settings.partitions}
    if wrong:
        raise SystemExit(f"recstream worker: RECSTREAM_PARTITIONS is {settings.partitions}, but "
                         + ", ".join(f"{name} has {count}" for name, count in sorted(wrong.items()))
                         + ": the catalog agents write tables of RECSTREAM_PARTITIONS partitions and faust refuses "
                         "other counts. Recreate the topic with that many partitions, or set RECSTREAM_PARTITIONS.")


async def _create_and_count(client_kwargs: dict, wanted: dict[str, tuple[int, dict]]) -> dict[str, int]:
    from streams.kafka.admin import ensure_topics, topic_partitions

    await ensure_topics(client_kwargs, wanted)
    return await topic_partitions(client_kwargs, wanted)

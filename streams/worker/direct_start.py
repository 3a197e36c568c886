"""Direct ingest's reader started for the worker (agents/ingest.py): its topics declared, its
consumer started, the group offsets faust's agents left adopted. A stop that begins meanwhile
cancels the start (streams.worker.stopping.stop_app_tasks, before faust stops the producer: under a
declare, the app crashed, 1 SIGTERM in 6 right after a worker was ready), and a cancelled start
closes what it opened."""

from __future__ import annotations

import logging

from streams.kafka.direct import DirectIngest
from streams.kafka.offsets import adopt_committed

log = logging.getLogger(__name__)


async def start_reader(declare, reader: DirectIngest, client: dict, groups: tuple[str, str],
                       adopt: list[str]) -> DirectIngest:
    """`reader` started once the faust topics `declare` exist, then, of the topics `adopt`, what
    `groups[0]` (faust's agents') committed taken over by `groups[1]` (`reader`'s) where it has no
    commit (streams.kafka.offsets.adopt_committed). A failed or cancelled start leaves no consumer open."""
    try:
        for topic in declare:
            await topic.maybe_declare()
        await reader.start()
        # before the first assignment reads the group's offsets: where faust's agents left the keyed
        # and catalog topics (an upgrade neither replays a bounded dedup window nor the whole catalog)
        adopted = await adopt_committed(client, *groups, {t: reader.topic_partitions[t] for t in adopt})
    except BaseException:
        await reader.stop()
        raise
    if adopted:
        log.info("direct ingest continues where faust's agents committed: %s", adopted)
    return reader

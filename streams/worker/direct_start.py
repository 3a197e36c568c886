"""Direct ingest's reader started for the worker (agents/ingest.py): its topics declared, its
consumer started, the group offsets faust's agents left adopted. A stop that begins meanwhile ends
the start quietly: faust stopped the producer under a declare, and the app crashed (an outside
check: 1 SIGTERM in 6 right after a worker was ready exited 1 with a traceback)."""

from __future__ import annotations

import asyncio
import logging

from streams.kafka.direct import DirectIngest
from streams.kafka.offsets import adopt_committed
from streams.worker.runtime import before_stop

log = logging.getLogger(__name__)


async def unless_stopping(starting):
    """Await the coroutine `starting` in this task, which the worker's stop cancels (a `before_stop`
    callback, run before faust stops its services); None if the stop came first."""
    task, stopping = asyncio.current_task(), []

    async def cancel() -> None:
        stopping.append(True)
        task.cancel()

    before_stop.append(cancel)
    try:
        return await starting
    except asyncio.CancelledError:
        if not stopping:
            raise
        getattr(task, "uncancel", int)()  # handled, the task returns normally (Python 3.11+; 3.10 counts none)
        log.info("direct ingest: the worker stopped while it started; nothing was read")
        return None
    finally:
        before_stop.remove(cancel)


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

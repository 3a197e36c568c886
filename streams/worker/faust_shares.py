"""faust's path (RECSTREAM_DIRECT_INGEST=false): the popularity and image-count shares written as direct ingest
writes them (streams.kafka.direct's before_commit and stop): before faust commits the input offsets that the counts
came from, on a timer while the input is idle, and when the worker stops; never ahead of the state they count.

An outside check (session 38): this path wrote a partition's share only after a later batch, at most every
RECSTREAM_POPULARITY_FLUSH_S, and faust committed the input past batches whose counts no written share held: once
the input went idle, any restart (a SIGTERM too) lost the last batches' trending, co-engagement and image counts for
good (trending 2,071 of 2,436 after a graceful stop), and a second worker never saw them.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from streams.worker.app import app, settings
from streams.worker.runtime import before_stop
from streams.worker.state import settle_shares, share_positions, write_shares

_counting = asyncio.Lock()  # one batch, from its first count to its shares' write; or one write between batches
_torn = False  # a batch stopped between its counts and its acks: no share is written, no input committed, after it


@asynccontextmanager
async def counted_batch():
    """A faust-path batch that counts into the shares: its state written and acknowledged inside, then the shares
    due (a share is never ahead of the state it counts)."""
    global _torn
    async with _counting:
        try:
            yield
        except asyncio.CancelledError:
            _torn = True  # stopped with its counts in the shares and its acks unknown
            raise
        write_shares(now=time.time())


async def write_all() -> tuple[dict, dict] | None:
    """Every changed share written, between batches; their positions (to settle once acknowledged), or None after
    a torn batch (then nothing is written: the restart reads that batch's input again)."""
    async with _counting:
        if _torn:
            return None
        write_shares()
        return share_positions()


def install() -> None:
    """faust's input commit writes the shares first (its producer flush then acknowledges them before the offsets)
    and settles their positions after it; a timer writes the due ones while the input is idle; a stop writes them."""
    from faust.transport.consumer import Consumer

    if getattr(Consumer.commit, "_recstream_shares_first", False):
        return
    original = Consumer.commit

    async def commit(self, *args, **kwargs) -> bool:
        positions = await write_all()
        if positions is None:
            return False
        committed = await original(self, *args, **kwargs)
        if committed:
            settle_shares(positions)
        return committed

    commit._recstream_shares_first = True
    Consumer.commit = commit
    app.timer(settings.popularity_flush_s, name="recstream_idle_shares")(_idle)
    before_stop.append(_stopping)


async def _idle() -> None:
    async with _counting:
        if not _torn:
            write_shares(now=time.time())


async def _stopping() -> None:
    if await write_all() is not None:
        await app.producer.flush()

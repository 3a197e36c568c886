"""Direct ingest's start against a worker's stop (streams.worker.direct_start): a SIGTERM while the
reader starts ended in a crash (faust stopped the producer under a declare: exit 1 and a traceback,
1 stop in 6 right after ready); now the stop cancels the start, which closes what it opened."""

import asyncio

import pytest

from streams.worker.direct_start import start_reader, unless_stopping
from streams.worker.runtime import before_stop


class SlowTopic:
    """A declare that waits for the broker (as a topic creation does) until released."""

    def __init__(self):
        self.waiting, self.release = asyncio.Event(), asyncio.Event()

    async def maybe_declare(self):
        self.waiting.set()
        await self.release.wait()


class Reader:
    def __init__(self):
        self.calls, self.topic_partitions = [], {}

    async def start(self):
        self.calls.append("start")

    async def stop(self):
        self.calls.append("stop")


async def stop_the_worker():
    """What patches.install_stop_first runs when faust's worker begins to stop."""
    for callback in list(before_stop):
        await callback()


def test_a_stop_during_the_start_ends_it_quietly_and_closes_the_reader():
    async def scenario():
        topic, reader = SlowTopic(), Reader()
        starting = asyncio.create_task(unless_stopping(start_reader([topic], reader, {}, ("faust", "direct"), [])))
        await topic.waiting.wait()
        await stop_the_worker()
        return await asyncio.wait_for(starting, 5), reader.calls, getattr(starting, "cancelling", int)()

    result, calls, cancelling = asyncio.run(scenario())
    assert result is None and calls == ["stop"] and cancelling == 0
    assert before_stop == []  # its cancel callback is gone with it


def test_a_start_without_a_stop_returns_the_started_reader():
    async def scenario():
        topic, reader = SlowTopic(), Reader()
        topic.release.set()
        return await unless_stopping(start_reader([topic], reader, {}, ("faust", "direct"), [])), reader

    started, reader = asyncio.run(scenario())
    assert started is reader and reader.calls == ["start"] and before_stop == []


def test_a_cancellation_that_is_not_the_stop_still_cancels():
    async def scenario():
        topic, reader = SlowTopic(), Reader()
        starting = asyncio.create_task(unless_stopping(start_reader([topic], reader, {}, ("faust", "direct"), [])))
        await topic.waiting.wait()
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        return reader.calls

    assert asyncio.run(scenario()) == ["stop"] and before_stop == []

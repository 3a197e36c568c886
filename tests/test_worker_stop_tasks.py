"""The worker's own tasks against its stop. faust stops the producer and the stores before it cancels
the app's tasks and timers, so one still running met a stopped producer and crashed the stop (exit 1
and a traceback): direct ingest's start (1 SIGTERM in 6 right after ready, streams.worker.direct_start)
and a list refresh (an outside chaos run). Now the stop cancels them first (streams.worker.stopping)."""

import asyncio

from streams.worker.direct_start import start_reader


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


def test_a_stop_during_the_start_cancels_it_and_closes_the_reader():
    from streams.worker.stopping import stop_app_tasks

    async def scenario():
        topic, reader = SlowTopic(), Reader()
        app = type("App", (), {})()
        starting = asyncio.ensure_future(start_reader([topic], reader, {}, ("faust", "direct"), []))
        app._futures = {starting}  # an app task, as faust's app.task runs it
        await topic.waiting.wait()
        await stop_app_tasks(app, timeout=5)  # what the worker's stop runs before faust stops anything
        return starting.cancelled(), reader.calls

    assert asyncio.run(scenario()) == (True, ["stop"])


def test_a_start_without_a_stop_returns_the_started_reader():
    async def scenario():
        topic, reader = SlowTopic(), Reader()
        topic.release.set()
        return await start_reader([topic], reader, {}, ("faust", "direct"), []), reader

    started, reader = asyncio.run(scenario())
    assert started is reader and reader.calls == ["start"]


def test_the_stop_cancels_the_apps_tasks_and_timers_and_waits_for_them():
    from streams.worker.stopping import stop_app_tasks

    async def scenario():
        ended = []

        async def timer():
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.01)  # a task's own cleanup is awaited too
                ended.append("timer")

        app = type("App", (), {})()
        app._futures = {asyncio.ensure_future(timer()), asyncio.ensure_future(asyncio.sleep(0))}
        await asyncio.sleep(0.02)  # the second is done: nothing to cancel there
        await stop_app_tasks(app, timeout=5)
        return ended, [f.cancelled() for f in app._futures]

    ended, cancelled = asyncio.run(scenario())
    assert ended == ["timer"] and sorted(cancelled) == [False, True]


def test_a_stop_lets_the_refresh_chunk_in_progress_finish_and_starts_no_other():
    from agents import refresh

    async def scenario():
        acked = []

        async def chunk_in_progress():
            async with refresh._chunk:
                await asyncio.sleep(0.05)  # its acks
                acked.append("chunk")

        running = asyncio.create_task(chunk_in_progress())
        await asyncio.sleep(0.01)
        await refresh._stop_refreshing()
        return acked, running.done()

    try:
        assert asyncio.run(scenario()) == (["chunk"], True)
        assert refresh._stopping  # the next chunk sees it and returns
    finally:
        refresh._stopping.clear()

"""The worker's own gauges and progress lines beside the HTTP API: consumer lag, the event loop, a
rebuild's progress (registered on import, by streams.worker.web)."""

from __future__ import annotations

from streams.core.metrics import metrics
from streams.kafka.offsets import fetched_position
from streams.worker import topics
from streams.worker.app import app
from streams.worker.state import lag_sources


def _consumer_lag() -> dict:
    """Per topic: highwater (from fetch responses) minus the next offset to read, summed over
    this worker's assigned partitions."""
    lag: dict = {}
    for source in lag_sources:
        for topic, behind in source().items():
            lag[(("topic", topic),)] = behind
    consumer = app.consumer
    for tp in consumer.assignment():
        if tp.topic.endswith("-changelog"):
            continue
        behind = partition_lag(consumer, tp)
        if behind is not None:
            key = (("topic", tp.topic),)
            lag[key] = lag.get(key, 0) + behind
    return lag


def total_lag() -> int | None:
    """Records this worker has yet to read, over every topic it reads (its /health says it: "ok" alone said
    nothing of a worker 300,000 events behind, an outside soak); None while its consumers are not started (faust
    raised ConsumerNotStarted, and /health answered 500 once during a start, an outside check)."""
    try:
        return int(sum(_consumer_lag().values()))
    except Exception:  # noqa: BLE001 - a health answer must not fail on a gauge
        return None


def partition_lag(consumer, tp) -> int | None:
    """Records of `tp` faust's consumer has yet to read: highwater (from fetch responses; None before
    the first) minus the next offset, aiokafka's own position. faust's `_read_offset` stays None for
    a partition it sought to no known commit and read nothing of since, and the lag was then the
    whole partition: a stall after restarts that was none (fuzzing: 381 on a fully read catalog)."""
    try:
        high = consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - not fetched yet
        return None
    if high is None:
        return None
    try:
        position = fetched_position(consumer._thread._ensure_consumer(), tp)[1]
    except Exception:  # noqa: BLE001 - faust's thread has no consumer at this instant
        position = None
    if position is None:
        read = consumer._read_offset.get(tp)
        position = read + 1 if read is not None else 0
    return max(high - position, 0)


metrics.gauge("recstream_consumer_lag", _consumer_lag)


def _event_loop() -> dict:
    """Which event loop the worker runs on (RECSTREAM_EVENT_LOOP), as an info gauge."""
    import asyncio

    return {(("loop", type(asyncio.get_running_loop()).__module__.split(".")[0]),): 1}


metrics.gauge("recstream_event_loop", _event_loop)


@app.timer(interval=5.0)
async def _rebuild_progress() -> None:
    """During `recstream rebuild` (RECSTREAM_REBUILD=1, which holds the clients' outputs back): progress lines until
    the inputs are caught up."""
    if topics.held_outputs and app.tables.recovery.completed.is_set():
        app.log.info(rebuild_progress(sum(_consumer_lag().values()), metrics.value("recstream_signals_applied_total")))


_input_read = False  # the last progress line found no input behind


def rebuild_progress(lag: int, applied: int) -> str:
    """The rebuild's progress line; once caught up (said once: it was repeated every 5 s for as long as the worker
    ran), the held outputs go out as they change (streams.worker.topics.CLIENT_OUTPUTS). Caught up is one line after
    the input was first read to its end: the lists the list window owes the history's last users (built up to
    RECSTREAM_LIST_WINDOW_MS later) are held too, where an integration run sent 54 of them after the line."""
    global _input_read
    line = f"rebuild: {applied:.0f} signals applied, {lag} records behind"
    if not _input_read:
        _input_read = lag == 0
        return line
    topics.held_outputs.clear()
    return line + " - caught up, serving live"

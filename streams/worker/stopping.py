"""How a worker stops: its own work first, every step bounded, and never a stop that hangs.

A worker that cannot stop is a worker an orchestrator must kill: everything here keeps a SIGTERM an
ordinary, bounded stop, also when the broker is gone (a restart reads again from the last commit,
and the pipelines make a repeated event count once, so ending a stop early loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading

from streams.kafka.offsets import being_cancelled, settled

log = logging.getLogger(__name__)

STOP_FIRST_TIMEOUT_S = 15.0
# a whole stop: before_stop callbacks (15 s each at most), then faust's services
STOP_DEADLINE_S = 60.0
STOP_DEADLINE_EXIT_CODE = 70


def install_stop_first() -> None:
    """Run `streams.worker.runtime.before_stop` callbacks when faust's worker begins to stop,
    before it stops its services. faust closed the tables' RocksDB stores and the producer before
    the app's own shutdown signal: direct ingest's batch in flight then met a closed store (a crash
    logged at every stop under load) and its final commit found the producer stopped (a restart
    read everything since the last periodic commit again). Each callback is bounded in time."""
    from faust.worker import Worker

    from streams.worker.runtime import before_stop

    if getattr(Worker.stop, "_recstream_first", False):
        return
    original = Worker.stop

    async def stop(self) -> None:
        if not self._stopped.is_set():
            start_stop_deadline()
            for callback in list(before_stop):
                try:
                    await asyncio.wait_for(callback(), STOP_FIRST_TIMEOUT_S)
                except (Exception, asyncio.CancelledError) as exc:  # a restart reads again from the last commit
                    if isinstance(exc, asyncio.CancelledError) and being_cancelled():
                        raise
                    log.warning(gave_up(callback, exc))
            await stop_app_tasks(self.app, STOP_FIRST_TIMEOUT_S)
        await original(self)

    stop._recstream_first = True
    Worker.stop = stop


def gave_up(callback, exc: BaseException) -> str:
    """What a stop step that did not finish leaves: it said "before stop: <function ...> failed: TimeoutError()"
    (an outside check: a backlog's 2,000-record batch outlasted the 15 s, under every SIGTERM).

    >>> async def _direct_stop():
    ...     "A graceful stop commits what was applied."
    >>> gave_up(_direct_stop, TimeoutError())[:80]
    'stop: _direct_stop (A graceful stop commits what was applied) gave up after 15 s'
    """
    what = (callback.__doc__ or "").strip().split("\n")[0].rstrip(".")
    after = f"after {STOP_FIRST_TIMEOUT_S:g} s" if isinstance(exc, TimeoutError) else f"on {exc!r}"
    return (f"stop: {callback.__qualname__} ({what}) gave up {after}: the restart reads again from the last input "
            "commit (nothing is lost), and recounts what a stop that was not clean recounts")


async def stop_app_tasks(app, timeout: float) -> None:
    """Cancel the app's own tasks and timers (the list refresh, the exposure and readout timers) and
    wait for them, `timeout` at most. faust cancels them only after it has stopped the producer and
    the stores, and one still running then crashed the stop (NotReady from the producer: exit 1, an
    outside chaos run's graceful stop during a list refresh)."""
    running = [future for future in app._futures if not future.done()]
    for future in running:
        future.cancel()
    if running:
        await asyncio.wait(running, timeout=timeout)


def start_stop_deadline(seconds: float = STOP_DEADLINE_S) -> threading.Timer:
    """End the process `seconds` from now if it is still running (exit code 70): a last guard for
    a stop held by something not foreseen. A thread, so it fires even when the event loop is blocked."""
    def give_up() -> None:
        log.error("stop: not done after %g s; exiting now (a restart reads again from the last commit)", seconds)
        exit_now(STOP_DEADLINE_EXIT_CODE)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()
    return timer


def exit_now(code: int) -> None:
    """End the process at once with `code`, the log handlers flushed first (nothing else runs:
    no stop, no atexit)."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(code)


def install_fetcher_close() -> None:
    """aiokafka's Fetcher.close cancels its pending fetch tasks and awaits each one, so the first
    one cancelled (a fetch waiting out its retry backoff: the broker gone) raises CancelledError out
    of `consumer.stop()` (aio-libs/aiokafka#983 names the line). faust's consumer thread died there
    and the worker never exited on SIGTERM. The same close, each cancelled task awaited as done."""
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher.close, "_recstream", False):
        return

    async def close(self) -> None:
        self._closed = True
        self._fetch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._fetch_task
        for waiter in self._fetch_waiters:  # fail pending fetchone/fetchall calls
            self._notify(waiter)
        for task in self._pending_tasks:
            task.cancel()
            await settled(task)

    close._recstream = True
    Fetcher.close = close

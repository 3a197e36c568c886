"""A worker stops on SIGTERM in bounded time, also when its broker is gone, and its log stays readable meanwhile.

A worker whose broker died never exited on SIGTERM (found in session 26, measured here: still running
60 s after the signal): aiokafka's Fetcher.close re-raised the CancelledError of a fetch it had just
cancelled, which ended faust's stop and its consumer thread half way (streams/worker/stopping.py).
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.cli.devtools import WorkerProcess
from streams.kafka.broker import EmbeddedBroker
from streams.worker.stopping import STOP_DEADLINE_EXIT_CODE, STOP_DEADLINE_S

pytestmark = pytest.mark.integration


def test_a_worker_whose_broker_died_exits_on_sigterm(tmp_path):
    # a broker of its own: this test stops it
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        worker = WorkerProcess(broker.url, str(tmp_path / "state"), log_path=tmp_path / "worker.log",
                               env={"RECSTREAM_PARTITIONS": "4", "RECSTREAM_SESSION_TIMEOUT": "6"}).start()
        try:
            worker.wait_ready(timeout=90)
            log = Path(worker.log_path)
            deadline = time.monotonic() + 30
            while "direct ingest reads" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)  # its input consumer started (a broker gone before that fails the start)
            broker.stop()
            time.sleep(2)  # the worker's fetches and heartbeats fail and back off
            worker.proc.send_signal(signal.SIGTERM)
            try:
                code = worker.proc.wait(timeout=STOP_DEADLINE_S / 2)  # before the last-resort deadline
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running {STOP_DEADLINE_S / 2:.0f} s after SIGTERM")
        finally:
            if worker.proc.poll() is None:
                worker.proc.kill()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Exception in thread" not in text and "Traceback" not in text and "Logging error" not in text
    # aiokafka's retries every 100 ms logged once per 10 s (streams/worker/logs.py): ~40 lines in the 2 s before
    assert text.count("Unable connect to node") <= 2, text.count("Unable connect to node")


def test_a_stop_held_past_its_deadline_ends_the_process():
    script = ("import time, logging; logging.basicConfig();"
              "from streams.worker.stopping import start_stop_deadline; start_stop_deadline(0.5); time.sleep(30)")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == STOP_DEADLINE_EXIT_CODE
    assert "stop: not done after 0.5 s; exiting now" in done.stderr
    assert time.monotonic() - started < 25  # it did not sleep its 30 s out


def test_a_cancelled_error_from_an_awaited_task_is_not_the_callers_own_cancellation():
    import asyncio

    from streams.kafka.offsets import being_cancelled

    async def caller(cancel_me: bool) -> bool:
        async def fetch():
            raise asyncio.CancelledError  # as aiokafka's cancelled fetch task re-raises it
        if cancel_me:
            asyncio.current_task().cancel()
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                return being_cancelled()
        try:
            await fetch()
        except asyncio.CancelledError:
            return being_cancelled()

    assert asyncio.run(caller(False)) is False  # a stop goes on
    assert asyncio.run(caller(True)) is True  # a stop that was itself cancelled ends

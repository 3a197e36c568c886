"""The embedded broker starts, answers Kafka requests, and never outlives its owner."""

import os
import signal
import subprocess
import sys
import time

from streams.broker import EmbeddedBroker, kafka_api_versions_ok


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_start_answers_kafka_and_stop_leaves_no_process():
    broker = EmbeddedBroker().start()
    pid = broker.proc.pid
    assert kafka_api_versions_ok(broker.host, broker.port)
    broker.stop()
    assert not _alive(pid)
    assert not kafka_api_versions_ok(broker.host, broker.port, timeout=0.5)


def test_broker_dies_with_a_sigkilled_parent(tmp_path):
    pidfile = tmp_path / "pid"
    code = ("import sys,time; from streams.broker import EmbeddedBroker;"
            f"b=EmbeddedBroker().start(); open({str(pidfile)!r},'w').write(str(b.proc.pid)); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd())
    deadline = time.monotonic() + 30
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)

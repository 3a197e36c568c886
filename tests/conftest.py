"""Fixtures for integration tests: a real embedded broker and real worker processes.

Nothing here mocks Kafka. Every wait is bounded; a worker's log is printed when a test fails.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest

from streams.cli.devtools import WorkerProcess
from streams.kafka.broker import EmbeddedBroker

_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


class Cluster:
    """One isolated recstream deployment (own topic prefix and app id) on the shared broker."""

    def __init__(self, broker: EmbeddedBroker, root: Path, env: dict | None = None):
        self.broker = broker
        self.root = root
        n = next(_ids)
        self.prefix = f"t{n}."
        self.env = {"RECSTREAM_TOPIC_PREFIX": self.prefix, "RECSTREAM_APP_ID": f"recstream-t{n}",
                    "RECSTREAM_PARTITIONS": "4", "RECSTREAM_SESSION_TIMEOUT": "6",
                    "RECSTREAM_LOG_LEVEL": "info", "RECSTREAM_UNKNOWN_ARTWORK_PATIENCE_S": "4",
                    # every restore copies in bulk what it can, as a production-sized one does (2,000 records a partition)
                    "RECSTREAM_BULK_RESTORE_MIN": "1", **(env or {})}
        self.workers: list[WorkerProcess] = []

    def topic(self, name: str) -> str:
        return self.prefix + name

    @property
    def kafka_app_id(self) -> str:
        """The app id in its Kafka names (consumer groups, changelogs): prefixed like its topics."""
        from streams.core.settings import Settings
        return Settings.from_env(self.env).kafka_app_id

    def start_worker(self, name: str = "w0", ready_timeout: float = 90.0) -> WorkerProcess:
        worker = WorkerProcess(self.broker.url, str(self.root / name / "state"), env=self.env,
                               log_path=self.root / f"{name}.log").start()
        self.workers.append(worker)
        worker.wait_ready(timeout=ready_timeout)
        return worker

    def produce(self, topic: str, records, **kwargs) -> int:
        from streams.cli.devtools import produce
        return asyncio.run(produce(self.broker.bootstrap, self.topic(topic), records, **kwargs))

    def consume_all(self, topic: str, idle_ms: int = 1500, timeout: float = 60.0) -> list:
        return asyncio.run(consume_all(self.broker.bootstrap, self.topic(topic), idle_ms, timeout))

    def logs(self) -> str:
        out = []
        for w in self.workers:
            if w.log_path and Path(w.log_path).exists():
                lines = [line for line in Path(w.log_path).read_text().splitlines(True)
                         if "producer buffer full" not in line and "producer flush took" not in line]
                out.append(f"==== {w.log_path} (tail)\n" + "".join(lines[-150:]))
        return "\n".join(out)

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


async def consume_all(bootstrap: str, topic: str, idle_ms: int, timeout: float) -> list:
    """Every record of a topic from the beginning, until no new record for `idle_ms`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch:
                break
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


@pytest.fixture
def cluster(broker, tmp_path, request):
    c = Cluster(broker, tmp_path)
    yield c
    c.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(c.logs())


@pytest.fixture(scope="module")
def module_cluster(broker, tmp_path_factory):
    """One deployment shared by a module's scenarios (a worker start costs seconds)."""
    c = Cluster(broker, tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def records_for(cluster: Cluster, topic: str, key: str) -> list[dict]:
    """Every JSON record with this key on a topic, oldest first."""
    return [json.loads(r.value) for r in cluster.consume_all(topic, idle_ms=700) if r.key == key.encode()]


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` s. A read that timed out
    (a worker busy with one long batch on a loaded machine: a CI run's /metrics read took over 5 s) is a "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except TimeoutError as exc:
            last = exc
            continue
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_caught_up(worker: WorkerProcess, timeout: float, what: str = "the inputs read to their end") -> None:
    """Wait until the worker's recstream_consumer_lag is 0 on every topic; on timeout, fail with
    the lag per topic and /health (which reader and which partitions are behind, and whether the
    worker is stuck rebalancing or restoring)."""
    try:
        wait_until(lambda: metric(worker, "recstream_consumer_lag") == 0, timeout, what=what)
    except pytest.fail.Exception:
        lags = [line for line in worker.get("/metrics")[1].decode().splitlines()
                if line.startswith("recstream_consumer_lag") and not line.endswith(" 0")]
        pytest.fail(f"timed out after {timeout}s waiting for {what}: lag {lags}, /health {worker.get('/health')}")


def metric(worker: WorkerProcess, name: str, **labels) -> float:
    """A counter's value from the worker's /metrics (0 when absent)."""
    status, body = worker.get("/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] == name:
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
    return total


def get_json(worker: WorkerProcess, path: str):
    status, body = worker.get(path)
    return status, (json.loads(body) if body else None)

"""The embedded broker starts, answers Kafka requests, and never outlives its owner."""

import os
import signal
import subprocess
import sys
import time

from streams.kafka.broker import EmbeddedBroker, kafka_api_versions_ok


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
    code = ("import sys,time; from streams.kafka.broker import EmbeddedBroker;"
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


def test_true_end_offsets_corrects_the_brokers_listoffsets_for_multi_record_batches(broker):
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streams.kafka.offsets import true_end_offsets

    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50)
        await producer.start()
        for n in (3, 10):  # two batches: 3 records, then 10
            await asyncio.gather(*[await producer.send("ends-probe", b"x", partition=0) for _ in range(n)])
        await producer.stop()
        tp = TopicPartition("ends-probe", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        listed = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
        fixed = await true_end_offsets({tp: listed}, {"bootstrap_servers": broker.bootstrap})
        return listed, fixed[tp]

    listed, fixed = asyncio.run(go())
    assert listed == 4  # the broker bug this works around: start of the last batch + 1
    assert fixed == 13


def test_stop_consumer_absorbs_aiokafkas_own_cancellation_but_not_ours():
    """aiokafka's coordinator can raise CancelledError out of stop() when a consumer stops right after
    starting; that is swallowed. A cancel of the task doing the stop still propagates."""
    import asyncio

    from streams.kafka.offsets import stop_consumer

    class CancelsOnStop:  # stop() as aiokafka's raised it: its own inner task cancelled
        stopped = 0

        async def stop(self):
            CancelsOnStop.stopped += 1
            raise asyncio.CancelledError

    asyncio.run(stop_consumer(CancelsOnStop()))  # nothing raised
    assert CancelsOnStop.stopped == 1

    class SlowStop:
        async def stop(self):
            await asyncio.sleep(10)

    async def cancelled_while_stopping():
        task = asyncio.create_task(stop_consumer(SlowStop()))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    try:
        asyncio.run(cancelled_while_stopping())
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("our own cancellation was swallowed")


def test_recstream_broker_on_a_port_in_use_says_so_in_one_line(broker):
    """A newcomer's check: it printed "embedded broker on kafka://127.0.0.1:9092 ... Ctrl-C to stop" and exited
    0 at once (its readiness check reached the other listener; its own bind error went nowhere)."""
    result = subprocess.run([sys.executable, "-m", "streams.cli", "broker", "--port", str(broker.port)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip() == f"recstream broker: cannot listen on {broker.bootstrap}: Address already in use"

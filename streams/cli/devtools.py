"""Developer commands (dev, broker) and the worker-process handle that
``recstream dev``, the integration tests and the benchmarks share."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from streams.cli import dev_options
from streams.cli.dev_experiment import experiment_readout
from streams.cli.dev_isolation import drop_topics, isolated
from streams.core.demo import DemoGenerator, dumps
from streams.core.setting_rules import bootstrap_servers
from streams.core.settings import Settings
from streams.kafka.broker import BrokerError, EmbeddedBroker, _die_with_parent, free_port
from streams.kafka.offsets import stop_consumer


class WorkerProcess:
    """A ``recstream worker`` subprocess with its own data dir and web port."""

    def __init__(self, broker_url: str, data_dir: str, env: dict | None = None,
                 web_port: int | None = None, log_path: Path | None = None):
        self.web_port = web_port or free_port()
        self.env = {**os.environ, **(env or {}), "RECSTREAM_BROKER_URL": broker_url,
                    "RECSTREAM_DATA_DIR": data_dir, "RECSTREAM_WEB_PORT": str(self.web_port),
                    "RECSTREAM_WEB_HOST": "127.0.0.1"}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> WorkerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        level = Settings.from_env({"RECSTREAM_LOG_LEVEL": self.env.get("RECSTREAM_LOG_LEVEL", "info")}).log_level
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "-l", level],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, preexec_fn=_die_with_parent)
        return self

    def get(self, path: str, timeout: float = 5.0, headers: dict | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = 90.0, min_partitions: int = 1) -> dict:
        """Until /health says recovered with partitions assigned. Raises on timeout or exit."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {self.proc.returncode}; log: {self.log_path}")
            try:
                status, body = self.get("/health", timeout=2)
                last = json.loads(body)
                if status == 200 and last["assigned_partitions"] >= min_partitions and not last["rebalancing"]:
                    return last
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"worker not ready after {timeout}s (last health: {last}); log: {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def pace(sent: int, rate: float, started: float) -> None:
    """Hold a sender to `rate` messages/s (0: no limit); checks every 50 messages."""
    if rate > 0 and sent % 50 == 0:
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def produce(bootstrap: str, topic: str, records, *, rate: float = 0.0,
                  linger_ms: int = 5, compression: str | None = None) -> int:
    """Send (key, value) pairs with aiokafka; `rate` > 0 caps messages/s; `compression`: gzip,
    snappy, lz4 or zstd batches. Returns the count."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms, compression_type=compression)
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        for key, value in records:
            await producer.send(topic, value=value, key=key)
            sent += 1
            await pace(sent, rate, started)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def segment_key(event: dict) -> bytes | None:
    """Key Segment events by user (or anonymous) id so one user's events stay in order."""
    user = event.get("userId") or event.get("anonymousId")
    return user.encode() if isinstance(user, str) else None


# --- commands -----------------------------------------------------------------------------


def run(command: str, argv: list[str]) -> int:
    from streams.core import demo

    return {"dev": cmd_dev, "demo-events": demo.main, "broker": cmd_broker}[command](argv)


def cmd_broker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream broker", description="Run the embedded broker.")
    parser.add_argument("--port", type=int, default=9092, help="the port to listen on, on 127.0.0.1 (default 9092)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be a TCP port (0 to 65535), got {args.port}")
    try:
        broker = EmbeddedBroker(port=args.port).start()
    except BrokerError as exc:
        print(f"recstream broker: {exc}", file=sys.stderr)
        return 2
    print(f"embedded broker on {broker.url} (memory storage: a restart starts empty); Ctrl-C to stop", flush=True)
    try:
        broker.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def cmd_dev(argv: list[str]) -> int:
    args = dev_options.parse(argv)
    sys.stdout.reconfigure(line_buffering=True)  # live output reaches a pipe line by line
    try:
        asyncio.run(_dev(args))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        print("\n[dev] stopped")
    except (DevError, BrokerError) as exc:
        print(f"recstream dev: {exc}", file=sys.stderr)
        return 1
    return 0


class DevError(Exception):
    """`recstream dev` cannot go on (the worker did not start, the broker did not answer)."""


async def _dev(args) -> None:
    from aiokafka.errors import KafkaError

    settings = Settings.from_env()
    # SIGTERM and Ctrl-C stop it alike: the worker and broker stop and the folder is removed (Ctrl-C left to
    # asyncio.run's own handler once left dev running in a loaded CI run while SIGTERM always stopped it)
    for stop in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop, asyncio.current_task().cancel)
    workdir = Path(tempfile.mkdtemp(prefix="recstream-dev-"))
    broker = worker = None
    try:
        url = settings.broker_url
        if not url:
            broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
            url = broker.url
            print(f"[dev] embedded broker on {url}")
        else:
            settings = isolated(settings)
            print(f"[dev] on {url} under the topic prefix {settings.topic_prefix!r}: its own topics and consumer "
                  "groups, so nothing already on that cluster is read or written")
        worker = WorkerProcess(url, str(workdir / "state"), log_path=workdir / "worker.log",
                               env={"RECSTREAM_TOPIC_PREFIX": settings.topic_prefix},
                               web_port=settings.web_port if settings.web_port != 6066 else None)
        worker.start()
        print(f"[dev] worker starting (log: {workdir / 'worker.log'}, http: {worker.base_url})")
        try:
            await asyncio.get_running_loop().run_in_executor(None, worker.wait_ready)
        except (RuntimeError, TimeoutError) as exc:
            why = str(exc).split("; log:")[0]
            log = _tail(worker.log_path)
            raise DevError(f"{why}; from its log (--keep keeps it):\n{log}") from None
        print("[dev] worker ready")
        try:
            await _dev_loop(args, settings, bootstrap_servers(url), worker)
        except KafkaError as exc:
            raise DevError(f"the broker at {url} did not answer ({exc})") from None
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        elif worker is not None and not args.keep:
            await drop_topics(settings)
        if args.keep:
            print(f"[dev] kept {workdir} (worker.log, state)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _tail(path: Path, lines: int = 12) -> str:
    """The worker log's error lines (faust's shutdown noise left out), else its last lines."""
    try:
        log = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in log if "[ERROR]" in line or "[CRITICAL]" in line]
    return "\n".join((errors or log)[-lines:])


async def _dev_loop(args, settings: Settings, bootstrap: str, worker: WorkerProcess) -> None:
    from datetime import datetime, timezone

    from aiokafka import AIOKafkaConsumer

    demo = DemoGenerator(users=args.users, artists=max(20, args.users // 5), artworks=args.users * 5,
                         end_time=datetime.now(timezone.utc))
    artworks = [(a["id"].encode(), dumps(a)) for a in demo.artworks()]
    await produce(bootstrap, settings.topic("catalog.artworks"), artworks)
    await produce(bootstrap, settings.topic("catalog.curated"), [(b"curated", dumps(demo.curated()))])
    print(f"[dev] published {len(artworks)} artworks and the curated list")
    artists = sorted({a["artist_id"] for a in demo.artworks()})
    await asyncio.sleep(1.0)  # let the catalog land in the table before events refer to it
    status, body = worker.get("/recommendations/newcomer")
    print(f"[dev] a brand-new visitor gets: {_items_line(json.loads(body))}")
    print(f"[dev] streaming {args.events} events at {f'{args.rate:g}/s' if args.rate else 'full speed'}")
    watch = {f"u{i}" for i in range(args.watch)}
    events = ((segment_key(ev), dumps(ev)) for ev in demo.events(args.events))
    producer_task = asyncio.create_task(
        produce(bootstrap, settings.topic("events.segment"), events, rate=args.rate))
    consumer = AIOKafkaConsumer(settings.topic("recommendations"), settings.topic("affinity.updates"),
                                bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    started = time.monotonic()
    counts = {"recommendations": 0, "affinity.updates": 0}
    all_sent = False
    try:
        while not args.duration or time.monotonic() - started < args.duration:  # 0: until Ctrl-C
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    kind = rec.topic[len(settings.topic_prefix):]
                    counts[kind] += 1
                    value = json.loads(rec.value)
                    if kind == "recommendations" and value["user_id"] in watch:
                        print(f"[recs] {value['user_id']:>5} ({value['variant']}): {_items_line(value)}")
            if producer_task.done() and not all_sent:
                all_sent = True
                sent = producer_task.result()  # surfaces a producer failure
                print(f"[dev] all {sent} events sent")
                await experiment_readout(settings, functools.partial(produce, bootstrap), worker, artists)
                if not args.duration:
                    print("[dev] running until Ctrl-C")
    finally:
        producer_task.cancel()
        try:  # bounded: the worker and broker are stopped after this, so a stop that hangs here would keep them
            await asyncio.wait_for(stop_consumer(consumer), 10)
        except asyncio.TimeoutError:
            print("[dev] the output consumer did not stop within 10 s; going on")
        print(f"[dev] {counts['affinity.updates']} affinity updates, "
              f"{counts['recommendations']} recommendation lists")
    user = min(watch) if watch else "u0"
    status, body = worker.get(f"/recommendations/{user}")
    print(f"[dev] GET /recommendations/{user} -> {status} {body.decode()[:400]}")
    if not all_sent:  # the duration ended first
        await experiment_readout(settings, functools.partial(produce, bootstrap), worker, artists)


def _items_line(recs: dict) -> str:
    return ", ".join(f"{i['artwork_id']} by {i['artist_id']} [{i['source']}]" for i in recs["items"])



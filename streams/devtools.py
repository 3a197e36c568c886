"""Developer commands (dev, demo-events, broker, config) and the worker-process handle that
``recstream dev``, the integration tests and the benchmarks share."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from streams.broker import EmbeddedBroker, _die_with_parent, free_port
from streams.demo import DemoGenerator, dumps
from streams.settings import Settings


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
    return {"dev": cmd_dev, "demo-events": cmd_demo_events, "broker": cmd_broker,
            "config": cmd_config}[command](argv)


def cmd_config(argv: list[str]) -> int:
    if argv == ["--markdown"]:  # the README's configuration table
        print("| variable | default | meaning |\n|---|---|---|")
        for var, default, help_text in Settings.describe():
            print(f"| `{var}` | {f'`{default}`' if default else '(empty)'} | {help_text} |")
        return 0
    current = Settings.from_env()
    for var, default, help_text in Settings.describe():
        value = getattr(current, var[len("RECSTREAM_"):].lower())
        print(f"{var}={value if not hasattr(value, 'items') else dict(value)}    # {help_text} (default {default})")
    return 0


def cmd_broker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream broker", description="Run the embedded broker.")
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker on {broker.url} (memory storage); Ctrl-C to stop", flush=True)
        try:
            broker.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0


def cmd_demo_events(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream demo-events",
                                     description="Seeded demo data as JSONL on stdout.")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--artists", type=int, default=200)
    parser.add_argument("--artworks", type=int, default=2000)
    parser.add_argument("--events", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--catalog", action="store_true", help="print the artworks catalog instead")
    args = parser.parse_args(argv)
    demo = DemoGenerator(args.users, args.artists, args.artworks, seed=args.seed)
    rows = demo.artworks() if args.catalog else demo.events(args.events)
    out = sys.stdout.buffer
    for row in rows:
        out.write(dumps(row) + b"\n")
    out.flush()
    return 0


def cmd_dev(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="recstream dev",
        description="Embedded broker + a worker + demo events, printing live affinity.")
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (0: until Ctrl-C)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=400, help="demo events per second")
    parser.add_argument("--watch", type=int, default=3, help="users whose affinity is printed")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_dev(args))
    except KeyboardInterrupt:
        print("\nstopped")
    return 0


async def _dev(args) -> None:
    settings = Settings.from_env()
    broker = None
    url = settings.broker_url
    if not url:
        broker = EmbeddedBroker().start()
        url = broker.url
        print(f"[dev] embedded broker on {url}")
    workdir = Path(tempfile.mkdtemp(prefix="recstream-dev-"))
    worker = WorkerProcess(url, str(workdir / "state"), log_path=workdir / "worker.log",
                           web_port=settings.web_port if settings.web_port != 6066 else None)
    try:
        worker.start()
        print(f"[dev] worker starting (log: {workdir / 'worker.log'}, http: {worker.base_url})")
        await asyncio.get_running_loop().run_in_executor(None, worker.wait_ready)
        print("[dev] worker ready")
        await _dev_loop(args, settings, url.removeprefix("kafka://"), worker)
    finally:
        worker.stop()
        if broker:
            broker.stop()


async def _dev_loop(args, settings: Settings, bootstrap: str, worker: WorkerProcess) -> None:
    from datetime import datetime, timezone

    from aiokafka import AIOKafkaConsumer

    demo = DemoGenerator(users=args.users, artists=max(20, args.users // 5), artworks=args.users * 5,
                         end_time=datetime.now(timezone.utc))
    artworks = [(a["id"].encode(), dumps(a)) for a in demo.artworks()]
    await produce(bootstrap, settings.topic("catalog.artworks"), artworks)
    await produce(bootstrap, settings.topic("catalog.curated"), [(b"curated", dumps(demo.curated()))])
    print(f"[dev] published {len(artworks)} artworks and the curated list")
    await asyncio.sleep(1.0)  # let the catalog land in the table before events refer to it
    status, body = worker.get("/recommendations/newcomer")
    print(f"[dev] a brand-new visitor gets: {_items_line(json.loads(body))}")
    print(f"[dev] streaming {args.events} events at {args.rate:g}/s")
    watch = {f"u{i}" for i in range(args.watch)}
    events = ((segment_key(ev), dumps(ev)) for ev in demo.events(args.events))
    producer_task = asyncio.create_task(
        produce(bootstrap, settings.topic("events.segment"), events, rate=args.rate))
    consumer = AIOKafkaConsumer(settings.topic("recommendations"), settings.topic("affinity.updates"),
                                bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    started = time.monotonic()
    counts = {"recommendations": 0, "affinity.updates": 0}
    try:
        while not args.duration or time.monotonic() - started < args.duration:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    kind = rec.topic[len(settings.topic_prefix):]
                    counts[kind] += 1
                    value = json.loads(rec.value)
                    if kind == "recommendations" and value["user_id"] in watch:
                        print(f"[recs] {value['user_id']:>5} ({value['variant']}): {_items_line(value)}")
            if producer_task.done():
                producer_task.result()  # surface a producer failure
                if not args.duration:
                    break
    finally:
        producer_task.cancel()
        await consumer.stop()
    user = sorted(watch)[0]
    status, body = worker.get(f"/recommendations/{user}")
    print(f"[dev] {counts['affinity.updates']} affinity updates, {counts['recommendations']} recommendation lists")
    print(f"[dev] GET /recommendations/{user} -> {status} {body.decode()[:400]}")


def _items_line(recs: dict) -> str:
    return ", ".join(f"{i['artwork_id']} by {i['artist_id']} [{i['source']}]" for i in recs["items"])

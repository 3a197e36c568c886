"""`recstream dev`: the embedded broker (or RECSTREAM_BROKER_URL's, under a topic prefix of its own), a
worker and demo events, printing live recommendations; everything it started is stopped and removed at the end."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from streams.cli import dev_options
from streams.cli.common import unanswered
from streams.cli.dev_experiment import experiment_readout
from streams.cli.dev_isolation import drop_topics, isolated
from streams.cli.devtools import WorkerProcess, produce, segment_key
from streams.core.demo import DemoGenerator, dumps
from streams.core.setting_rules import bootstrap_servers
from streams.core.settings import Settings
from streams.kafka.broker import BrokerError, EmbeddedBroker
from streams.kafka.offsets import stop_consumer


def cmd_dev(argv: list[str]) -> int:
    args = dev_options.parse(argv)
    sys.stdout.reconfigure(line_buffering=True)  # live output reaches a pipe line by line
    try:
        asyncio.run(_dev(args))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        print("\n[dev] stopped")
    except (DevError, BrokerError) as exc:
        print(f"recstream dev: {exc}", file=sys.stderr)
        return getattr(exc, "status", 1)
    return 0


class DevError(Exception):
    """`recstream dev` cannot go on (the worker did not start, the broker did not answer)."""

    status = 1


class Unreachable(DevError):
    status = 2  # as every command says an unreachable broker (docs/operations.md)


async def _dev(args) -> None:
    from aiokafka.errors import KafkaError

    from streams.kafka.admin import existing_topics

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
            try:  # before a worker is started: its own failure to reach the broker was three lines from two places
                await existing_topics(settings.aiokafka_kwargs())
            except KafkaError as exc:
                raise Unreachable(unanswered(exc, url)) from None
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



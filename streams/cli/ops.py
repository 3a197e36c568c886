"""Ops commands: ``recstream replay``, ``recstream emit-all``, ``recstream rebuild``.

replay   JSONL files (optionally .gz) of Segment payloads or typed records -> the right input
         topics, keyed by user/consumer, with progress, an optional rate limit and a summary;
         exit status 1 when nothing was sent, with a hint to `recstream load` (streams/cli/load.py)
         when the lines look like catalog records.
emit-all every user's current recommendations (read from the recommendations changelog, so no
         worker is involved and the read costs the workers nothing) -> the recommendations topic.
rebuild  a worker under a new app id: a fresh consumer group reads every input topic from the
         beginning into fresh tables and changelogs, reports progress, then carries on live.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec

from streams.cli.common import Progress, bootstrap_of
from streams.core.events import Rejected, parse_segment, parse_typed, parse_typed_image
from streams.core.jsonguard import MAX_DEPTH, decode_problem, too_deep
from streams.core.properties import first_id
from streams.core.records import SIGNAL_KINDS, Identity, ImageEvent
from streams.core.setting_rules import KAFKA_NAME, MAX_NAMES_CHARS, NAME_CHARS
from streams.core.settings import Settings
from streams.core.topology import changelog as changelog_name

TYPED_IMAGE_KINDS = {"image_impression": "images.impressions", "image_conversion": "images.conversions"}


def route_line(line: bytes, max_bytes: int = 65536) -> tuple[str, bytes | None] | Rejected:
    """Which input topic a replay line goes to, and its key (user/consumer id).

    Segment payloads (with "type") go to events.segment; typed records carry "kind"
    (follow, save, ..., image_impression, image_conversion) and go to their typed topic.
    Lines the worker would dead-letter are rejected here, with the same reasons; no line can
    stop a replay."""
    try:
        return _route_line(line, max_bytes)
    except Exception as exc:
        return Rejected("internal_error", f"{type(exc).__name__} while reading the line")


def _route_line(line: bytes, max_bytes: int) -> tuple[str, bytes | None] | Rejected:
    if len(line) > max_bytes:
        return Rejected("oversized", f"{len(line)} bytes > limit {max_bytes}")
    if too_deep(line):
        return Rejected("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        obj = msgspec.json.decode(line)  # the worker's decoder: the same reasons for the same lines
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejected(*decode_problem(exc, line))
    if not isinstance(obj, dict):
        return Rejected("invalid_field", "a line must be a JSON object")
    kind = obj.get("kind")
    if "type" in obj:
        topic, parsed = "events.segment", parse_segment(line, max_bytes=max_bytes)
    elif isinstance(kind, str) and kind in SIGNAL_KINDS:
        topic, parsed = f"signals.{kind}", parse_typed(kind, line, max_bytes=max_bytes)
    elif isinstance(kind, str) and kind in TYPED_IMAGE_KINDS:
        topic = TYPED_IMAGE_KINDS[kind]
        parsed = parse_typed_image(kind.removeprefix("image_"), line, max_bytes=max_bytes)
    else:
        return Rejected("unknown_record", "neither a Segment payload (type) nor a typed record (kind)")
    if isinstance(parsed, Rejected):
        return parsed
    return topic, _key_of(parsed, obj)


def _key_of(parsed, obj: dict) -> bytes | None:
    """The id the worker keys the record's state by, as the producers should key it: the user (an
    identity: the earlier id, where its profile is), or the image event's consumer."""
    if isinstance(parsed, ImageEvent):
        return parsed.consumer_id.encode()
    if isinstance(parsed, Identity):
        return parsed.previous_id.encode()
    user = getattr(parsed, "user_id", None) or first_id(obj.get("userId"), obj.get("anonymousId"))
    return user.encode() if user else None


async def replay(paths: list[Path], bootstrap: str, settings: Settings, rate: float = 0.0,
                 rejects: Path | None = None, hints: Counter | None = None) -> tuple[int, Counter]:
    """`hints` (when given) counts the rejected lines that look like catalog records, by kind."""
    from aiokafka import AIOKafkaProducer

    from streams.cli.devtools import pace
    from streams.cli.load import kafka_client, numbered_lines, reject_record, sniff
    from streams.kafka.admin import start_quietly

    client = kafka_client(settings, bootstrap)
    reject_file = open(rejects, "wb") if rejects else None  # before the producer: a bad path leaves nothing open
    producer = AIOKafkaProducer(**client, linger_ms=20, max_batch_size=262144)
    try:
        await start_quietly(producer)
    except BaseException:
        if reject_file:
            reject_file.close()
        raise
    total_bytes = sum(p.stat().st_size for p in paths)
    progress = Progress("replay", total_bytes)
    sent, rejected = 0, Counter()
    started = time.monotonic()
    try:
        for path, number, line, done in numbered_lines(paths):
            routed = route_line(line, settings.max_event_bytes)
            if isinstance(routed, Rejected):
                rejected[routed.reason] += 1
                if hints is not None and routed.reason == "unknown_record":
                    hints[sniff(line)] += 1
                if reject_file:
                    reject_file.write(reject_record(routed, path, number, line))
                continue
            topic, key = routed
            await producer.send(settings.topic(topic), value=line, key=key)
            sent += 1
            await pace(sent, rate, started)
            progress.update(sent, done)
        await producer.flush()
    finally:
        await producer.stop()
        if reject_file:
            reject_file.close()
    progress.close(sent)
    return sent, rejected


async def emit_all(bootstrap: str, settings: Settings, users: set[str] | None = None,
                   idle_ms: int = 2000) -> tuple[int, int]:
    """Re-publish the latest recommendations of every (or each listed) user: (lists sent, listed
    users without a list)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from streams.cli.load import kafka_client
    from streams.kafka.admin import start_quietly

    changelog = changelog_name(settings.kafka_app_id, "recommendations")  # faust's name for it
    client = kafka_client(settings, bootstrap)
    consumer = AIOKafkaConsumer(changelog, **client, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await start_quietly(consumer)
    latest: dict[bytes, bytes | None] = {}
    progress = Progress("reading current lists")
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=idle_ms, max_records=10000)
            if not batch:
                break
            for records in batch.values():
                for r in records:
                    latest[r.key] = r.value
            progress.update(len(latest))
    finally:
        await consumer.stop()
    progress.close(len(latest))
    producer = AIOKafkaProducer(**client, linger_ms=20)
    await start_quietly(producer)
    sent = 0
    progress = Progress("emit-all")
    try:
        for key, value in latest.items():
            if value is None or (users is not None and key.decode() not in users):
                continue
            await producer.send(settings.topic("recommendations"), value=value, key=key)
            sent += 1
            progress.update(sent)
        await producer.flush()
    finally:
        await producer.stop()
    progress.close(sent)
    return sent, len(users) - sent if users is not None else 0


def cmd_replay(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream replay",
                                     description="Produce archived events (JSONL, .gz) into the input topics.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rate", type=float, default=0.0, help="max events per second (0: as fast as possible)")
    parser.add_argument("--rejects", type=Path, help="write rejected lines with their reasons here (JSONL)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.rate) and args.rate >= 0):
        parser.error(f"--rate must be a finite number >= 0 (0: as fast as possible), got {args.rate}")
    from streams.cli.load import missing_files, run_producer

    if missing_files("replay", args.files, args.rejects):
        return 2
    settings = Settings.from_env()
    hints: Counter = Counter()
    bootstrap = bootstrap_of(settings)
    result, status = run_producer(
        "replay", replay(args.files, bootstrap, settings, args.rate, args.rejects, hints))
    if status:
        return status
    sent, rejected = result
    print(f"sent {sent}, rejected {sum(rejected.values())}")
    for reason, count in rejected.most_common():
        print(f"  rejected {reason}: {count}")
    for kind, count in hints.most_common():
        if kind in ("artworks", "curated", "images"):
            print(f"hint: {count} lines look like {kind} catalog records: load them with "
                  f"`recstream load {kind} FILE...`")
    if not sent:
        print("nothing was sent", file=sys.stderr)
    return 0 if sent else 1


def cmd_emit_all(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream emit-all",
                                     description="Publish every user's current recommendations again "
                                                 "(e.g. before a weekly email).")
    parser.add_argument("--users", type=Path, help="file with one user id per line (default: every user)")
    args = parser.parse_args(argv)
    users = None
    if args.users:
        # utf-8-sig: a file saved with a byte-order mark lost its first id to it (an outside fuzzer)
        users = {line.strip() for line in args.users.read_text(encoding="utf-8-sig").splitlines() if line.strip()}
    settings = Settings.from_env()
    sent, unknown = asyncio.run(emit_all(bootstrap_of(settings), settings, users))
    print(f"emitted {sent} recommendation lists")
    if unknown:
        print(f"{unknown} of the listed users have no list (no event has named them)", file=sys.stderr)
    return 0


def cmd_rebuild(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="recstream rebuild",
        description="Rebuild all state from the input topics under a new app id, then carry on live.")
    parser.add_argument("--app-id", required=True,
                        help="the new app id (new consumer group, changelogs and internal topics)")
    parser.add_argument("--bulk", action="store_true",
                        help="aggregate the history in bulk (numpy) and write the tables' changelogs directly, "
                             "then hand over to the live agents (much faster than the per-event path)")
    parser.add_argument("--no-worker", action="store_true",
                        help="with --bulk: stop after the bulk phase (start workers under the new app id yourself)")
    parser.add_argument("--shards", type=int, default=None,
                        help="with --bulk: processes to rebuild in (default RECSTREAM_REBUILD_SHARDS; 0 or unset: "
                             "one per CPU, at most one per partition)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    room = MAX_NAMES_CHARS - len(settings.topic_prefix)  # RECSTREAM_APP_ID's rule: it names topics
    if not (args.app_id and KAFKA_NAME.fullmatch(args.app_id)) or len(args.app_id) > room:
        parser.error(f"--app-id must be 1 to {room} of {NAME_CHARS}")
    if args.app_id == settings.app_id:
        parser.error("--app-id must differ from the running app's id (RECSTREAM_APP_ID): a rebuild needs fresh state")
    if (args.no_worker or args.shards is not None) and not args.bulk:
        parser.error("--no-worker and --shards only make sense with --bulk")
    if args.shards is not None and args.shards < 0:
        parser.error("--shards must be >= 0 (0: one per CPU)")
    env = {**os.environ, "RECSTREAM_APP_ID": args.app_id, "RECSTREAM_REBUILD": "1"}
    if args.bulk:
        from streams.cli.load import run_producer
        from streams.rebuild.topics import AppIdInUse

        try:  # an unreachable broker: run_producer's one line and status 2
            report, status = run_producer("rebuild", _bulk(Settings.from_env(env), args.shards or None))
        except AppIdInUse as exc:
            print(f"recstream rebuild: {exc}", file=sys.stderr)
            return 2
        if status:
            return status
        print("\n".join(report.lines()))
        if args.no_worker:
            return 0
    print(f"rebuilding into app id {args.app_id!r}; when caught up, point readers at this worker "
          f"and stop the workers of {settings.app_id!r}", file=sys.stderr)
    os.execvpe(sys.executable, [sys.executable, "-m", "streams.cli", "worker", "-l", settings.log_level], env)
    return 0  # not reached


def _bulk(settings: Settings, shards: int | None):
    """The bulk phase under the new app id's settings (a coroutine to run)."""
    from streams.core.config import core_objects
    from streams.rebuild.coordinator import bulk_rebuild

    bootstrap_of(settings)
    _, parser, pipeline = core_objects(settings)
    return bulk_rebuild(settings, pipeline, parser, Progress("rebuild (bulk)"), shards=shards)

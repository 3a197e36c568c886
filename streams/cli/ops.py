"""Ops commands: ``recstream replay``, ``recstream rebuild`` (``recstream emit-all``: streams/cli/emit.py).

replay   JSONL files (optionally .gz) of Segment payloads or typed records -> the right input
         topics, keyed by user/consumer, with progress, an optional rate limit and a summary;
         exit status 1 when nothing was sent, with a hint to `recstream load` (streams/cli/load.py)
         when the lines look like catalog records.
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
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from streams.cli.common import Progress, bootstrap_of
from streams.cli.deliveries import NOT_DELIVERED
from streams.core.config import core_objects
from streams.core.events import Rejected
from streams.core.ingest import ParserConfig, ingest_one
from streams.core.jsonguard import MAX_DEPTH, decode_problem, too_deep
from streams.core.properties import first_id
from streams.core.records import SIGNAL_KINDS, Identity, ImageEvent
from streams.core.setting_rules import KAFKA_NAME, MAX_NAMES_CHARS, NAME_CHARS
from streams.core.settings import Settings
from streams.core.topology import INPUT_KINDS

TYPED_IMAGE_KINDS = {"image_impression": "images.impressions", "image_conversion": "images.conversions"}


def route_line(line: bytes, parser: ParserConfig | None = None,
               now: float | None = None) -> tuple[str, bytes | None] | Rejected:
    """Which input topic a replay line goes to, and its key (user/consumer id).

    Segment payloads (with "type") go to events.segment; typed records carry "kind"
    (follow, save, ..., image_impression, image_conversion) and go to their typed topic.
    Lines the worker would dead-letter are rejected here, with the same reasons: the worker's own
    ingest under the same settings (`parser`: event map, size, event-time bounds; `now`: the wall
    clock), except that works are not looked up (the worker waits for a work its catalog lacks).
    No line can stop a replay."""
    try:
        return _route_line(line, parser or ParserConfig(), now)
    except Exception as exc:
        return Rejected("internal_error", f"{type(exc).__name__} while reading the line")


class _Routing(msgspec.Struct):
    """What a line is routed by; its other fields are skipped unread, as the worker's decoders skip the fields they
    do not read (bytes that are not UTF-8 in an unknown field, or an identify's traits, were refused by replay and
    applied by the worker: an outside differential check)."""

    type: Any = msgspec.UNSET
    kind: Any = None
    userId: Any = None
    anonymousId: Any = None


_ROUTING = msgspec.json.Decoder(_Routing)


class _AnyWork:
    """An artist for every work: replay checks lines, not the catalog."""

    def get(self, work_id: str) -> str:
        return "?"


def _route_line(line: bytes, parser: ParserConfig, now: float | None) -> tuple[str, bytes | None] | Rejected:
    max_bytes = parser.max_bytes
    if len(line) > max_bytes:
        return Rejected("oversized", f"longer than the limit of {max_bytes:,} bytes")
    if too_deep(line):
        return Rejected("too_deep", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        obj = _ROUTING.decode(line)  # skips what it does not read, as the worker's decoders: the same reasons
    except msgspec.ValidationError:
        return Rejected("invalid_field", "a line must be a JSON object")
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejected(*decode_problem(exc, line))
    kind = obj.kind
    if obj.type is not msgspec.UNSET:
        topic = "events.segment"
    elif isinstance(kind, str) and kind in SIGNAL_KINDS:
        topic = f"signals.{kind}"
    elif isinstance(kind, str) and kind in TYPED_IMAGE_KINDS:
        topic = TYPED_IMAGE_KINDS[kind]
    else:
        return Rejected("unknown_record", "neither a Segment payload (type) nor a typed record (kind)")
    parsed = ingest_one(line, INPUT_KINDS[topic], _AnyWork(), parser, now)  # as the worker reads `topic`
    if isinstance(parsed, Rejected):
        return parsed
    return topic, _key_of(parsed, obj)


def _key_of(parsed, obj: _Routing) -> bytes | None:
    """The id the worker keys the record's state by, as the producers should key it: the user (an
    identity: the earlier id, where its profile is), or the image event's consumer."""
    if isinstance(parsed, ImageEvent):
        return parsed.consumer_id.encode()
    if isinstance(parsed, Identity):
        return parsed.previous_id.encode()
    user = getattr(parsed, "user_id", None) or first_id(obj.userId, obj.anonymousId)
    return user.encode() if user else None


async def replay(paths: list[Path], bootstrap: str, settings: Settings, report, rate: float = 0.0) -> None:
    """Route and send every line; `report` (streams.cli.load.Report) counts the records the broker acknowledged
    and the lines rejected, with their reasons (those that look like catalog records: `report.looks_like`)."""
    from aiokafka import AIOKafkaProducer

    from streams.cli.deliveries import Deliveries
    from streams.cli.devtools import pace
    from streams.cli.load import UnreadableFile, kafka_client, numbered_lines
    from streams.kafka.admin import ensure_topics, start_quietly

    client = kafka_client(settings, bootstrap)
    parser = core_objects(settings)[1]  # the worker's checks under the same settings
    # before the first send: a topic the broker auto-created would take its default partition count, and
    # input keyed by user must sit in its user's state partition (single hop; the bulk rebuild's map)
    await ensure_topics(client, {settings.topic(name): (settings.partitions, {}) for name in INPUT_KINDS})
    producer = AIOKafkaProducer(**client, linger_ms=20, max_batch_size=262144)
    await start_quietly(producer)
    report.started = True
    progress = Progress("replay", sum(p.stat().st_size for p in paths))
    deliveries = Deliveries(producer, report)
    started, lines = time.monotonic(), 0
    try:
        for path, number, line, done in numbered_lines(paths, parser.max_bytes):
            routed = route_line(line, parser)
            if isinstance(routed, Rejected):
                report.reject(path, number, routed, line)
                continue
            topic, key = routed
            await deliveries.send(settings.topic(topic), key, path, number, line)
            lines += 1
            await pace(lines, rate, started)
            progress.update(report.sent + deliveries.pending, done)
        await deliveries.settle()
    except UnreadableFile:  # what was read before is counted
        await deliveries.settle()
        raise
    except asyncio.CancelledError:  # Ctrl-C: where it stopped (the same lines again count once, the dedup window)
        deliveries.count_answered()
        print(f"\nreplay: interrupted after {report.sent:,} lines sent and acknowledged", file=sys.stderr)
        raise
    finally:
        await producer.stop()
    progress.close(report.sent)


def summary(report) -> list[str]:
    """`sent N, rejected M`, the count per reason (what a failed delivery said), and where catalog records go."""
    out = [f"sent {report.sent}, rejected {sum(report.rejected.values())}"]
    for reason, count in report.rejected.most_common():
        out.append(f"  rejected {reason}: {count}")
        if reason == NOT_DELIVERED:
            out += [f"    {n} x {said}" for said, n in report.details[reason].most_common()]
    for kind, count in report.looks_like.most_common():
        if kind in ("artworks", "curated", "images"):
            out.append(f"hint: {count} lines look like {kind} catalog records: load them with "
                       f"`recstream load {kind} FILE...`")
    return out


def cmd_replay(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream replay",
                                     description="Produce archived events (JSONL, .gz) into the input topics.")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rate", type=float, default=0.0, help="max events per second (0: as fast as possible)")
    parser.add_argument("--rejects", type=Path, help="write rejected lines with their reasons here (JSONL)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.rate) and args.rate >= 0):
        parser.error(f"--rate must be a finite number >= 0 (0: as fast as possible), got {args.rate}")
    from streams.cli.load import Report, missing_files, run_producer

    if missing_files("replay", args.files, args.rejects):
        return 2
    settings = Settings.from_env()
    bootstrap = bootstrap_of(settings)
    report = Report(show=0, rejects=args.rejects)  # before the broker: a bad path leaves nothing open
    try:
        _, status = run_producer("replay", replay(args.files, bootstrap, settings, report, args.rate),
                                 report, partial(summary, report))
    finally:
        report.close()
    if status:
        return status
    print("\n".join(summary(report)))
    if not report.sent and not report.rejected[NOT_DELIVERED]:
        print("nothing was sent", file=sys.stderr)
    return report.not_delivered("replay") or (0 if report.sent else 1)


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
    from streams.rebuild.topics import RebuildRefused, check_fresh

    try:
        if args.bulk:
            from streams.cli.load import run_producer

            # an unreachable broker: run_producer's one line and status 2
            report, status = run_producer("rebuild", _bulk(Settings.from_env(env), args.shards or None))
            if status:
                return status
            print("\n".join(report.lines()))
            if args.no_worker:
                return 0
        else:  # an app id whose workers ran would be resumed, not rebuilt (an outside check: it was not refused)
            fresh = Settings.from_env(env)
            bootstrap_of(fresh)
            asyncio.run(check_fresh(fresh, fresh.aiokafka_kwargs()))
    except RebuildRefused as exc:
        print(f"recstream rebuild: {exc}", file=sys.stderr)
        return 2
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

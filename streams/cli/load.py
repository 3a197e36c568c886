"""``recstream load artworks|curated|images FILE...``: catalog files (JSONL, .gz) -> their compacted topics, keyed
as the catalog agents expect, each line checked by the decoder the agent uses (`decode_or_reject`), so it is rejected
here exactly when the worker would dead-letter it. Also the helpers `replay` shares (numbered lines, failures)."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from streams.cli.common import Progress, bootstrap_of, interruptible, unanswered
from streams.cli.deliveries import NOT_DELIVERED, Deliveries
from streams.core.catalog import decode_artwork, decode_curated
from streams.core.events import Rejected
from streams.core.image_pipeline import decode_image_catalog
from streams.core.ingest import decode_or_reject
from streams.core.jsonguard import too_deep
from streams.core.settings import Settings
from streams.kafka.admin import COMPACT, ensure_topics, start_quietly


@dataclass(frozen=True)
class Kind:
    """One catalog input: its topic, the worker's decoder and dead-letter reason, the key."""

    topic: str
    decode: Callable[[bytes], Any]
    reason: str
    key: Callable[[Any], bytes]


KINDS = {
    "artworks": Kind("catalog.artworks", decode_artwork, "invalid_artwork",
                     lambda a: a.id.encode()),
    "curated": Kind("catalog.curated", decode_curated, "invalid_curated", lambda _: b"curated"),
    "images": Kind("catalog.images", decode_image_catalog, "invalid_image_catalog",
                   lambda r: r.merchant_id.encode()),
}


LONGEST_RECORD = 1 << 20  # the producer's max_request_size: a longer line is never sent


def check(kind: Kind, line: bytes) -> bytes | Rejected:
    """The record's key, or why the worker would dead-letter the line.

    >>> check(KINDS["artworks"], b'{"id": "w1", "artist_id": "a1"}')
    b'w1'
    >>> check(KINDS["curated"], b'{"ids": ["w1"]}')
    Rejected(reason='invalid_curated', detail='curated record needs artwork_ids')
    """
    if len(line) > LONGEST_RECORD:
        return Rejected("oversized", f"longer than {LONGEST_RECORD:,} bytes, more than a produce request may be")
    record = decode_or_reject(kind.decode, line, kind.reason)
    return record if isinstance(record, Rejected) else kind.key(record)


def sniff(line: bytes) -> str | None:
    """What a JSON line looks like: "artworks", "curated", "images", "events" or None.

    >>> [sniff(x) for x in (b'{"id": "w", "artist_id": "a"}', b'{"type": "track"}', b'[1]')]
    ['artworks', 'events', None]
    """
    try:
        obj = None if too_deep(line) else json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if "type" in obj or "kind" in obj:
        return "events"
    if "merchant_id" in obj and "images" in obj:
        return "images"
    if "artwork_ids" in obj:
        return "curated"
    return "artworks" if "id" in obj and "artist_id" in obj else None


# --- reading and producing (shared with replay) ----------------------------------------------


class UnreadableFile(Exception):
    """An input file stopped a command (not gzip, truncated, corrupt, unreadable)."""


def numbered_lines(paths: list[Path], longest: int) -> Iterator[tuple[Path, int, bytes, int]]:
    """(file, line number from 1, stripped line, bytes read so far across all files) of every
    non-blank line; gzip when the name ends in .gz (progress by compressed bytes); no BOM. A line
    longer than `longest` bytes comes cut to its first `longest` + 1 (a size check refuses it)."""
    for path in (p for p in paths if p.suffix == ".gz"):
        _check_gzip(path)
    done = 0
    for path in paths:
        number = 0
        try:
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as f:
                raw = f.fileobj if path.suffix == ".gz" else f
                for number, line in enumerate(_lines(f, longest), 1):
                    line = (line.removeprefix(b"\xef\xbb\xbf") if number == 1 else line).strip()
                    if line:
                        yield path, number, line, done + raw.tell()
        except (OSError, EOFError, zlib.error) as exc:
            where = f"past line {number}" if number else "it"
            raise UnreadableFile(f"{path}: cannot read {where} ({exc})") from None
        done += path.stat().st_size


def _check_gzip(path: Path) -> None:
    """Read to its end before a line is sent: gzip checks its CRC only there (a corrupt archive's lines went out)."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(f"{path}: not a whole gzip file ({exc}), found before anything was sent") from None


def _lines(f, longest: int) -> Iterator[bytes]:
    """`f`'s lines, one longer than `longest` bytes cut to `longest` + 1, the rest of it read and dropped a
    megabyte at a time: read whole, a 300 MB line held 1.5 GB before its size was checked (an outside check)."""
    while line := f.readline(longest + 1):
        if len(line) > longest and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
        yield line


def reject_record(why: Rejected, path: Path, number: int, line: bytes) -> bytes:
    """A `--rejects` file line: reason, detail, where, and the line itself."""
    record = {"reason": why.reason, "detail": why.detail, "file": str(path), "line_number": number,
              "line": line.decode("utf-8", "replace")}
    return json.dumps(record).encode() + b"\n"


def kafka_client(settings: Settings, bootstrap: str) -> dict:
    """aiokafka connection arguments: the bootstrap plus the RECSTREAM_KAFKA_* security settings."""
    return {**settings.aiokafka_kwargs(), "bootstrap_servers": bootstrap}


def missing_files(command: str, paths: list[Path], rejects: Path | None = None) -> bool:
    """One line for the first path that is not a file, or is `rejects` (opened first, it would be emptied)."""
    for path in paths:
        clash = rejects is not None and path.is_file() and rejects.exists() and rejects.samefile(path)
        if not path.is_file() or clash:
            problem = "also --rejects: emptied if run" if clash else "not a file" if path.exists() else "no such file"
            print(f"recstream {command}: {path}: {problem}", file=sys.stderr)
            return True
    return False


def run_producer(command: str, coroutine, report: Report | None = None,
                 summary: Callable[[], list[str]] | None = None) -> tuple[Any, int]:
    """Run a command's coroutine: (its result, 0), or (None, 2) after one line on stderr when the
    broker cannot be reached or an input file stops part-way (no traceback). When it stopped after
    `report` started sending, the `summary` of what was done comes first, and the line says how
    many records were acknowledged."""
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(interruptible(coroutine)), 0
    except KafkaError as exc:
        problem = unanswered(exc)
    except UnreadableFile as exc:
        problem = str(exc)
    if report is not None and report.started and summary is not None:
        print("\n".join(summary()))
        problem += f"; {report.sent:,} records acknowledged before it stopped"
    print(f"recstream {command}: {problem}", file=sys.stderr)
    return None, 2


class Report:
    """Counts, the first `show` bad lines on stderr as they come, and the summary lines."""

    def __init__(self, show: int = 10, rejects: Path | None = None):
        self.sent, self.show, self.started = 0, show, False  # started: sending (the producer is up)
        self.rejected: Counter = Counter()
        self.details: dict[str, Counter] = defaultdict(Counter)
        self.looks_like: Counter = Counter()
        self.rejects = open(rejects, "wb") if rejects else None
        self.tty = sys.stderr.isatty()

    def reject(self, path: Path, number: int, why: Rejected, line: bytes) -> None:
        self.rejected[why.reason] += 1
        self.details[why.reason][why.detail] += 1
        self.looks_like[sniff(line)] += 1
        shown = sum(self.rejected.values())
        if shown <= self.show:
            more = "; further bad lines are only counted" if shown == self.show else ""
            clear = "\r\033[K" if self.tty else ""  # over a progress line
            sys.stderr.write(f"{clear}{path}:{number}: {why.reason}: {why.detail}{more}\n")
        if self.rejects:
            self.rejects.write(reject_record(why, path, number, line))

    def lines(self, kind: str, topic: str) -> list[str]:
        out = [f"sent {self.sent}, rejected {sum(self.rejected.values())} ({topic})"]
        for reason, count in self.rejected.most_common():
            out.append(f"  rejected {reason}: {count}")
            out += [f"    {n} x {detail}" for detail, n in self.details[reason].most_common(3)]
        for other, count in self.looks_like.most_common():
            if other == "events":
                out.append(f"hint: {count} rejected lines look like events: send them with "
                           "`recstream replay FILE...`")
            elif other is not None and other != kind:
                out.append(f"hint: {count} rejected lines look like {other} records: "
                           f"`recstream load {other} FILE...`")
        if kind == "curated" and self.sent > 1:
            out.append(f"note: {self.sent} curated lists sent; the last one is the list in effect")
        return out

    def not_delivered(self, command: str) -> int:
        """Exit status 3 after one line when records were not delivered (`rejected not_delivered`), else 0."""
        lost = self.rejected[NOT_DELIVERED]
        if lost:
            print(f"recstream {command}: {lost} records were not delivered (the broker did not acknowledge them)",
                  file=sys.stderr)
        return 3 if lost else 0

    def close(self) -> None:
        if self.rejects:
            self.rejects.close()


async def load(kind_name: str, paths: list[Path], bootstrap: str, settings: Settings,
               report: Report, window: int = 5000) -> None:
    """Check and send every line; `report.sent` counts the records the broker acknowledged."""
    from aiokafka import AIOKafkaProducer

    kind, client = KINDS[kind_name], kafka_client(settings, bootstrap)
    topic = settings.topic(kind.topic)
    # a missing topic is created compacted with RECSTREAM_PARTITIONS partitions, catalog.curated too: faust stops an
    # agent whose source topic and table changelog differ in partitions (PartitionsMismatch), as a broker's
    # auto-created topic (Kafka: 1) would
    await ensure_topics(client, {topic: (settings.partitions, COMPACT)})
    producer = AIOKafkaProducer(**client, linger_ms=20, max_batch_size=262144)
    await start_quietly(producer)
    report.started = True
    progress = Progress(f"load {kind_name}", sum(p.stat().st_size for p in paths))
    deliveries = Deliveries(producer, report, window)
    try:
        for path, number, line, done in numbered_lines(paths, LONGEST_RECORD):
            key = check(kind, line)
            if isinstance(key, Rejected):
                report.reject(path, number, key, line)
                continue
            await deliveries.send(topic, key, path, number, line)
            progress.update(report.sent + deliveries.pending, done)
        await deliveries.settle()
    except UnreadableFile:  # what was read before is counted
        await deliveries.settle()
        raise
    except asyncio.CancelledError:  # Ctrl-C: where it stopped (loading the same records again changes nothing)
        deliveries.count_answered()
        print(f"\nload {kind_name}: interrupted after {report.sent:,} records acknowledged", file=sys.stderr)
        raise
    finally:
        await producer.stop()
    progress.close(report.sent)


def cmd_load(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="recstream load",
        description="Load catalog records (JSONL, .gz) into their topic: artworks -> "
        'catalog.artworks (key: id), curated -> catalog.curated ({"artwork_ids": [...]}, key: '
        "curated), images -> catalog.images (key: merchant_id). Lines are checked as the worker "
        "checks them.")
    parser.add_argument("kind", choices=sorted(KINDS), help="which catalog the files hold")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--rejects", type=Path,
                        help="write rejected lines with their reasons here (JSONL)")
    parser.add_argument("--show", type=int, default=10,
                        help="bad lines printed as they come (default 10)")
    args = parser.parse_args(argv)
    if missing_files("load", args.files, args.rejects):
        return 2
    settings = Settings.from_env()
    report = Report(args.show, args.rejects)
    try:
        bootstrap = bootstrap_of(settings)
        summary = partial(report.lines, args.kind, settings.topic(KINDS[args.kind].topic))
        _, status = run_producer("load", load(args.kind, args.files, bootstrap, settings, report), report, summary)
    finally:
        report.close()
    if status:
        return status
    print("\n".join(summary()))
    if not report.sent and not report.rejected[NOT_DELIVERED]:
        print("nothing valid was sent", file=sys.stderr)
    return report.not_delivered("load") or (0 if report.sent else 1)

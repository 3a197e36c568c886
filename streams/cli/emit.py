"""``recstream emit-all``: every (or each listed) user's current recommendations published again.

The lists are read from the recommendations table's changelog (the workers do no extra work), up to
the end offsets it had when the command began, so live traffic cannot keep it reading for ever.
A worker keeps publishing lists meanwhile, and one it published after emit-all read that user's older
list would be followed on the topic by the older copy (and a compacted topic would keep that). So once
its copies are acknowledged, emit-all reads the recommendations topic from where it ended before the
changelog was read: where a user's last record is emit-all's copy and the workers published that user
a list after the read began (before the copy), that list, the newest, is sent again; and again, until
a pass finds none. Only the topic is compared, not the changelog: a worker's transaction can reach the
topic a request before its changelog (both found when a pass compared the changelog: 1 user in 1,000).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.cli.common import Progress, bootstrap_of
from streams.core.settings import Settings
from streams.core.topology import changelog as changelog_name

CATCH_UP_PASSES = 5
READ_TIMEOUT_S = 60.0  # no progress reading the changelog for this long: the broker is not answering


class NoChangelog(Exception):
    """No recommendations changelog: no worker has run under this app id."""


async def emit_all(bootstrap: str, settings: Settings, users: set[str] | None = None) -> tuple[int, int]:
    """(lists sent, listed users without a list)."""
    from aiokafka import AIOKafkaProducer

    from streams.cli.load import kafka_client
    from streams.kafka.admin import start_quietly

    client = kafka_client(settings, bootstrap)
    changelog = await _existing_changelog(client, changelog_name(settings.kafka_app_id, "recommendations"))
    topic = settings.topic("recommendations")
    since = await _ends(client, topic)  # first: whatever the workers publish from here on is looked at
    progress = Progress("reading current lists")
    latest = await _read(client, {tp: (0, end) for tp, end in (await _ends(client, changelog)).items()}, progress)
    progress.close(len(latest))
    wanted = {key: value for key, value in latest.items()
              if value is not None and (users is None or key.decode() in users)}
    producer = AIOKafkaProducer(**client, linger_ms=20)
    await start_quietly(producer)
    progress = Progress("emit-all")
    try:
        copies = await _send(producer, topic, wanted, progress)  # (partition, offset) -> key
        for _ in range(CATCH_UP_PASSES):  # see the module doc
            again = _overtaken(await _records(client, since, topic), copies)
            if not again:
                break
            copies.update(await _send(producer, topic, again, progress))
        else:
            print(f"emit-all: lists kept changing for {CATCH_UP_PASSES} passes: a user's newest list may be followed "
                  "on the topic by an older copy until their next change", file=sys.stderr)
    finally:
        await producer.stop()
    progress.close(len(wanted))
    return len(wanted), len(users) - len(wanted) if users is not None else 0


def _overtaken(records, copies: dict[tuple[int, int], bytes]) -> dict[bytes, bytes]:
    """Users whose last record (in `records`, in offset order per partition) is one of our `copies` while the
    workers' newest list for them since is another: that list.

    >>> R = lambda p, o, k, v: type("R", (), {"partition": p, "offset": o, "key": k, "value": v})
    >>> records = [R(0, 5, b"u", b"new"), R(0, 6, b"u", b"old"), R(0, 7, b"v", b"copy"), R(0, 8, b"w", b"old"),
    ...            R(0, 9, b"w", b"newer"), R(0, 10, b"x", b"new"), R(0, 11, b"x", b"old"), R(0, 12, b"x", b"new")]
    >>> _overtaken(records, {(0, 6): b"u", (0, 7): b"v", (0, 8): b"w", (0, 11): b"x", (0, 12): b"x"})
    {b'u': b'new'}
    """
    last: dict[bytes, bytes] = {}  # key -> the value of its last record, if that is a copy of ours
    newest: dict[bytes, bytes] = {}  # key -> the value of the workers' last record
    for r in records:
        if r.key is None:
            continue
        if (r.partition, r.offset) in copies:
            last[r.key] = r.value
        else:
            newest[r.key] = r.value
            last.pop(r.key, None)
    return {key: newest[key] for key, value in last.items() if key in newest and newest[key] != value}


async def _existing_changelog(client: dict, name: str) -> str:
    """`name`, checked without asking for it (streams.kafka.admin.existing_topics): a broker that created it
    with its default partition count stopped every worker started under this app id."""
    from streams.kafka.admin import existing_topics

    if name not in await existing_topics(client):
        raise NoChangelog(f"no topic {name}: no worker has run under this app id "
                          "(check RECSTREAM_APP_ID and RECSTREAM_TOPIC_PREFIX)")
    return name


async def _ends(client: dict, topic: str) -> dict:
    """Each partition's end now, the true one (the embedded broker under-reports a changelog's end)."""
    from streams.kafka.offsets import end_offsets

    return await end_offsets(client, [topic])


async def _read(client: dict, ranges: dict, progress: Progress | None = None) -> dict[bytes, bytes | None]:
    """The last value of each key in the changelog offset `ranges` (topic partition -> (start, end))."""
    from streams.kafka.ranges import read_partitions

    latest: dict[bytes, bytes | None] = {}

    async def keep(records) -> None:
        for r in records:
            latest[r.key] = r.value
        if progress is not None:
            progress.update(len(latest))

    await read_partitions(client, ranges, READ_TIMEOUT_S, keep)
    return latest


async def _records(client: dict, since: dict, topic: str) -> list:
    """Every record of `topic` from the offsets `since` (topic partition -> offset) to its ends now, in offset
    order per partition (what the workers published while emit-all ran: seconds of traffic)."""
    from streams.kafka.ranges import read_partitions

    found: list = []

    async def keep(records) -> None:
        found.extend(records)

    ranges = {tp: (since.get(tp, 0), end) for tp, end in (await _ends(client, topic)).items()}
    await read_partitions(client, ranges, READ_TIMEOUT_S, keep)
    return found


async def _send(producer, topic: str, lists: dict[bytes, bytes], progress: Progress) -> dict[tuple[int, int], bytes]:
    """Each list sent, once acknowledged: (partition, offset) -> key of every copy."""
    import asyncio

    keys, futures = list(lists), []
    for n, key in enumerate(keys, 1):
        futures.append(await producer.send(topic, value=lists[key], key=key))
        progress.update(n)
    sent = await asyncio.gather(*futures)
    return {(meta.partition, meta.offset): key for key, meta in zip(keys, sent, strict=True)}


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
    from streams.cli.load import run_producer

    try:
        result, status = run_producer("emit-all", emit_all(bootstrap_of(settings), settings, users))
    except NoChangelog as exc:
        print(f"recstream emit-all: {exc}", file=sys.stderr)
        return 2
    if status:
        return status
    sent, unknown = result
    print(f"emitted {sent} recommendation lists")
    if unknown:
        print(f"{unknown} of the listed users have no list (no event has named them)", file=sys.stderr)
    return 0

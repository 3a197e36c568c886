"""The worker's local table stores, checked against their changelogs before faust starts.

faust refuses to start, for good and with a traceback (ConsistencyError), when a partition's
local RocksDB says it applied a changelog offset the topic does not have: the topics were
recreated while the data dir stayed (a restarted in-memory broker, a rebuilt cluster, deleted
topics). The changelog is the state's source of truth (a batch's offset is recorded locally only
once its changelog write is acknowledged), so such a store holds another incarnation's state: it
is removed, and faust recovers the partition from the changelog, as Kafka Streams wipes the
store of a task whose checkpoint its changelog does not have."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

OFFSET_KEY = b"__faust\0offset__"  # faust's rocksdb store keeps its last applied changelog offset here
UNSENT_FILE = "unsent-writes.json"  # stores holding writes their changelogs never got (note_unsent)
IN_FLIGHT_FILE = "writes-in-flight.json"  # a batch with no input behind it, between its write and its acks


def store_paths(tabledir: Path, changelogs: dict[str, str]) -> dict[tuple[str, int], Path]:
    """(changelog, partition) -> store path, for every store in `tabledir` of a table in
    `changelogs` (table name -> changelog topic)."""
    found = {}
    for path in sorted(tabledir.glob("*.db")):
        name, _, partition = path.name[:-3].rpartition("-")
        if name in changelogs and partition.isdigit():
            found[(changelogs[name], int(partition))] = path
    return found


def local_stores(tabledir: Path, changelogs: dict[str, str]) -> dict[tuple[str, int], tuple[Path, int]]:
    """(changelog, partition) -> (store path, the changelog offset it last applied), for every
    store in `tabledir` of a table in `changelogs` (table name -> changelog topic) that has one."""
    from rocksdict import AccessType, Options, Rdict

    found = {}
    for key, path in store_paths(tabledir, changelogs).items():
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            offset = db.get(OFFSET_KEY)
        finally:
            db.close()
        if offset is not None:
            found[key] = (path, int(offset))
    return found


def note_unsent(tabledir: Path, partitions) -> None:
    """Record the (changelog, partition)s whose local stores hold writes their changelogs never
    got (a worker exiting out of its group: streams.worker.fence), for `drop_unsent` at the next start."""
    _write_note(tabledir / UNSENT_FILE, partitions)


def note_in_flight(tabledir: Path, partitions) -> None:
    """Record, before a batch with no input behind it (a list refresh) writes its stores, the
    (changelog, partition)s it writes: a kill -9 before its acks leaves writes nobody replays (an
    input batch's are rewritten from its uncommitted input), so `drop_unsent` removes those stores
    at the next start. `clear_in_flight` once acked. Not fsynced: a kill -9 keeps what the kernel
    has, and the stores' own writes are not fsynced either."""
    _write_note(tabledir / IN_FLIGHT_FILE, partitions)


def clear_in_flight(tabledir: Path) -> None:
    (tabledir / IN_FLIGHT_FILE).unlink(missing_ok=True)


def _write_note(path: Path, partitions) -> None:
    """Whole or not at all: written beside, then renamed over (a kill -9 between a truncating write's
    open and its write left an empty note, and every start after it failed to read it: a crash loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    beside = path.with_name(path.name + ".new")
    beside.write_text(json.dumps(sorted(partitions)))
    os.replace(beside, path)


def _noted(note: Path) -> set[tuple[str, int]] | None:
    """The (changelog, partition)s a note holds; None if it cannot be read as one."""
    try:
        return {(str(changelog), int(partition)) for changelog, partition in json.loads(note.read_text())}
    except (ValueError, TypeError, OSError):
        return None


def drop_unsent(tabledir: Path, changelogs: dict[str, str], say) -> int:
    """Remove the stores `note_unsent` or `note_in_flight` recorded, so faust recovers them from
    their changelogs (a restore from the store's offset would keep the writes never sent: nobody
    rewrites a key whose value the new owner found unchanged); how many.

    >>> import tempfile
    >>> tabledir = Path(tempfile.mkdtemp())
    >>> for name in ("affinity-0.db", "affinity-1.db"):
    ...     (tabledir / name).mkdir()
    >>> note_unsent(tabledir, [("app-affinity-changelog", 1)])
    >>> drop_unsent(tabledir, {"affinity": "app-affinity-changelog"}, print)
    local state with writes never sent to its changelog, removed: app-affinity-changelog[1]
    1
    >>> sorted(p.name for p in tabledir.iterdir())
    ['affinity-0.db']
    >>> note_in_flight(tabledir, [("app-affinity-changelog", 0)])   # killed before its acks
    >>> drop_unsent(tabledir, {"affinity": "app-affinity-changelog"}, print)
    local state with writes never sent to its changelog, removed: app-affinity-changelog[0]
    1
    >>> note_in_flight(tabledir, [("app-affinity-changelog", 0)]); clear_in_flight(tabledir)  # acked
    >>> drop_unsent(tabledir, {"affinity": "app-affinity-changelog"}, print), sorted(tabledir.iterdir())
    (0, [])
    >>> for name in ("affinity-0.db", "affinity-1.db"):
    ...     (tabledir / name).mkdir()
    >>> _ = (tabledir / IN_FLIGHT_FILE).write_text("")  # not written by _write_note: no stores known
    >>> say = lambda line: print(line.replace(str(tabledir), "T"))
    >>> drop_unsent(tabledir, {"affinity": "app-affinity-changelog"}, say)
    T/writes-in-flight.json cannot be read: every local store is removed and recovered from its changelog
    local state with writes never sent to its changelog, removed: app-affinity-changelog[0]
    local state with writes never sent to its changelog, removed: app-affinity-changelog[1]
    2
    """
    notes = [note for note in (tabledir / UNSENT_FILE, tabledir / IN_FLIGHT_FILE) if note.exists()]
    if not notes:
        return 0
    paths = store_paths(tabledir, changelogs)
    unsent = set()
    for note in notes:
        found = _noted(note)
        if found is None:  # whatever wrote it, the stores it named are unknown: none is trusted
            say(f"{note} cannot be read: every local store is removed and recovered from its changelog")
            found = set(paths)
        unsent |= found
    dropped = 0
    for changelog, partition in sorted(unsent):
        path = paths.get((changelog, partition))
        if path is not None:
            say(f"local state with writes never sent to its changelog, removed: {changelog}[{partition}]")
            shutil.rmtree(path)
            dropped += 1
    for note in notes:
        note.unlink()
    return dropped


def ahead(stores: dict[tuple[str, int], tuple[Path, int]],
          ends: dict[tuple[str, int], int]) -> dict[tuple[str, int], str]:
    """The stores whose last applied offset their changelog partition does not have (a partition
    the topic lacks ends at 0), each with what to say about it.

    >>> stores = {("c", 0): (Path("t-0.db"), 41), ("c", 1): (Path("t-1.db"), 41)}
    >>> ahead(stores, {("c", 0): 42, ("c", 1): 7})
    {('c', 1): 'c[1]: applied offset 41, the topic ends at 7'}
    """
    return {(topic, partition): f"{topic}[{partition}]: applied offset {offset}, the topic ends at {end}"
            for (topic, partition), (_, offset) in sorted(stores.items())
            if offset >= (end := ends.get((topic, partition), 0))}


def drop_stores_ahead(app, client_kwargs: dict, say, timeout: float) -> int:
    """Remove the local stores of `app`'s tables that are ahead of their changelogs, and those
    holding writes never sent (`drop_unsent`); `say` gets one line each; how many. Runs before
    faust opens any of them; the ends' wait is bounded."""
    from streams.kafka.offsets import end_offsets

    tabledir = Path(app.conf.tabledir)
    if not tabledir.is_dir():
        return 0
    changelogs = {name: table.changelog_topic.get_topic_name() for name, table in app.tables.items()}
    dropped = drop_unsent(tabledir, changelogs, say)
    stores = local_stores(tabledir, changelogs)
    if not stores:
        return dropped
    found = asyncio.run(asyncio.wait_for(end_offsets(client_kwargs, sorted({topic for topic, _ in stores})), timeout))
    stale = ahead(stores, {(tp.topic, tp.partition): end for tp, end in found.items()})
    for key, line in stale.items():
        say(f"local state ahead of its changelog, removed (the changelog's state is recovered instead): {line}")
        shutil.rmtree(stores[key][0])
    return dropped + len(stale)

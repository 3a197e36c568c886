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
import shutil
from pathlib import Path

OFFSET_KEY = b"__faust\0offset__"  # faust's rocksdb store keeps its last applied changelog offset here


def local_stores(tabledir: Path, changelogs: dict[str, str]) -> dict[tuple[str, int], tuple[Path, int]]:
    """(changelog, partition) -> (store path, the changelog offset it last applied), for every
    store in `tabledir` of a table in `changelogs` (table name -> changelog topic) that has one."""
    from rocksdict import AccessType, Options, Rdict

    found = {}
    for path in sorted(tabledir.glob("*.db")):
        name, _, partition = path.name[:-3].rpartition("-")
        if name not in changelogs or not partition.isdigit():
            continue
        db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            offset = db.get(OFFSET_KEY)
        finally:
            db.close()
        if offset is not None:
            found[(changelogs[name], int(partition))] = (path, int(offset))
    return found


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
    """Remove the local stores of `app`'s tables that are ahead of their changelogs (`say` gets
    one line each); how many. Runs before faust opens any of them; the ends' wait is bounded."""
    from streams.kafka.offsets import end_offsets

    tabledir = Path(app.conf.tabledir)
    if not tabledir.is_dir():
        return 0
    changelogs = {name: table.changelog_topic.get_topic_name() for name, table in app.tables.items()}
    stores = local_stores(tabledir, changelogs)
    if not stores:
        return 0
    found = asyncio.run(asyncio.wait_for(end_offsets(client_kwargs, sorted({topic for topic, _ in stores})), timeout))
    stale = ahead(stores, {(tp.topic, tp.partition): end for tp, end in found.items()})
    for key, line in stale.items():
        say(f"local state ahead of its changelog, removed (the changelog's state is recovered instead): {line}")
        shutil.rmtree(stores[key][0])
    return len(stale)

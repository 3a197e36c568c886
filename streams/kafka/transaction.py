"""The state transaction (no faust): one batch's table writes and output records, stored and
sent together. Used by the worker's user and image pipelines (streams.worker.commit.BatchCommit
adds faust's topics and persisted offsets) and by the bulk rebuild (changelog rows only).

`table(changelog, partition, store)` is the batch's view of one table partition: reads see the
batch's own writes first, then the partition's store (a rocksdict Rdict; None for a rebuild,
which starts from empty tables); writes are buffered. `send(topic, key, value)` queues an
output. Then, in this order:

1. `store()` writes each table partition's writes into its store in one RocksDB write batch
   (synchronously: a caller that applies a batch with no await between its reads and this
   write never interleaves a read-modify-write with another batch on the same loop);
2. `enqueue(producer, route)` queues the changelog rows and the outputs as whole record batches
   per topic partition (`route(topic, key, partition)` names an output's topic partition);
3. `acked(queued)` waits for every ack and returns each changelog partition's last offset
   (what faust's recovery starts from).

A crash before the acks loses nothing: the input is not committed either, so it is replayed,
and the pipelines re-write a duplicate's state (which heals the changelog).

>>> txn = StateTransaction()
>>> profiles = txn.table("app-affinity-changelog", 0)  # no store: a rebuild's empty table
>>> profiles["u1"] = b"p1"
>>> profiles.get("u1"), txn.table("app-affinity-changelog", 0) is profiles
(b'p1', True)
>>> txn.send("recommendations", b"u1", b"[]", partition=0)
>>> txn.store(), txn.changelogs()
({('app-affinity-changelog', 0): [(b'u1', b'p1')]}, [('app-affinity-changelog', 0)])
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from streams.kafka.batching import BufferedTable, enqueue_partition

Rows = dict[tuple[str, int], list[tuple[bytes | None, bytes]]]  # (topic, partition) -> (key, value) rows
Route = Callable[[object, bytes | None, int | None], Awaitable[tuple[str, int]]]


class StateTransaction:
    """See the module docstring."""

    def __init__(self):
        self._tables: dict[tuple[str, int], tuple[object | None, BufferedTable]] = {}
        self._out: list[tuple[object, bytes | None, bytes, int | None]] = []

    def table(self, changelog: str, partition: int, store=None) -> BufferedTable:
        """The batch's view of one table partition (the same view for every call in a batch)."""
        entry = self._tables.get((changelog, partition))
        if entry is None:
            view = BufferedTable(store.get if store is not None else _nothing)
            entry = self._tables[(changelog, partition)] = (store, view)
        return entry[1]

    def send(self, topic, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        """Queue an output record (`topic`: a name, or whatever the commit's `route` takes)."""
        self._out.append((topic, key, value, partition))

    def store(self) -> Rows:
        """Each table partition's writes into its store (one write batch); the changelog rows."""
        from rocksdict import WriteBatch

        rows: Rows = {}
        for (changelog, partition), (store, view) in self._tables.items():
            if not view.writes:
                continue
            written = [(key.encode(), value) for key, value in view.writes.items()]
            if store is not None:
                batch = WriteBatch(raw_mode=True)
                for key, value in written:
                    batch.put(key, value)
                store.write(batch)
            rows[(changelog, partition)] = written
        return rows

    async def enqueue(self, producer, rows: Rows, route: Route | None = None) -> dict[tuple[str, int], list]:
        """The changelog `rows` and the outputs queued in `producer` as record batches; returns
        each topic partition's delivery futures. Without `route`, outputs name their topic and
        partition."""
        rows = {tp: list(part) for tp, part in rows.items()}
        for topic, key, value, partition in self._out:
            tp = (topic, partition) if route is None else await route(topic, key, partition)
            rows.setdefault(tp, []).append((key, value))
        # one partition after another, not gathered as tasks: with no await suspending in between
        # the producer's sender wakes once all are queued and sends them in one request (it keeps one
        # request in flight per broker, so a first request holding one batch made the rest wait for it)
        return {tp: await enqueue_partition(producer, tp[0], tp[1], part) for tp, part in rows.items()}

    def changelogs(self) -> list[tuple[str, int]]:
        """The (changelog, partition) pairs this batch wrote."""
        return [tp for tp, (_, view) in self._tables.items() if view.writes]

    async def acked(self, queued: dict[tuple[str, int], list]) -> dict[tuple[str, int], int]:
        """Wait for every ack; each written changelog partition's last offset."""
        offsets = dict(zip(queued, await asyncio.gather(*(asyncio.gather(*f) for f in queued.values())), strict=True))
        return {tp: max(offsets[tp]) for tp in self.changelogs() if offsets.get(tp)}

    async def commit(self, producer, rows: Rows, route: Route | None = None) -> dict[tuple[str, int], int]:
        """`enqueue` then `acked` (a caller with no ordering to keep between batches)."""
        return await self.acked(await self.enqueue(producer, rows, route))


def _nothing(key: bytes) -> None:
    return None

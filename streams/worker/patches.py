"""Every change recstream makes to faust's and aiokafka's internals, one function each.

Each says which upstream problem it works around and when it can go. They were checked against
the versions in CHECKED (pyproject pins the same ranges); `install_all` refuses to patch
other versions, loudly, since a patch of internals that moved would fail in silence.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.kafka.offsets import true_end_offsets
from streams.worker import fence, restore
from streams.worker.logs import install_repeated_lines
from streams.worker.sticky import install as install_sticky_assignment
from streams.worker.stopping import install_fetcher_close, install_stop_first

CHECKED = {"faust": ("0.15.3", "0.16"), "aiokafka": ("0.14", "0.15")}  # [low, high)


def check_versions() -> None:
    """Raise if faust or aiokafka is outside the versions these patches were checked against.

    >>> check_versions()  # the installed ones are inside (pyproject pins them)
    """
    from importlib.metadata import version

    for package, dist in (("faust", "faust-streaming"), ("aiokafka", "aiokafka")):
        low, high = CHECKED[package]
        found = version(dist)
        if not _key(low) <= _key(found) < _key(high):
            raise RuntimeError(f"streams.worker.patches were checked against {dist} >={low},<{high}, found {found}: "
                               "check each patch against its source before widening CHECKED")


def _key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def install_all(settings) -> None:
    """Every patch, as a worker starts (settings: streams.core.settings.Settings)."""
    check_versions()
    install_ack_sanitizer()
    install_full_flush()
    install_changelog_buffer(settings.changelog_buffer)
    install_quiet_root_logger()
    install_rocksdb_budget(settings.rocksdb_cache_mb)
    install_fetch_max_wait(faust_fetch_max_wait_ms(settings))
    install_stop_first()
    install_fetcher_close()
    install_recovery_generation()
    install_global_table_offsets()
    install_sticky_assignment()  # through restarts, graceful ones too
    from streams.kafka.unreadable import skip_unreadable
    from streams.worker.app import app
    from streams.worker.topics import read_topics

    skip_unreadable(read_topics)  # before faust's consumer fetches (RECSTREAM_DIRECT_INGEST=false reads through it)
    if not settings.direct_ingest:
        from streams.worker import faust_shares

        faust_shares.install()  # direct ingest writes the shares before its own commits

    fence.install(settings.kafka_app_id, settings.session_timeout / 2, Path(app.conf.tabledir))
    if settings.true_end_offsets:
        install_true_end_offsets(settings.aiokafka_kwargs())
    restore.install(settings.aiokafka_kwargs(), settings.bulk_restore_min, settings.max_poll_records)


def install_true_end_offsets(client_kwargs: dict) -> None:
    """Make faust's table recovery read changelogs to their true end (see true_end_offsets)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters
    if getattr(original, "_recstream_fixed", False):
        return

    async def _highwaters(self, partitions):
        ends = dict(await original(self, partitions))
        if self.consumer.in_transaction:
            return ends
        return await true_end_offsets(ends, client_kwargs)

    _highwaters._recstream_fixed = True
    AIOKafkaConsumerThread._highwaters = _highwaters


def install_ack_sanitizer() -> None:
    """Keep offset commits advancing after a crash-induced rebalance (cf. faust #596).

    Seen here after a SIGKILL under load: when the group rebalances again while messages are
    buffered, acks from before the rebalance land after it (faust clears its ack index on
    revoke), so the acked list holds offsets below the committed one and duplicates of
    re-delivered offsets. faust's "first consecutive run" logic then stalls and the committed
    offsets freeze for good. Dropping acked offsets already committed and duplicates before
    faust picks the next offset is safe (those are done) and lets commits advance."""
    from faust.transport.consumer import Consumer

    original = Consumer._new_offset
    if getattr(original, "_recstream_fixed", False):
        return

    def _new_offset(self, tp):
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            clean = sorted({o for o in acked if committed is None or o >= committed})
            if len(clean) != len(acked):
                acked[:] = clean
                self._acked_index[tp] = set(clean)
        return original(self, tp)

    _new_offset._recstream_fixed = True
    Consumer._new_offset = _new_offset


def faust_fetch_max_wait_ms(settings) -> int:
    """faust's consumer thread reads the inputs only without direct ingest: then it takes their wait."""
    return settings.fetch_max_wait_ms if settings.direct_ingest else settings.ingest_fetch_max_wait_ms


def install_fetch_max_wait(ms: int) -> None:
    """faust hard-codes the consumer's fetch_max_wait_ms at 1500. A broker that holds an empty
    fetch for the whole wait instead of answering when data arrives (seen on the embedded
    broker) then adds up to 1.5 s per hop (in faust mode: input -> re-keyed topic -> state).
    `faust_fetch_max_wait_ms` picks it."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_recstream_fixed", False):
        return

    def _create_worker_consumer(self, *args, **kwargs):
        consumer = original(self, *args, **kwargs)
        consumer._fetch_max_wait_ms = ms  # read when the consumer starts its fetcher
        return consumer

    _create_worker_consumer._recstream_fixed = True
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer


def install_quiet_root_logger() -> None:
    """faust's terminal spinner sets the root logger to DEBUG (its handler wants every record),
    so every logger.debug() in aiokafka and faust built a LogRecord per message even at
    `-l warn`: ~6% of a loaded worker's CPU. Without the spinner the root logger keeps the
    level given with -l. Its handlers log each aiokafka message once per 10 s at most
    (streams.worker.logs: a broker away made ~80 lines a second)."""
    from faust.worker import Worker

    original = Worker.on_setup_root_logger
    if getattr(original, "_recstream_fixed", False):
        return

    def on_setup_root_logger(self, logger, level):
        self.spinner = None
        original(self, logger, level)
        install_repeated_lines()

    on_setup_root_logger._recstream_fixed = True
    Worker.on_setup_root_logger = on_setup_root_logger


def install_rocksdb_budget(cache_mb: int):
    """One memory budget for every RocksDB store in the worker.

    faust gives each partition store of each table its own block cache and leaves index and
    bloom-filter blocks outside any cache, so a worker's memory grew with its stores and with
    the data (index and filters are proportional to the keys: +360 MB going from 100k to 1M
    users). Here every store shares one LRU cache of `cache_mb` that also holds index and filter
    blocks and is charged for the memtables (a write buffer manager), so RocksDB's memory stays
    near `cache_mb` whatever the number of users. Returns the shared cache."""
    import rocksdict
    from faust.stores.rocksdb import RocksDBOptions

    original = RocksDBOptions.as_options
    if getattr(original, "_recstream_fixed", False):
        return original.cache
    cache = rocksdict.Cache(cache_mb * 1024 * 1024)
    memtables = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
        cache_mb * 1024 * 1024 // 2, False, cache)

    def as_options(self):
        options = original(self)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_block_cache(cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(memtables)
        return options

    as_options._recstream_fixed = True
    as_options.cache = cache
    RocksDBOptions.as_options = as_options
    return cache


def rocksdb_cache():
    """The shared RocksDB cache installed by install_rocksdb_budget (None before/without it)."""
    from faust.stores.rocksdb import RocksDBOptions

    return getattr(RocksDBOptions.as_options, "cache", None)


def install_changelog_buffer(max_messages: int) -> None:
    """How many changelog records faust's ProducerBuffer may queue before it stops delivering
    input messages until it has flushed that many (faust: 100). Offsets are still committed only
    after the buffer is flushed."""
    from faust.transport.producer import ProducerBuffer

    ProducerBuffer.max_messages = max_messages


def install_full_flush() -> None:
    """Make faust's pre-commit flush really drain the changelog buffer.

    faust flushes its producer before committing input offsets, but ProducerBuffer.flush()
    returns as soon as 0.1 s passes without a message leaving the buffer, with records still in
    it. When sends are slow (a loaded or shared machine), offsets were then committed ahead of
    changelog records that a crash could lose: events applied to state that neither the
    changelog nor a re-delivery would bring back. This flush waits until the buffer is empty."""
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer.flush, "_recstream_fixed", False):
        return

    async def flush(self) -> None:
        while self.size:
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                continue  # slow, not done: committing now could skip unsent changelog records

    flush._recstream_fixed = True
    ProducerBuffer.flush = flush


def install_global_table_offsets() -> None:
    """A global table's recovery starts after the changelog records its store applied, never after an ack.

    Every worker reads a global table's changelog as it comes, its own writes too (streams.worker.tables),
    while faust also moved the store's recovery offset to each of its acknowledged writes. A write read
    back after a newer one was stored laid the older value over it (a share p1 of 885 impressions back at
    661), and the newer one's ack then moved the offset past both: killed before the reader came to it,
    the worker restarted from there, and the older value stayed (a chaos run: 224 of 3,000 impressions
    lost for good). With the offset only where the reader's applied records end, a restart reads the
    newer record again. Upstream: faust's GlobalTable; can go once it stops reading its own writes back."""
    from faust.tables.globaltable import GlobalTable

    def _on_changelog_sent(self, fut) -> None:
        fut.result()  # the ack itself: recovery starts where the records applied end (apply_changelog_batch)

    GlobalTable._on_changelog_sent = _on_changelog_sent


def install_recovery_generation() -> None:
    """Remember the assignment whose table recovery completed (`Recovery.ready_generation`): faust
    sets `recovery.completed` once and never clears it, and clears `rebalancing` before a new
    assignment's restore ends, so direct ingest read (and the web served) partitions whose stores
    were still restoring (fuzzing, kills while workers joined: affinity too low for 14-29 users,
    shares over). streams.worker.runtime.recovered compares it with the current assignment's.

    The generation faust compares is made this process's own count of assignments: the embedded
    broker hands one member the same generation number on successive joins, and a restore's
    finish begun for one assignment can end after the next one began (its seek waits for the
    rebalance): taken for the new one, it let a fresh worker apply batches to partitions still
    restoring (a fuzzing helper: 43-109 users off). faust only ever compares the number with itself.
    Can go when faust checks the generation after its seek and clears `completed` on a new assignment."""
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import ConsumerRebalanceListener, ensure_TPset

    if getattr(Recovery._resume_streams, "_recstream", False):
        return

    async def on_partitions_assigned(self, assigned) -> None:
        app = self._thread.app
        app.consumer_generation_id += 1  # one per assignment, never repeated
        await self._thread.on_partitions_assigned(ensure_TPset(assigned), app.consumer_generation_id)

    ConsumerRebalanceListener.on_partitions_assigned = on_partitions_assigned
    Recovery.on_recovery_completed = remember_recovery(Recovery.on_recovery_completed)
    Recovery._resume_streams = remember_recovery(Recovery._resume_streams)


def remember_recovery(finish):
    """`finish`, a Recovery method ending the restore of `generation_id`, that records the generation
    as ready when the restore completed and the generation is still the current one as it returns."""
    async def wrapper(self, generation_id: int = 0) -> None:
        await finish(self, generation_id)
        if self.completed.is_set() and self.app.consumer_generation_id == generation_id:
            self.ready_generation = generation_id

    wrapper._recstream = True
    return wrapper

"""Memory housekeeping: keep the garbage collector off the long-lived heap (HeapFreezer) and hand
memory freed in bursts (table recovery, large batches) back to the OS."""

from streams.core.metrics import metrics
from streams.kafka.memory import HeapFreezer, malloc_stats, release_free_memory
from streams.worker.app import app
from streams.worker.patches import rocksdb_cache

heap = HeapFreezer(thaw_every=10)  # a full collection at most every 10 minutes


@app.task
async def _freeze_once_recovered() -> None:
    await app.tables.recovery.completed.wait()
    heap.freeze()
    release_free_memory()  # recovery is the largest burst of short-lived allocations


@app.timer(interval=60.0)
async def _housekeeping() -> None:
    if app.tables.recovery.completed.is_set():
        heap.freeze()
    release_free_memory()


@app.on_partitions_revoked.connect
async def _thaw(app, revoked, **kwargs) -> None:
    heap.thaw()  # faust closes the revoked partitions' stores by a gc.collect()


def _rocksdb_memory() -> dict:
    """The shared RocksDB budget in use: blocks, index/filter blocks and memtables (charged)."""
    cache = rocksdb_cache()
    if cache is None:
        return {}
    return {(("kind", "cache"),): cache.get_usage(), (("kind", "pinned"),): cache.get_pinned_usage()}


metrics.gauge("recstream_rocksdb_memory_bytes", _rocksdb_memory)


def _malloc_memory() -> dict:
    stats = malloc_stats() or {}
    return {(("kind", kind),): value for kind, value in stats.items()}


metrics.gauge("recstream_malloc_bytes", _malloc_memory)

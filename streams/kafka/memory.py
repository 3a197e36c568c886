"""Process memory of a worker: glibc's allocator and CPython's garbage collector. No faust:
the worker's agents/memory.py calls these on its timers."""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Iterator
from contextlib import contextmanager


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _glibc(function: str):
    """A glibc function, or None off glibc (or on one too old to have it)."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), function)
    except (OSError, AttributeError):
        return None


def _mallopt(param: int, value: int) -> bool:
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(param, value))


def limit_malloc_arenas(arenas: int) -> bool:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core); RocksDB's
    background threads and faust's consumer thread then keep freed memory in arenas of their own,
    and RSS grows with the data touched (100k -> 1M users: +59% with the default, +37% with 2).
    No-op (False) off glibc or with arenas <= 0."""
    return arenas > 0 and _mallopt(-8, arenas)  # M_ARENA_MAX


def fix_mmap_threshold(kb: int) -> bool:
    """Serve allocations of `kb` KB and more from their own mappings, always. glibc's default
    threshold starts at 128 KB but rises to the size of any large chunk freed, after which large
    short-lived buffers (fetch responses during table recovery) come from the heap and leave it
    fragmented (memory bench: RSS after recovering 1M users 166 -> 132 MB). No-op (False) off
    glibc or with kb <= 0."""
    return kb > 0 and _mallopt(-3, kb * 1024)  # M_MMAP_THRESHOLD


def release_free_memory() -> bool:
    """Hand memory freed by bursts (table recovery, large batches) back to the OS (glibc)."""
    malloc_trim = _glibc("malloc_trim")
    return malloc_trim is not None and bool(malloc_trim(0))


def malloc_stats() -> dict[str, int] | None:
    """glibc's own account of the process heap (mallinfo2): bytes held by live allocations
    (Python objects under PYTHONMALLOC=malloc, RocksDB's blocks and memtables), bytes free inside
    the heap that the OS still counts in RSS (fragmentation), and large mmapped chunks. None off
    glibc (or before 2.33). What a worker's RSS is made of, as a metric.

    >>> stats = malloc_stats()
    >>> stats is None or stats["in_use"] > 0
    True
    """
    mallinfo2 = _glibc("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


class HeapFreezer:
    """Keep the cyclic garbage collector off the long-lived heap.

    A worker holds ~100k long-lived Python objects (catalog index, faust's services, imported
    modules); every full collection walked them all: 60-75 ms with the GIL held, the largest
    single stall measured under load (the latency tail). Freezing what has survived so far moves
    it out of the collector's reach; new objects are collected as usual. Frozen objects that
    later die in a reference cycle are not collected until a thaw, so the heap is thawed and
    fully collected every `thaw_every` freezes and before a rebalance (faust closes RocksDB
    stores of revoked partitions by a gc.collect())."""

    def __init__(self, thaw_every: int = 10):
        self.thaw_every = thaw_every
        self.freezes = 0

    def freeze(self) -> None:
        if self.freezes % self.thaw_every == self.thaw_every - 1:
            gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.freezes += 1

    def thaw(self) -> None:
        gc.unfreeze()
        self.freezes = 0


@contextmanager
def growing_heap() -> Iterator[None]:
    """For a batch job whose heap only grows until the end (the bulk rebuild holds every user's
    state): call `gc.freeze()` after each step and the collector stops walking everything that
    survived the steps before (the rebuild's collections walked the whole growing heap again
    and again: 300k events took 5.7 s, 4.8 s with collection off). Young objects are still
    collected; the frozen heap is thawed at the end, so cycles in it are freed later."""
    try:
        yield
    finally:
        gc.unfreeze()

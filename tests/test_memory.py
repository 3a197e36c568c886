"""Process memory helpers: malloc arenas and trim, the heap freezer, the growing heap."""


def test_malloc_arenas_are_limited_and_free_memory_released_on_glibc():
    import platform

    from streams.kafka.memory import (
        fix_mmap_threshold,
        limit_malloc_arenas,
        release_free_memory,
    )

    assert limit_malloc_arenas(0) is False  # 0 keeps glibc's default
    assert fix_mmap_threshold(0) is False
    if platform.libc_ver()[0] == "glibc":
        assert limit_malloc_arenas(2) is True
        blocks = [bytearray(200_000) for _ in range(200)]  # ~40 MB through mmap/heap
        del blocks
        release_free_memory()  # returns whether memory was released; must not raise


def test_the_heap_freezer_moves_survivors_out_of_the_collectors_reach_and_thaws_periodically():
    import gc
    import weakref

    from streams.kafka.memory import HeapFreezer

    class Node:
        pass

    heap = HeapFreezer(thaw_every=3)
    try:
        survivor = [Node() for _ in range(1000)]
        heap.freeze()
        frozen = gc.get_freeze_count()
        assert frozen >= 1000  # the survivors (and everything else alive) are frozen
        a, b = Node(), Node()  # a cycle that dies after being frozen: not collectable while frozen
        a.peer, b.peer = b, a
        alive = weakref.ref(a)
        heap.freeze()
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: out of the collector's reach
        heap.freeze()  # the third freeze thaws first: a full collection frees the dead cycle
        assert alive() is None
        heap.thaw()  # a rebalance: everything back under the collector
        assert gc.get_freeze_count() == 0 and heap.freezes == 0
        assert survivor
    finally:
        gc.unfreeze()


def test_a_growing_heap_is_thawed_when_the_job_ends_even_on_error():
    import gc

    import pytest

    from streams.kafka.memory import growing_heap

    gc.unfreeze()
    with pytest.raises(RuntimeError), growing_heap():
        state = [[i] for i in range(1000)]  # a step's long-lived state
        gc.freeze()
        assert gc.get_freeze_count() >= 1000
        raise RuntimeError("the rebuild failed")
    assert gc.get_freeze_count() == 0 and state


MMAP_PROBE = """
import sys
from streams.kafka.memory import fix_mmap_threshold, malloc_stats
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(128)
freed = bytearray(8 << 20)
del freed  # glibc's dynamic threshold rises to 8 MB here; a fixed one stays at 128 KB
before = malloc_stats()["mmapped"]
big = bytearray(4 << 20)
print(malloc_stats()["mmapped"] - before >= 4 << 20)
"""


def test_a_fixed_mmap_threshold_keeps_large_buffers_out_of_the_heap_after_a_large_free():
    """In a fresh interpreter (a long-lived heap may serve the buffer from free space either way)."""
    import subprocess
    import sys

    def probe(mode):
        return subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True, text=True, check=True).stdout.strip()
    assert (probe("dynamic"), probe("fixed")) == ("False", "True")

"""How much and how often direct ingest reads (streams.kafka.direct): the fetch wait, and the records a
batch asks for. Pure, clock passed in."""

from __future__ import annotations

BATCH_TARGET_S = 0.25  # a batch holds the worker's event loop (HTTP reads, a stop) about this long at most
# the fewest records a batch asks for: a loaded machine stretches every batch's time whatever its size, and down to
# one record a batch the per-batch costs (acks, commits) took over (an outside re-check: the backlog drained at
# 60-125 records/s where it drained at 167-477); a twentieth of the ceiling when that is less
MIN_BATCH = 100


class BatchSizer:
    """Records the next batch asks for. A batch is applied with the event loop held: nothing else runs, no
    HTTP read is answered, until it is done. Batches are big only behind a backlog, and there a batch of
    catalog refreshes or heavy users cost seconds (an outside soak: 1,213 records in 4.3 s, HTTP reads p99
    1-3.5 s). So a batch slower than `target_s` shrinks the next one to what would have fit in it (at least
    MIN_BATCH records), and a full batch under half of it doubles the next, up to `ceiling`.

    >>> sizes = BatchSizer(2000, target_s=0.25)
    >>> sizes.after_batch(2000, took=2.0)  # 8x too long: an eighth
    250
    >>> sizes.after_batch(250, took=0.1)  # full and quick: twice as many
    500
    >>> sizes.after_batch(40, took=0.01)  # the input, not the size, made it small: unchanged
    500
    >>> sizes.after_batch(0, took=1.0)  # no records (timed work only): unchanged
    500
    >>> sizes.after_batch(500, took=9.0)  # MIN_BATCH is the least
    100
    """

    def __init__(self, ceiling: int, target_s: float = BATCH_TARGET_S):
        self.ceiling, self.target_s, self.size = ceiling, target_s, ceiling
        self.floor = max(1, min(MIN_BATCH, ceiling // 20))

    def after_batch(self, records: int, took: float) -> int:
        """Note a batch of `records` applied in `took` seconds; the next one's size."""
        if not records:
            return self.size
        if took > self.target_s:
            self.size = max(self.floor, int(records * self.target_s / took))
        elif records >= self.size and took < self.target_s / 2:
            self.size = min(self.ceiling, 2 * self.size)
        return self.size


class IdleWait:
    """The fetch wait: `busy_ms` while records come, `idle_ms` once none came for `idle_after_s`.
    A broker that answers a fetch only when its wait ends (the embedded one) needs a short wait
    for first-signal latency, but an idle worker would then fetch every input partition
    1/busy_ms times a second, CPU its serving threads miss; the first record after a quiet spell
    waits for one long fetch, and the next fetches are short again.

    >>> w = IdleWait(20, 100, idle_after_s=1.0)
    >>> [w.after_poll(False, t) for t in (0.0, 0.5, 1.0, 1.5)], w.after_poll(True, 2.0), w.after_poll(False, 2.5)
    ([20, 20, 100, 100], 20, 20)
    """

    def __init__(self, busy_ms: int, idle_ms: int, idle_after_s: float = 1.0):
        self.busy_ms, self.idle_ms, self.idle_after_s = busy_ms, max(idle_ms, busy_ms), idle_after_s
        self._last_records: float | None = None

    def after_poll(self, got_records: bool, now: float) -> int:
        """The wait for the next fetches, after a poll that did or did not return records."""
        if got_records or self._last_records is None:
            self._last_records = now
        return self.idle_ms if now - self._last_records >= self.idle_after_s else self.busy_ms

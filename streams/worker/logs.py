"""The worker's log stays readable while the broker is away.

aiokafka logs every failed connection, metadata update, fetch, heartbeat and produce as an ERROR,
each retried every 100 ms: a worker whose broker was down wrote ~80 lines a second (5,000 in a
minute, the same four lines over and over). Each aiokafka message is logged at most once per
window, and the next one logged says how many like it were left out.

>>> clock = iter([0.0, 1.0, 2.0, 10.5]).__next__
>>> repeats = RepeatedLines(window_s=10.0, clock=clock)
>>> def record(msg, *args):
...     return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, msg, args, None)
>>> [repeats.filter(record("Unable connect to node with id %s", 1)) for _ in range(3)]
[True, False, False]
>>> later = record("Unable connect to node with id %s", 1)
>>> repeats.filter(later), later.getMessage()
(True, 'Unable connect to node with id 1 (2 more like it in the last 10 s not logged)')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

from streams.core.metrics import metrics

WINDOW_S = 10.0
MAX_KEYS = 1_000  # message templates remembered (aiokafka has a few dozen)
log = logging.getLogger(__name__)


class RepeatedLines(logging.Filter):
    """A handler filter: aiokafka's records, each message template at most once per `window_s`."""

    def __init__(self, window_s: float = WINDOW_S, clock=time.monotonic):
        super().__init__()
        self.window_s = window_s
        self._lines = Sampled(per_window=1, window_s=window_s, clock=clock)  # key: (logger, template)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka"):
            return True
        left_out = self._lines.admit((record.name, str(record.msg)))
        if left_out is None:
            return False
        if left_out:
            # args (), not None: mode's formatter turns None into (None,) and formats again
            record.msg, record.args = (f"{record.getMessage()} ({left_out} more like it in the last "
                                       f"{self.window_s:g} s not logged)"), ()
        return True


def install_repeated_lines(handlers=None) -> None:
    """Add the filter to the root logger's handlers (faust's, once it set them up)."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, RepeatedLines) for f in handler.filters):
            handler.addFilter(RepeatedLines())


class Sampled:
    """At most `per_window` lines a key every `window_s` (a key: say, a dead letter's reason), for
    lines producers can cause: one collector request of 10,240 unmapped events wrote 10,241 WARNING
    lines. `admit(key)`: None to leave the line out, else how many like it were left out before it.

    >>> clock = iter([0.0, 0.1, 0.2, 0.3, 11.0]).__next__
    >>> lines = Sampled(per_window=2, window_s=10.0, clock=clock)
    >>> [lines.admit("unmapped_event") for _ in range(5)]
    [0, 0, None, None, 2]
    """

    def __init__(self, per_window: int = 5, window_s: float = WINDOW_S, clock=time.monotonic):
        self.per_window, self.window_s, self.clock = per_window, window_s, clock
        self._windows: dict[Hashable, list] = {}  # key -> [window start, lines logged, left out]

    def admit(self, key: Hashable) -> int | None:
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.window_s:
            if len(self._windows) >= MAX_KEYS:
                self._windows.clear()
            left_out = window[2] if window else 0
            self._windows[key] = [now, 1, 0]
            return left_out
        if window[1] < self.per_window:
            window[1] += 1
            return 0
        window[2] += 1
        return None


_dead_letter_lines = Sampled()  # a producer's flood of bad events: a few lines a reason every 10 s, not one each


def dead_lettered(reason: str, topic: str, partition: int, offset: int, detail: str = "",
                  level: int = logging.WARNING, sample: Hashable = None) -> None:
    """Count a dead letter and log it, a few lines a reason (or `sample` key) every 10 s: every refusal
    and failure writes this one line, whichever path sent its letter (ingest, the catalog and internal
    records, the pipelines)."""
    metrics.inc("recstream_dead_letters_total", reason=reason)
    if (left_out := _dead_letter_lines.admit(reason if sample is None else sample)) is not None:
        more = f" ({left_out} more of this reason not logged)" if left_out else ""
        log.log(level, "dead letter: reason=%s topic=%s partition=%s offset=%s%s%s", reason, topic, partition, offset,
                f" ({detail[:200]})" if detail else "", more)

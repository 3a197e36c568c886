"""In-process counters rendered in the Prometheus text format (no faust, no client lib).

>>> m = Metrics()
>>> m.inc("recstream_events_total", kind="follow")
>>> m.inc("recstream_events_total", kind="follow", by=2)
>>> print(m.render().strip())
# TYPE recstream_events_total counter
recstream_events_total{kind="follow"} 3
>>> h = Metrics()
>>> for seconds in (0.003, 0.01, 2.0):  # a value on a bound counts in its bucket (le: less or equal)
...     h.observe("latency_seconds", seconds, bounds=(0.001, 0.01))
>>> print(h.render().strip())
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.001"} 0
latency_seconds_bucket{le="0.01"} 2
latency_seconds_bucket{le="+Inf"} 3
latency_seconds_sum 2.013
latency_seconds_count 3
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict


class Histogram:
    """Cumulative buckets, as Prometheus expects."""

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a value on a bound counts in its bucket (le)
        self.total += value
        self.n += 1


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, object] = {}  # name -> callable returning {labels tuple: value}
        self._help: dict[str, str] = {}

    def observe(self, name: str, value: float,
                bounds: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)) -> None:
        self._histograms.setdefault(name, Histogram(bounds)).observe(value)

    def gauge(self, name: str, read) -> None:
        """`read()` returns {((label, value), ...): number}, evaluated at scrape time."""
        self._gauges[name] = read

    def declare(self, counters: dict[str, str]) -> None:
        """Counters exported from the start: ``name 0`` until the first increment, so a dashboard
        or alert can tell "none yet" from "not exported"; `counters` maps name -> help text.

        >>> m = Metrics()
        >>> m.declare({"recstream_dead_letters_total": "records dead-lettered, by reason"})
        >>> print(m.render().strip())
        # HELP recstream_dead_letters_total records dead-lettered, by reason
        # TYPE recstream_dead_letters_total counter
        recstream_dead_letters_total 0
        """
        self._help.update(counters)
        for name in counters:
            self._counters[name]  # noqa: B018 - creates the empty series set

    def inc(self, name: str, by: float = 1, **labels: str) -> None:
        # unlabelled: no sort (every HTTP read counts one)
        self._counters[name][tuple(sorted(labels.items())) if labels else ()] += by

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines = []
        for name in sorted(self._counters):
            if name in self._help:
                lines.append(f"# HELP {name} {self._help[name]}")
            lines.append(f"# TYPE {name} counter")
            if not self._counters[name]:
                lines.append(f"{name} 0")
            for labels, value in sorted(self._counters[name].items()):
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
        for name in sorted(self._histograms):
            h = self._histograms[name]
            lines.append(f"# TYPE {name} histogram")
            acc = 0
            for bound, count in zip(h.bounds, h.counts[:-1], strict=True):
                acc += count
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {acc}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {h.n}')
            lines.append(f"{name}_sum {h.total:g}")
            lines.append(f"{name}_count {h.n}")
        for name in sorted(self._gauges):
            lines.append(f"# TYPE {name} gauge")
            for labels, value in sorted(self._gauges[name]().items()):
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# Every counter the worker exports, from its start (README "HTTP API" and "Operations").
COUNTERS = {
    "recstream_events_total": "input events decoded, by kind",
    "recstream_dead_letters_total": "records sent to the dead-letter topic, by reason",
    "recstream_events_ignored_total": "well-formed events recstream has no use for (unmapped event names)",
    "recstream_signals_applied_total": "signals applied to a user's affinity",
    "recstream_single_hop_signals_total": "signals applied by ingest itself (no internal hop)",
    "recstream_duplicates_total": "redelivered or repeated messages applied once",
    "recstream_pending_retries_total": "messages retried while their artwork was not in the catalog",
    "recstream_catalog_records_total": "catalog.artworks records applied",
    "recstream_curated_updates_total": "curated list updates applied",
    "recstream_image_catalog_records_total": "catalog.images records applied",
    "recstream_image_events_applied_total": "image impressions and conversions applied",
    "recstream_records_sent_total": "records sent, by output topic",
    "recstream_records_held_total": "records a per-event rebuild did not send to a client's topic before it caught up",
    "recstream_lists_refreshed_total": "lists rebuilt by the background refresh",
    "recstream_lists_changed_by_refresh_total": "lists the background refresh changed (and sent)",
    "recstream_lists_holding_gone_works_total": "lists rebuilt because they held a work that left the catalog",
    "recstream_http_recommendations_total": "GET /recommendations requests",
    "recstream_http_kept_reads_total": "keyed reads served from a partition this worker keeps through a rebalance",
    "recstream_collector_messages_total": "messages accepted by the Segment-compatible collector",
    "recstream_collector_rejected_total": "collector requests refused, by reason (bad_request, unauthorized, "
                                          "unsupported_encoding, aborted)",
    "recstream_http_malformed_requests_total": "HTTP requests too malformed to parse (answered 400, logged at debug)",
    "recstream_coengagement_recounts_total": "partitions whose co-engagement share was recounted from the profiles "
                                             "(after a stop that was not clean)",
    "recstream_held_lists_built_total": "lists the list window held, built at its end or before a commit",
    "recstream_held_list_failures_total": "held lists that failed to build (logged with the user, skipped)",
    "recstream_input_commits_total": "direct ingest's input offset commits",
    "recstream_slow_batches_total": "input batches that took over 2 s to apply (each logged with its records' offsets)",
}

metrics = Metrics()
metrics.declare(COUNTERS)

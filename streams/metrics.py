"""In-process counters rendered in the Prometheus text format (no faust, no client lib).

>>> m = Metrics()
>>> m.inc("recstream_events_total", kind="follow")
>>> m.inc("recstream_events_total", kind="follow", by=2)
>>> print(m.render().strip())
# TYPE recstream_events_total counter
recstream_events_total{kind="follow"} 3
"""

from __future__ import annotations

from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))

    def inc(self, name: str, by: float = 1, **labels: str) -> None:
        self._counters[name][tuple(sorted(labels.items()))] += by

    def value(self, name: str, **labels: str) -> float:
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines = []
        for name in sorted(self._counters):
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(self._counters[name].items()):
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {value:g}" if labels else f"{name} {value:g}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


metrics = Metrics()

"""Run every benchmark and write bench/results/summary.md: `python bench/run_all.py`.

Needs the bench extra and wrk (`pip install -e '.[bench]'`, `apt-get install -y wrk`). About 35-45
minutes on 2 cores (three rounds of throughput, the Quix Streams peer and serving, the 1M-event
rebuild, the restore of its state, the 1M-user memory run); smaller runs: BENCH_REBUILD_EVENTS=200000 BENCH_USERS_LARGE=200000 python bench/run_all.py."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import keyed, latency, memory, peer_quix, rebuild, restore, serving, throughput  # noqa: E402
from bench.common import machine  # noqa: E402


def main() -> None:
    parts = [f"# recstream benchmarks\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine()}; "
             "embedded Tansu broker on loopback.\n"]
    for name, module in (("throughput", throughput), ("peer (Quix Streams)", peer_quix), ("keying", keyed),
                         ("latency", latency),
                         ("serving", serving), ("rebuild", rebuild), ("restore", restore), ("memory", memory)):
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        text = module.report(module.main())
        print(text, flush=True)
        parts.append(f"## {name}\n\n{text}\n")
    out = Path(__file__).parent / "results" / "summary.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(parts))
    print(f"[bench] written {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

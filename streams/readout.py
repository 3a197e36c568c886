"""``recstream experiments report``: the experiments' readout in the terminal, and its history
as a plot (cumulative conversion rate per variant over time, with its 95% band).

The numbers come from a worker's ``GET /experiments`` (streams.ledger.readout). The history
comes from the ``experiments.readouts`` topic, where the worker owning partition 0 writes a
snapshot of every experiment's counts each ``RECSTREAM_READOUT_INTERVAL_S``.

    recstream experiments report                          # the local worker's readout
    recstream experiments report --worker http://w1:6066 --out readout.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request

from streams.abstats import format_table, report, wilson
from streams.ledger import control_of

SNAPSHOT_FIELDS = ("users", "exposures", "converted", "conversions")


def snapshot(readout: dict, t: float) -> list[tuple[bytes, bytes]]:
    """One record per experiment for the readouts topic: its counts per variant at `t`.

    >>> r = {"experiments": [{"name": "recs", "variants": [{"variant": "A", "share": 0.5, "users": 3,
    ...      "exposures": 4, "converted": 1, "conversions": 1}]}]}
    >>> snapshot(r, 10.0)
    [(b'recs', b'{"t":10.0,"experiment":"recs","shares":{"A":0.5},"variants":{"A":{"users":3,"exposures":4,"converted":1,"conversions":1}}}')]
    """
    out = []
    for e in readout["experiments"]:
        body = {"t": t, "experiment": e["name"], "shares": {v["variant"]: v["share"] for v in e["variants"]},
                "variants": {v["variant"]: {f: v[f] for f in SNAPSHOT_FIELDS} for v in e["variants"]}}
        out.append((e["name"].encode(), json.dumps(body, separators=(",", ":")).encode()))
    return out


def series(snapshots: list[dict], experiment: str) -> dict[str, list[tuple[float, float, float, float]]]:
    """variant -> [(t, rate, low, high)] in time order: the cumulative conversion rate (converted
    users / exposed users) with its Wilson interval, from the snapshots of one experiment.

    >>> s = [{"t": 1.0, "experiment": "x", "variants": {"A": {"users": 10, "converted": 2}}},
    ...      {"t": 2.0, "experiment": "x", "variants": {"A": {"users": 0, "converted": 0}}}]
    >>> [(t, rate) for t, rate, _, _ in series(s, "x")["A"]]
    [(1.0, 0.2)]
    """
    out: dict[str, list] = {}
    for snap in sorted((s for s in snapshots if s["experiment"] == experiment), key=lambda s: s["t"]):
        for variant, c in snap["variants"].items():
            interval = wilson(c["converted"], c["users"])
            if interval is not None:
                out.setdefault(variant, []).append((snap["t"], c["converted"] / c["users"], *interval))
    return out


def table(readout: dict) -> str:
    """Every experiment of a readout as terminal tables (streams.abstats.format_table)."""
    parts = []
    for e in readout["experiments"]:
        counts = {v["variant"]: v for v in e["variants"]}
        shares = {v["variant"]: v["share"] for v in e["variants"] if v["share"] is not None}
        parts.append(f"experiment {e['name']} ({e['kind']})\n" + format_table(report(counts, shares, control_of(shares))))
    return "\n\n".join(parts)


def plot(snapshots: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime, timezone

    import matplotlib.pyplot as plt

    names = sorted(name for name in {s["experiment"] for s in snapshots} if series(snapshots, name))  # with users
    if not names:
        names = sorted({s["experiment"] for s in snapshots})[:1]
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 3.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for variant, points in sorted(series(snapshots, name).items()):
            when = [datetime.fromtimestamp(t, timezone.utc) for t, *_ in points]
            ax.plot(when, [p[1] for p in points], label=variant)
            ax.fill_between(when, [p[2] for p in points], [p[3] for p in points], alpha=0.2)
        ax.set_title(f"{name}: cumulative conversion rate (converted users / exposed users), 95% band")
        ax.set_ylabel("rate")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def read_snapshots(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[dict]:
    """Every snapshot on the readouts topic (from the beginning, no consumer group)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                break
            for records in batch.values():
                out += [json.loads(r.value) for r in records if r.value]
    finally:
        await consumer.stop()
    return out


def fetch(worker: str) -> dict:
    with urllib.request.urlopen(worker.rstrip("/") + "/experiments", timeout=10) as response:
        return json.loads(response.read())


def main(argv: list[str]) -> int:
    from streams.settings import Settings

    settings = Settings.from_env()
    ap = argparse.ArgumentParser(prog="recstream experiments report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", default=f"http://127.0.0.1:{settings.web_port}", help="a worker's HTTP address")
    ap.add_argument("--out", help="write the history plot (PNG) here, from the experiments.readouts topic")
    ap.add_argument("--json", action="store_true", help="print the readout as JSON")
    args = ap.parse_args(argv[1:] if argv[:1] == ["report"] else argv)
    try:
        readout = fetch(args.worker)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"recstream: cannot read {args.worker}/experiments: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(readout, indent=2) if args.json else table(readout))
    if args.out:
        from streams.ops import _bootstrap

        snapshots = asyncio.run(read_snapshots(_bootstrap(settings), settings.topic("experiments.readouts")))
        if not snapshots:
            print("recstream: no snapshots on experiments.readouts yet (one every "
                  f"{settings.readout_interval_s:g} s); no plot written", file=sys.stderr)
            return 1
        plot(snapshots, args.out)
        print(f"wrote {args.out} ({len(snapshots)} snapshots)")
    return 0

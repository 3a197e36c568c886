"""``recstream experiments report``: the experiments' readout in the terminal, and its history
as a plot (cumulative conversion rate per variant over time, with its 95% band).

The numbers come from a worker's ``GET /experiments`` (streams.core.ledger.readout). The history
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

from streams.core.ledger import series, table


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


async def read_snapshots(client: dict, topic: str, timeout_s: float = 10.0) -> list[dict]:
    """Every snapshot on the readouts topic (from the beginning, no consumer group), with the
    cluster's connection settings (`Settings.aiokafka_kwargs`: it connected without TLS or SASL);
    none when the topic does not exist (a consumer's metadata request would have created it)."""
    from aiokafka import AIOKafkaConsumer

    from streams.kafka.admin import existing_topics

    if topic not in await existing_topics(client):
        return []
    consumer = AIOKafkaConsumer(topic, **client, auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
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


def fetch(worker: str, token: str = "") -> dict:
    from streams.cli.common import WorkerError, worker_json

    readout = worker_json(worker, "/experiments", token, timeout=10)
    if not isinstance(readout, dict) or not isinstance(readout.get("experiments"), list):
        raise WorkerError(f"{worker}/experiments is not an experiments readout (is that a recstream worker?)")
    return readout


def main(argv: list[str]) -> int:
    from streams.core.settings import Settings

    settings = Settings.from_env()
    ap = argparse.ArgumentParser(prog="recstream experiments report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", default=f"http://127.0.0.1:{settings.web_port}",
                    help="a worker's HTTP address (RECSTREAM_API_TOKEN is sent when set)")
    ap.add_argument("--out", help="write the history plot here, from the experiments.readouts topic (its suffix "
                    "names the format: .png, .svg, .pdf, ...; none: .png)")
    ap.add_argument("--json", action="store_true", help="print the readout as JSON")
    args = ap.parse_args(argv[1:] if argv[:1] == ["report"] else argv)
    if args.out:
        from streams.cli.common import plot_path

        try:
            args.out = plot_path(args.out)
        except ValueError as exc:
            print(f"recstream experiments report: {exc}", file=sys.stderr)
            return 2
    from streams.cli.common import WorkerError

    try:
        readout = fetch(args.worker, settings.api_token)
    except WorkerError as exc:
        print(f"recstream experiments report: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(readout, indent=2) if args.json else table(readout))
    if args.out:
        from streams.cli.common import bootstrap_of

        bootstrap_of(settings)  # RECSTREAM_BROKER_URL is set, or one line and exit 2
        snapshots = asyncio.run(read_snapshots(settings.aiokafka_kwargs(), settings.topic("experiments.readouts")))
        if not snapshots:
            print(f"recstream: no snapshots on {settings.topic('experiments.readouts')} yet (one every "
                  f"{settings.readout_interval_s:g} s); no plot written", file=sys.stderr)
            return 1
        plot(snapshots, args.out)
        print(f"wrote {args.out} ({len(snapshots)} snapshots)")
    return 0

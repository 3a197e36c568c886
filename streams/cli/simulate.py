"""``recstream simulate-multiplier``: how quickly does a consumer's image change, per multiplier?

For every merchant, a simulated consumer keeps seeing the chosen image without converting; the
table gives, for each multiplier C, the share of merchants whose first image has been replaced
within X views. Pick A/B candidates from it: C = 0 never changes; a C whose curve rises within a
handful of views explores aggressively.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import msgspec

from streams.cli.common import plot_path
from streams.core.events import parse_segment, parse_typed_image
from streams.core.image_counts import GlobalCounts, merge_counts
from streams.core.images import Image, ImageCatalog, PoolRules, build_pool, change_probability
from streams.core.records import ImageEvent

DEFAULT_MULTIPLIERS = "0,0.005,0.01,0.02,0.05"


class NoData(Exception):
    """A source gave nothing to simulate on: one line for the user (exit status 2)."""


def stats_from_events(lines, half_life_s: float = 0.0) -> dict[str, tuple[float, float]]:
    """Replay-file lines (Segment image events or typed image records) -> global counts."""
    counts = GlobalCounts()
    rejected = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        parsed = parse_segment(line)
        if not isinstance(parsed, ImageEvent):
            kind = "conversion" if b'"order_id"' in line else "impression"
            parsed = parse_typed_image(kind, line)
        if not isinstance(parsed, ImageEvent):
            rejected += 1
            continue
        counts.add(parsed.merchant_id, parsed.image_id, parsed.kind == "impression", parsed.kind == "conversion",
                   parsed.time, half_life_s)
    if rejected:
        print(f"[simulate] skipped {rejected} lines that are not image events", file=sys.stderr)
    return merge_counts([counts], half_life_s)


def pools_from_catalog(lines, rules: PoolRules = PoolRules()) -> dict[str, list[Image]]:
    """catalog.images lines -> pools; lines that are not image catalogs are skipped (counted)."""
    out, skipped = {}, 0
    for line in lines:
        if line.strip():
            try:
                record = msgspec.json.decode(line, type=ImageCatalog)
            except msgspec.MsgspecError:
                skipped += 1
                continue
            out[record.merchant_id] = build_pool(record, rules)
    if skipped:
        print(f"[simulate] skipped {skipped} catalog lines that are not image catalogs",
              file=sys.stderr)
    return out


def from_worker(url: str, token: str = "") -> tuple[dict, dict]:
    """The worker's /images/stats; an unreachable or unusable URL raises NoData (one line)."""
    from streams.cli.common import WorkerError, worker_json

    try:
        body = worker_json(url, "/images/stats", token)
        stats = {k: (v["impressions"], v["conversions"]) for k, v in body["stats"].items()}
        pools = {m: [msgspec.convert(i, Image) for i in imgs] for m, imgs in body["pools"].items()}
    except WorkerError as exc:
        raise NoData(str(exc)) from None
    except (KeyError, TypeError, AttributeError, msgspec.MsgspecError):
        raise NoData(f"{url} did not answer with image statistics (a recstream worker?)") from None
    return stats, pools


def check_inputs(stats: dict, pools: dict, events: str, catalog: str) -> None:
    """Raise NoData when the table would say nothing true: no events, no pools to change, or
    events and pools about different merchants."""
    if not stats:
        raise NoData(f"no image impressions or conversions in {events}: nothing to simulate")
    if not any(len(p) > 1 for p in pools.values()):
        raise NoData(f"no merchant in {catalog} has a pool of two or more images: nothing changes")
    if not {key.split("|", 1)[0] for key in stats} & pools.keys():
        raise NoData(f"the image events ({events}) and pools ({catalog}) name other merchants")


def render_table(table: dict[float, list[float]]) -> str:
    cs = list(table)
    lines = ["views  " + "  ".join(f"C={c:<7g}" for c in cs)]
    for x in range(len(table[cs[0]])):
        lines.append(f"{x + 1:>5}  " + "  ".join(f"{table[c][x]:>9.1%}" for c in cs))
    return "\n".join(lines)


def plot(table: dict[float, list[float]], path: Path, merchants: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=110)
    for c, probs in table.items():
        ax.plot(range(1, len(probs) + 1), [p * 100 for p in probs], marker="o", markersize=3, label=f"C = {c:g}")
    ax.set_xlabel("unconverted views of the merchant")
    ax.set_ylabel("image has changed (% of merchants)")
    ax.set_title(f"Exploration multiplier: how soon the image changes ({merchants} merchants)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.set_xticks(range(1, len(next(iter(table.values()))) + 1))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="recstream simulate-multiplier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--from-worker", metavar="URL", help="read live statistics from a worker, e.g. http://127.0.0.1:6066")
    src.add_argument("--events", type=Path, help="replay file (JSONL) of image impressions/conversions")
    parser.add_argument("--catalog", type=Path, help="JSONL of catalog.images records (with --events)")
    parser.add_argument("--multipliers", default=DEFAULT_MULTIPLIERS)
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("multiplier.png"))
    parser.add_argument("--demo-merchants", type=int, default=40, help="without a source: demo data size")
    args = parser.parse_args(argv)
    try:
        multipliers = [float(x) for x in args.multipliers.split(",")]
    except ValueError:
        multipliers = []
    if not multipliers or not all(math.isfinite(c) and c >= 0 for c in multipliers):  # UCB's C: 0 = no exploration
        parser.error(f"--multipliers must be comma-separated finite numbers >= 0, got {args.multipliers!r}")
    if args.views < 1 or args.demo_merchants < 1:
        parser.error("--views and --demo-merchants must be at least 1")
    if args.events and not args.catalog:
        parser.error("--events needs --catalog (the merchants' image pools)")
    try:
        out = plot_path(str(args.out))
    except ValueError as exc:
        print(f"recstream simulate-multiplier: {exc}", file=sys.stderr)
        return 2
    try:
        stats, pools, sources = _inputs(args)
        check_inputs(stats, pools, *sources)
    except NoData as exc:
        print(f"recstream simulate-multiplier: {exc}", file=sys.stderr)
        return 2
    table = change_probability(pools, stats, multipliers, args.views)
    merchants = sum(1 for p in pools.values() if len(p) > 1)
    print(f"share of {merchants} merchants whose image has changed within X unconverted views")
    print(render_table(table))
    plot(table, out, merchants)
    print(f"plot: {out}")
    return 0


def _inputs(args) -> tuple[dict, dict, tuple[str, str]]:
    """(stats, pools, (where the events and the pools came from)) for the chosen source."""
    if args.from_worker:
        from streams.core.settings import Settings

        stats, pools = from_worker(args.from_worker, Settings.from_env().api_token)
        return stats, pools, (args.from_worker, args.from_worker)
    if args.events:
        try:
            with open(args.events, "rb") as f:
                stats = stats_from_events(f)
            with open(args.catalog, "rb") as f:
                pools = pools_from_catalog(f)
        except OSError as exc:
            raise NoData(f"{exc.filename}: {exc.strerror}") from None
        return stats, pools, (str(args.events), str(args.catalog))
    from streams.core.demo import DemoImages, dumps

    demo = DemoImages(merchants=args.demo_merchants)
    print(f"[simulate] no source given: demo data ({args.demo_merchants} merchants)",
          file=sys.stderr)
    stats = stats_from_events(dumps(e) for e in demo.events(args.demo_merchants * 400))
    return stats, pools_from_catalog(dumps(c) for c in demo.catalog()), ("the demo data",) * 2

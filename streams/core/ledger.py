"""One partition's experiment attribution over a table of bytes (pure): what the user pipeline
and the image pipeline call, with streams.core.attribution doing the counting.

The per-user logs and the partition's tally live in one table (``attribution``), so they are
written in the same batch as the profiles they go with (exactly once with them, like the
profiles' input offsets); the tally is also published to every worker for the readout
(``GET /experiments``). Keys: ``u:<user>`` (recommendations), ``c:<consumer>`` (images),
``tally:<partition>`` and ``images:<partition>``; none can be a user id's key.

>>> table = {}
>>> book = Ledger(table, 0)
>>> book.exposed("u1", "B", [("w1", "trending"), ("w2", "affinity")], t=0.0)
>>> book.converted("u1", ["w2"], "order", t=60.0, message_id="m1")
>>> book.flush()
True
>>> c = load_tally(table["tally:0"]).variants()["B"]
>>> c.users, c.exposures, c.converted, c.sources
(1, 1, 1, {'affinity': 1})
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Mapping, MutableMapping

from streams.core.abstats import Report, report, wilson
from streams.core.abtable import format_table
from streams.core.attribution import (
    CONVERSION_KINDS,
    Attribution,
    Position,
    Rules,
    Tally,
    UserLog,
    convert,
    dump,
    expose,
    image_convert,
    impress,
    load_log,
    load_tally,
    merge_tallies,
)
from streams.core.records import MAX_TABLE_VALUE_BYTES  # noqa: F401 - fitted's doctest
from streams.core.seen import drop_oldest
from streams.core.spans import Span, latest_ending  # noqa: F401 - Span: fitted_log's doctest
from streams.core.values import fit_value

__all__ = ["CONVERSION_KINDS", "Ledger", "load_tally", "readout"]
RECS, IMAGES = "tally:", "images:"  # key prefixes of the partitions' tallies
MAX_READOUT_MERCHANTS = 100  # per-merchant reports in a readout, the most exposed first


def tally_key(partition: int, kind: str = "recs") -> str:
    """Where a partition's tally lives (in the attribution table, and its copy for the readout)."""
    return f"{RECS if kind == 'recs' else IMAGES}{partition}"


def input_position(source: str, offset: int) -> Position | None:
    """An event's input record, for the logs' own redelivery check; None when unknown (offset -1).

    >>> input_position("events:3", 42), input_position("", -1)
    (('events:3', 42), None)
    """
    return (source, offset) if offset >= 0 else None


class Ledger:
    """Lazily loads the logs a batch touches; `flush` writes back what changed."""

    def __init__(self, table: MutableMapping[str, bytes], partition: int, rules: Rules | None = None,
                 kind: str = "recs"):
        self.table, self.prefix = table, "u:" if kind == "recs" else "c:"
        self.tally_key = tally_key(partition, kind)
        self.state = Attribution(users={}, tally=load_tally(table.get(self.tally_key)), rules=rules or Rules())
        self._changed: set[str] = set()

    @property
    def tally(self) -> Tally:
        return self.state.tally

    def _log(self, user: str) -> None:
        if user not in self.state.users:
            self.state.users[user] = load_log(self.table.get(self.prefix + user))

    def _touched(self, user: str) -> None:
        """The user's log (and the tally) written back, whether the event counted or was judged a repeat:
        a batch stored locally whose changelog write a kill -9 lost comes again as repeats, and writing
        the logs again is what puts the batch back in the changelog (as a repeated signal rewrites its profile)."""
        self._changed.add(user)

    def exposed(self, user: str, variant: str, items: Iterable[tuple[str, str]], t: float,
                exposure_id: str | None = None) -> None:
        """A recommendations list of (work, source) shown to `user`."""
        self._log(user)
        expose(self.state, user, variant, items, t, exposure_id)
        self._touched(user)

    def listed(self, user: str, variant: str, items: list[tuple[str, str]], t: float, again: bool = False) -> None:
        """A recommendations list emitted to `user`: an exposure when its version (variant and works)
        differs from the one the log counted last. The log judges that itself, since the list record
        is another table's: after a crash either can land without the other, and the redelivered
        event finds the list unchanged (an exposure would be lost) or builds it again later (an
        exposure with a new time would count twice). `again`: the list sent again after a crash, its
        log written again too (see `_touched`). `t`: the time of the event it answers (or of its build), and
        the list is shown just after it: a save that brought its work into the list it caused was that list's
        conversion (an outside check: every such first save converted, and the readout depended on event order)."""
        self._log(user)
        log, version = self.state.users[user], variant + "|" + ",".join(work for work, _ in items)
        if log.listed != version:
            log.listed = version
            self._changed.add(user)
            expose(self.state, user, variant, items, math.nextafter(t, math.inf))
        elif again:
            self._changed.add(user)

    # Events come with their input position: the logs judge a redelivery themselves, since the
    # state that judged it for the caller (a profile, a consumer's views) is another table, whose
    # changelog record can land without this one when a worker dies mid-batch.

    def converted(self, user: str, works: list[str], kind: str, t: float, message_id: str,
                  position: Position | None = None) -> None:
        """An order, inquiry or save of `works` (any other kind counts nothing)."""
        if kind in CONVERSION_KINDS and works:
            self._log(user)
            convert(self.state, user, works, kind, t, message_id, position)
            self._touched(user)

    def impressed(self, consumer: str, variant: str, merchant: str, image: str, t: float, message_id: str,
                  position: Position | None = None) -> None:
        self._log(consumer)
        impress(self.state, consumer, variant, merchant, image, t, message_id, position)
        self._touched(consumer)

    def image_converted(self, consumer: str, merchant: str, image: str, t: float, message_id: str,
                        position: Position | None = None) -> None:
        self._log(consumer)
        image_convert(self.state, consumer, merchant, image, t, message_id, position)
        self._touched(consumer)

    def flush(self) -> bool:
        """Write the changed logs and the tally; True when anything changed."""
        for user in self._changed:
            self.table[self.prefix + user] = fitted_log(self.state.users[user])
        if self._changed:
            self.table[self.tally_key] = self.dump_tally()
        changed, self._changed = bool(self._changed), set()
        return changed

    def dump_tally(self) -> bytes:
        return fitted(self.state.tally)


def fitted(tally: Tally) -> bytes:
    """`tally`'s msgpack within one table value: the least exposed groups (images: merchants) go
    first, counted in `dropped`; the experiment's own counts ("") always stay. Any merchant id
    names a group, so 40,000 impressions of distinct merchants made one partition's tally over
    Kafka's 1 MB and stopped the worker for good (an outside fuzzer).

    >>> t = Tally()
    >>> for i in range(3000):
    ...     t.counters(f"m{i:04}" + "x" * 300, "A").exposures = i
    >>> len(fitted(t)) <= MAX_TABLE_VALUE_BYTES, len(t.groups) + t.dropped, "m2999" + "x" * 300 in t.groups
    (True, 3000, True)
    """
    return fit_value(tally, dump, _drop_least_exposed)


def fitted_log(log: UserLog) -> bytes:
    """A user's (or consumer's) log within one table value: ids may be 1 KB, so 512 spans of an image and its
    merchant, 128 conversions and 512 flags made 2.1 MB. Halved, oldest first, until it fits: the spans
    (latest ending kept), the conversions, the flags (a user flagged again counts again), the messageIds.

    >>> log, long = UserLog(), lambda i: (f"{i}-" + "\U0001D11E" * 256)[:256]
    >>> log.shown = {long(i): [Span(long(-i), "B", long(i), i, i + 1.0)] for i in range(512)}
    >>> len(dump(log)) > MAX_TABLE_VALUE_BYTES, len(fitted_log(log)) <= MAX_TABLE_VALUE_BYTES, len(log.shown)
    (True, True, 256)
    >>> long(511) in log.shown, long(0) in log.shown
    (True, False)
    """
    return fit_value(log, dump, _halve_log)


def _halve_log(log: UserLog) -> bool:
    spans = sum(len(s) for s in log.shown.values())
    if spans > 1:
        log.shown = latest_ending(log.shown, spans // 2)
    elif len(log.conversions) > 1:
        log.conversions = sorted(log.conversions, key=lambda c: c.time)[len(log.conversions) // 2:]
    elif len(log.exposed) + len(log.converted) > 2:
        log.exposed, log.converted = log.exposed[len(log.exposed) // 2:], log.converted[len(log.converted) // 2:]
    else:
        return drop_oldest(log, len(log.seen_times) // 2)
    return True


def _drop_least_exposed(tally: Tally) -> bool:
    """Half the groups but the experiment's own (""), the least exposed; False when none is left."""
    least = sorted((sum(c.exposures for c in variants.values()), group)
                   for group, variants in tally.groups.items() if group)
    for _, group in least[: max(1, len(least) // 2)]:
        del tally.groups[group]
        tally.dropped += 1
    return bool(least)


def control_of(shares: Mapping[str, float]) -> str:
    """The control: variant "A" when there is one, else the first by name."""
    return "A" if "A" in shares else min(shares)


def readout(tallies: Iterable[tuple[str, bytes]], experiments: Mapping[str, tuple[str, Mapping[str, float]]]) -> dict:
    """Every experiment's report from the partitions' tallies (``tally:<p>`` for
    recommendations, ``images:<p>`` for images; `experiments`: kind -> (name, shares)), with the
    conversions per item source (recommendations) or per merchant (images).

    >>> table = {}
    >>> book = Ledger(table, 3)
    >>> book.exposed("u1", "A", [("w1", "curated")], t=0.0); book.flush()
    True
    >>> out = readout(table.items(), {"recs": ("recs", {"A": 0.5, "B": 0.5})})
    >>> [(e["name"], e["control"], [v["users"] for v in e["variants"]]) for e in out["experiments"]]
    [('recs', 'A', [1, 0])]
    """
    parts: dict[str, list] = {RECS: [], IMAGES: []}
    for key, raw in tallies:
        for prefix, found in parts.items():
            if key.startswith(prefix):
                found.append(load_tally(raw))
    out = []
    for kind, (name, shares) in experiments.items():
        tally = merge_tallies(parts[RECS if kind == "recs" else IMAGES])
        entry = {"name": name, "kind": kind, **_report(tally.variants(), shares).as_dict()}
        if kind == "recs":
            entry["sources"] = {v: dict(c.sources) for v, c in tally.variants().items()}
        else:
            merchants = [(group, variants) for group, variants in tally.groups.items() if group]
            shown = heapq.nsmallest(MAX_READOUT_MERCHANTS, merchants, key=lambda m: (
                -sum(c.exposures for c in m[1].values()), m[0]))  # 40,000 merchants made a 10 MB readout
            entry["merchants"] = {group: _report(variants, shares).as_dict() for group, variants in sorted(shown)}
            entry["merchants_total"] = len(merchants)  # counted; the most exposed MAX_READOUT_MERCHANTS listed
            entry["merchants_dropped"] = tally.dropped  # least exposed merchants' counts dropped to fit (fitted)
        out.append(entry)
    return {"experiments": out}


def _report(counters: Mapping, shares: Mapping[str, float]) -> Report:
    every = {name: counters.get(name, {"users": 0, "converted": 0}) for name in sorted({*shares, *counters})}
    return report(every, shares, control_of(shares))


SNAPSHOT_FIELDS = ("users", "exposures", "converted", "conversions")


def snapshot(readout: dict, t: float) -> list[tuple[bytes, bytes]]:
    """One record per experiment for the readouts topic: its counts per variant at `t`.

    >>> r = {"experiments": [{"name": "recs", "variants": [{"variant": "A", "share": 0.5, "users": 3,
    ...      "exposures": 4, "converted": 1, "conversions": 1}]}]}
    >>> [(key, json.loads(value)) for key, value in snapshot(r, 10.0)]  # doctest: +NORMALIZE_WHITESPACE
    [(b'recs', {'t': 10.0, 'experiment': 'recs', 'shares': {'A': 0.5},
                'variants': {'A': {'users': 3, 'exposures': 4, 'converted': 1, 'conversions': 1}}})]
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
    """Every experiment of a readout as terminal tables (streams.core.abstats.format_table)."""
    parts = []
    for e in readout["experiments"]:
        counts = {v["variant"]: v for v in e["variants"]}
        shares = {v["variant"]: v["share"] for v in e["variants"] if v["share"] is not None}
        readout = format_table(report(counts, shares, control_of(shares)))
        parts.append(f"experiment {e['name']} ({e['kind']})\n" + readout)
    return "\n\n".join(parts)

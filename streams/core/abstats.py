"""A/B statistics (pure, math only): rates, lift, p-values and a split check per variant.

Input: per variant, counts in the shape of `streams.core.attribution.Counters` (any object or dict
with ``users``, ``converted`` and optionally ``exposures``, ``conversions``), the configured
shares and the control's name. The unit is the *user* (randomisation is per user): the rate of
a variant is converted users / exposed users, a binomial proportion. Every interval is 95%.

- rate interval: Wilson score interval (Wilson 1927), good coverage for small n and rates
  near 0 or 1, never outside [0, 1], defined for 0 and n successes;
- lift = rate / control rate − 1, interval by the delta method on log of the rate ratio with
  0.5 added to every count (the adjusted log method, statsmodels' default for a ratio): with
  x′ = x + ½, n′ = n + ½, se = sqrt(1/x′₁ − 1/n′₁ + 1/x′₀ − 1/n′₀), lift ∈ exp(ln R′ ± z·se) − 1.
  Asymmetric like a ratio is, never below −1; defined when a rate is 0 (Katz's unadjusted log
  was not: a variant converting nobody against a control converting half never lost) or 1 (where
  Katz's drops the group's term: 1 converted of 1 was an interval clear of 0);
- p-value: two-sided two-proportion z-test, pooled: z = (p₁ − p₀) / sqrt(p(1−p)(1/n₁ + 1/n₀)),
  p = erfc(|z|/√2) (equal to Pearson's chi-square on the 2×2 table, 1 dof);
- sample-ratio mismatch: Pearson chi-square goodness of fit of users per variant against the
  configured shares, k − 1 dof, survival function exact for integer dof; flagged at p < 0.001.

Several treatments are compared with the control each on its own (no multiplicity correction).

API: `report(counts, shares, control) -> Report` (plain frozen dataclasses: `variants`, a list of
`VariantStats` with the control first; `srm`; `winner` and a one-line `verdict`; `as_dict()` for
JSON; `streams.core.abtable.format_table(report) -> str` for the terminal). The winner (`decide`)
is the treatment whose lift interval lies above 0 (the highest lower bound if several), the
control if every treatment's lies below 0, each only with its z-test's p < 0.05 on enough
conversions too, else None ("no winner yet"), and None whenever the split check fails.
The pieces: `wilson`, `z_statistic`, `z_test`, `lift_interval`, `chi2_sf`, `sample_ratio`.

>>> r = report({"A": {"users": 1000, "converted": 50}, "B": {"users": 1000, "converted": 80}},
...            {"A": 0.5, "B": 0.5}, control="A")
>>> b = r.variants[1]
>>> round(b.rate, 3), round(b.lift, 2), [round(x, 3) for x in b.lift_ci], round(b.p_value, 4)
(0.08, 0.6, [0.134, 1.241], 0.0065)
>>> r.winner, r.srm.flagged
('B', False)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal
SRM_ALPHA = 0.001
ALPHA = 0.05  # a verdict needs the z-test's p below it as well as a lift interval clear of 0
MIN_EXPECTED = 5.0  # ... and this many expected conversions and non-conversions in each group (`_enough`)


@dataclass(frozen=True)
class VariantStats:
    variant: str
    share: float | None  # configured share, None when not configured
    users: int
    exposures: int
    converted: int
    conversions: int
    rate: float | None  # converted / users; None without users
    rate_ci: tuple[float, float] | None
    lift: float | None  # rate / control rate − 1; None for the control and when undefined
    lift_ci: tuple[float, float] | None
    p_value: float | None  # z-test against the control
    note: str = ""  # why lift or p-value are missing


@dataclass(frozen=True)
class SampleRatio:
    chi2: float
    dof: int
    p_value: float
    flagged: bool  # p < SRM_ALPHA: the split is broken, do not trust the comparison
    expected: dict[str, float]


@dataclass(frozen=True)
class Report:
    control: str
    variants: list[VariantStats]
    srm: SampleRatio | None  # None with fewer than two configured variants or no users
    winner: str | None
    verdict: str  # one sentence: the winner and why, or why there is none yet

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists when encoded)."""
        return asdict(self)


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval for x successes in n trials; None when n == 0, or when the counts
    are not a proportion (x outside 0..n: a readout shows them, noted, rather than raise for
    every experiment at once).

    >>> [round(b, 4) for b in wilson(81, 263)]   # Newcombe (1998), Table II
    [0.2553, 0.3662]
    >>> wilson(0, 10)[0], wilson(10, 10)[1], wilson(0, 0), wilson(2, 1)
    (0.0, 1.0, None, None)
    """
    if n <= 0 or not 0 <= x <= n:
        return None
    p, z2 = x / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if x <= 0 else max(0.0, centre - half)
    high = 1.0 if x >= n else min(1.0, centre + half)
    return low, high


def z_statistic(x0: int, n0: int, x1: int, n1: int) -> float | None:
    """Pooled two-proportion z of group 1 against group 0; None when a group is empty or
    the pooled rate is 0 or 1 (no variation).

    >>> round(z_statistic(140, 200, 255, 340), 6)
    1.266015
    """
    if n0 <= 0 or n1 <= 0:
        return None
    pooled = (x0 + x1) / (n0 + n1)
    var = pooled * (1 - pooled) * (1 / n0 + 1 / n1)
    return None if var <= 0 else (x1 / n1 - x0 / n0) / math.sqrt(var)


def z_test(x0: int, n0: int, x1: int, n1: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test, erfc(|z|/√2); None when a group
    is empty, 1.0 when the pooled rate is 0 or 1 (no variation, no evidence).

    >>> round(z_test(140, 200, 255, 340), 6)
    0.205508
    """
    if n0 <= 0 or n1 <= 0:
        return None
    z = z_statistic(x0, n0, x1, n1)
    return 1.0 if z is None else min(1.0, math.erfc(abs(z) / math.sqrt(2)))


def lift_interval(x0: int, n0: int, x1: int, n1: int, z: float = Z95) -> tuple[float, float] | None:
    """Interval for p₁/p₀ − 1 (the adjusted log method, as statsmodels'
    ``confint_proportions_2indep(compare="ratio", method="log-adjusted")``); None when a group is
    empty or its counts are no proportion.

    >>> [round(b, 4) for b in lift_interval(50, 1000, 80, 1000)]
    [0.1338, 1.2412]
    >>> [round(b, 4) for b in lift_interval(500, 1000, 0, 1000)]   # B converts nobody: it loses
    [-0.9999, -0.984]
    """
    if n0 <= 0 or n1 <= 0 or not (0 <= x0 <= n0 and 0 <= x1 <= n1):
        return None
    a0, b0, a1, b1 = x0 + 0.5, n0 + 0.5, x1 + 0.5, n1 + 0.5
    log_ratio = math.log((a1 / b1) / (a0 / b0))
    se = math.sqrt(max(0.0, 1 / a1 - 1 / b1 + 1 / a0 - 1 / b0))
    return math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1


def chi2_sf(x: float, dof: int) -> float:
    """P(χ²_dof > x), exact for integer dof ≥ 1: the regularized upper gamma Q(dof/2, x/2)
    from Q(1/2, y) = erfc(√y) or Q(1, y) = e^−y, climbing by Q(a+1, y) = Q(a, y) + yᵃe^−y/Γ(a+1).

    >>> round(chi2_sf(3.841458820694124, 1), 12), round(chi2_sf(5.991464547107979, 2), 12)
    (0.05, 0.05)
    """
    if dof < 1:
        raise ValueError("dof must be a positive integer")
    y = x / 2
    if y <= 0:
        return 1.0
    a, q = (0.5, math.erfc(math.sqrt(y))) if dof % 2 else (1.0, math.exp(-y))
    while a < dof / 2:
        q += math.exp(a * math.log(y) - y - math.lgamma(a + 1))
        a += 1
    return min(1.0, q)


def sample_ratio(users: Mapping[str, int], shares: Mapping[str, float]) -> SampleRatio | None:
    """Chi-square goodness of fit of users per variant against the shares (normalised to 1
    over the configured variants; users of unconfigured variants are left out).

    >>> s = sample_ratio({"A": 5100, "B": 4900}, {"A": 0.5, "B": 0.5})
    >>> s.chi2, round(s.p_value, 4), s.flagged
    (4.0, 0.0455, False)
    """
    names = [v for v in shares if shares[v] > 0]
    total = sum(users.get(v, 0) for v in names)
    if len(names) < 2 or total <= 0:
        return None
    weight = sum(shares[v] for v in names)
    expected = {v: total * shares[v] / weight for v in names}
    chi2 = sum((users.get(v, 0) - e) ** 2 / e for v, e in expected.items())
    p = chi2_sf(chi2, len(names) - 1)
    return SampleRatio(chi2, len(names) - 1, p, p < SRM_ALPHA, expected)


def _count(counts: Any, name: str) -> int:
    value = counts.get(name, 0) if isinstance(counts, Mapping) else getattr(counts, name, 0)
    return int(value)


def variant_stats(name: str, c: Any, control: Any | None, share: float | None) -> VariantStats:
    """One variant's row; `control` is the control's counts (None for the control itself).
    Counts that are no proportion (more converted than exposed users) get no rate and no
    comparison, with a note, instead of numbers that mean nothing.

    >>> variant_stats("B", {"users": 1, "converted": 2}, {"users": 5, "converted": 1}, 0.5).note
    'more converted than exposed users: counts inconsistent'
    """
    n, x = _count(c, "users"), _count(c, "converted")
    n0, x0 = (_count(control, "users"), _count(control, "converted")) if control is not None else (0, 0)
    rate = x / n if n > 0 and x <= n else None
    lift = lift_ci = p = None
    note = ""
    if x > n or x0 > n0:
        note = "more converted than exposed users: counts inconsistent"
    elif control is not None:
        p = z_test(x0, n0, x, n)
        lift_ci = lift_interval(x0, n0, x, n)
        if n0 <= 0 or n <= 0:
            note = "no users in " + ("the control" if n0 <= 0 else "this variant")
        elif x0 <= 0:
            note = "the control has no conversions: lift undefined (its interval is defined)"
        else:
            lift = rate / (x0 / n0) - 1
    return VariantStats(name, share, n, _count(c, "exposures"), x, _count(c, "conversions"),
                        rate, wilson(x, n), lift, lift_ci, p, note)


def decide(rows: list[VariantStats], control: str,
           srm: SampleRatio | None) -> tuple[str | None, str]:
    """The winner: the treatment whose lift interval lies above 0 (the highest lower bound
    if several), or the control when every treatment's lies below 0; else none yet. A
    comparison counts only when its z-test agrees (p < 0.05): the log-ratio interval drops a
    group's term at a 100% rate, so 1 converted user of 1 made "B wins" beside p = 0.51 (and with
    a 90/10 split, "B wins" came 6-58% of the time between equal variants; an outside check against
    statsmodels and Fisher's exact test, docs/experiments.md). None while the sample ratio is off:
    a broken split makes every comparison suspect.

    >>> def row(v, lo, hi, p): return VariantStats(v, 0.5, 90, 90, 10, 10, 0.1, None, 0.1, (lo, hi), p)
    >>> decide([row("A", 0, 0, None), row("B", 0.005, 1.07, 0.51)], "A", None)
    (None, 'no winner yet: no lift interval excludes 0 with p < 0.05 on enough conversions')
    >>> decide([row("A", 0, 0, None), row("B", 0.1, 0.7, 0.001)], "A", None)[0]
    'B'
    """
    if srm is not None and srm.flagged:
        return None, f"no winner: sample ratio mismatch (p = {srm.p_value:.2g}), split broken"
    treatments = [r for r in rows if r.variant != control]
    if not treatments:
        return None, "no winner yet: only one variant"
    base = next(r for r in rows if r.variant == control)
    significant = [r for r in treatments if r.lift_ci and r.p_value is not None and r.p_value < ALPHA
                   and _enough(base, r)]
    above = [r for r in significant if r.lift_ci[0] > 0]
    if above:
        best = max(above, key=lambda r: r.lift_ci[0])
        return best.variant, f"{best.variant} wins: lift interval {interval_text(best.lift_ci)} > 0"
    if len(significant) == len(treatments) and all(r.lift_ci[1] < 0 for r in significant):
        return control, f"{control} (control) wins: every treatment's lift interval is below 0"
    return None, f"no winner yet: no lift interval excludes 0 with p < {ALPHA:g} on enough conversions"


def _enough(control: VariantStats, row: VariantStats) -> bool:
    """Cochran's rule for the z-test (Pearson's chi-square on the 2×2 table): every expected count
    at least MIN_EXPECTED. Below it the normal approximation is too kind: with 10 users in B at a 2%
    rate, equal variants got "B wins" in 7% of runs instead of 2.5%."""
    n = control.users + row.users
    pooled = (control.converted + row.converted) / n if n else 0.0
    return min(control.users, row.users) * min(pooled, 1.0 - pooled) >= MIN_EXPECTED


def report(counts: Mapping[str, Any], shares: Mapping[str, float] | None, control: str) -> Report:
    """Statistics for every variant in `counts` (and every configured one, with zeros)."""
    shares = dict(shares or {})
    names = sorted(set(counts) | set(shares), key=lambda v: (v != control, v))
    if control not in names:
        raise ValueError(f"control {control!r} is neither counted nor configured")
    base = counts.get(control, {})
    rows = [variant_stats(v, counts.get(v, {}), None if v == control else base, shares.get(v))
            for v in names]
    srm = sample_ratio({r.variant: r.users for r in rows}, shares)
    winner, verdict = decide(rows, control, srm)
    return Report(control, rows, srm, winner, verdict)


def percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def interval_text(ci: tuple[float, float] | None) -> str:
    return "-" if ci is None else f"[{percent(ci[0])}, {percent(ci[1])}]"

"""An A/B readout (streams.core.abstats.Report) as a terminal table (pure).

>>> from streams.core.abstats import report
>>> r = report({"A": {"users": 1000, "converted": 50}, "B": {"users": 1000, "converted": 80}},
...            {"A": 0.5, "B": 0.5}, control="A")
>>> print(format_table(r).splitlines()[-1])
B wins: lift interval [13.38%, 124.12%] > 0
"""

from __future__ import annotations

from streams.core.abstats import Report, interval_text, percent


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.2f}%"


def format_table(r: Report) -> str:
    """The report as a terminal table, with the split check and the verdict under it."""
    head = ("variant", "share", "users", "exposures", "converted", "conversions", "rate",
            "95% CI", "lift", "95% CI", "p")
    rows = [(v.variant + (" (control)" if v.variant == r.control else ""),
             "-" if v.share is None else f"{v.share:g}", str(v.users), str(v.exposures),
             str(v.converted), str(v.conversions), percent(v.rate), interval_text(v.rate_ci),
             _signed(v.lift), interval_text(v.lift_ci), _p(v.p_value))
            for v in r.variants]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(row, widths, strict=True))).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if r.srm is None:
        lines.append("sample ratio: not checked (fewer than two configured variants, or no users)")
    else:
        flag = "MISMATCH, the split is broken" if r.srm.flagged else "ok"
        lines.append(f"sample ratio: chi2 = {r.srm.chi2:.3f}, dof = {r.srm.dof}, "
                     f"p = {r.srm.p_value:.4g} ({flag})")
    notes = [f"{v.variant}: {v.note}" for v in r.variants if v.note]
    return "\n".join(lines + notes + [r.verdict])

"""The study report: a per-criterion table for the terminal, and one self-contained HTML file
(inline CSS, inline SVG charts, no script, no link to this server) to attach to a paper."""

from __future__ import annotations

from rich import box
from rich.table import Table

from app.dashboard import charts
from app.dashboard.schemas import Advanced, Dashboard
from app.web.pages import STATIC_DIR, templates

# The report is a document, not a page of this app: it may style itself inline, never script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


def terminal_tables(d: Dashboard) -> list[Table]:
    """One table per arm pair, one row per criterion: wins / ties / losses, win rate with its
    interval, the Holm-adjusted sign test and the votes still needed for 80% power."""
    power = {(p.arm, p.opponent, p.criterion): p for p in d.summary.power}
    tables = []
    for pair in charts.pair_sections(d):
        table = Table(
            title=f"{d.name}: {pair.arm} vs {pair.opponent} ({d.summary.n_votes:,} votes)",
            box=box.SIMPLE_HEAVY,
        )
        table.add_column("criterion", no_wrap=True)
        margin = d.filters.margin
        names = ["W/T/L", "win rate", "95% CI", "p (Holm)", "80% power"]
        if margin is not None:
            names.append(f"no worse by {margin:g} pp")
        for name in names:
            table.add_column(name, justify="right", no_wrap=True)
        for r in pair.overall:
            cells = [
                d.label(r.criterion),
                f"{r.wins}/{r.ties}/{r.losses}",
                charts.percent(r.win_rate),
                charts.interval(r.ci_low, r.ci_high),
                charts.p_value(r.p_holm) + (" *" if charts.significant(r) else "  "),
                charts.power_text(power.get((r.arm, r.opponent, r.criterion))),
            ]
            if r.non_inferiority is not None:
                verdict = "yes" if r.non_inferiority.non_inferior else "no"
                cells.append(f"{verdict} (p {charts.p_value(r.non_inferiority.p_value)})")
            table.add_row(*cells)
        tables.append(table)
    if tables:
        # Which arm the tables read, and any arm without a render cost, instead of a guess.
        tables[0].caption = "\n".join([charts.focus_note(d), *charts.cost_notes(d)])
        tables[0].caption_justify = "left"
    return tables


NOTE = (
    "Win rate: the first arm's share of decisive votes (ties left out), 95% Wilson interval. "
    "p: two-sided exact sign test, Holm-adjusted across criteria (* < 0.05). 80% power: decisive "
    "votes still needed at the effect seen so far; fix the sample size in advance, since peeking "
    "inflates false positives."
)


def html(d: Dashboard, a: Advanced) -> str:
    """The report as one HTML document (the dashboard's charts and tables, frozen)."""
    styles = "\n".join((STATIC_DIR / name).read_text() for name in ("app.css", "dashboard.css"))
    return templates.get_template("dashboard/report.html").render(
        d=d, a=a, charts=charts, styles=styles, refresh_url=None
    )

"""The study report: a per-criterion table for the terminal, and one self-contained HTML file
(inline CSS, inline SVG charts, no script, no link to this server) to attach to a paper."""

from __future__ import annotations

from rich import box
from rich.table import Table

from app.dashboard import charts
from app.dashboard.confounds import MOTION
from app.dashboard.schemas import Advanced, Dashboard
from app.web.pages import STATIC_DIR, templates

# The report is a document, not a page of this app: it may style itself inline, never script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'"


def verdict_table(d: Dashboard) -> Table | None:
    """The plan's verdicts, one row per hypothesis: valid at every look (fits 120 columns)."""
    v = d.verdicts
    if v is None:
        return None
    focus = ", ".join(dict.fromkeys(h.arm for h in v.plan.hypotheses)) or d.focus
    table = Table(
        title=(
            f"{d.name}: verdicts for {focus} (valid at every look), {v.summary.evaluators:,} "
            f"evaluators counted, {v.summary.votes:,} votes"
        ),
        box=box.SIMPLE_HEAVY,
    )
    table.add_column("criterion")
    for name in ("against", "test", "verdict"):
        table.add_column(name, no_wrap=True)
    for name in ("win rate interval", "votes", "alpha"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in v.summary.verdicts:
        table.add_row(
            d.label(r.criterion) + (" (primary)" if charts.is_primary(v, r) else ""),
            r.opponent,
            charts.hypothesis_text(r),
            charts.verdict_word(r),
            charts.interval(r.lower, r.upper),
            f"{r.votes:,}",
            charts.alpha_text(r.alpha),
        )
    waiting = f"; {v.waiting} evaluator(s) still rating count when they finish" if v.waiting else ""
    table.caption = (
        f"Anytime-valid confidence sequences over evaluators; the plan's alpha "
        f"{charts.alpha_text(v.plan.alpha)} split over its {len(v.plan.hypotheses)} "
        f"hypotheses{waiting}."
    )
    table.caption_justify = "left"
    return table


def terminal_tables(d: Dashboard) -> list[Table]:
    """The plan's verdicts first; then one fixed-sample table per arm pair, one row per
    criterion: wins / ties / losses, win rate with its interval, the Holm-adjusted sign test
    and the votes still needed for 80% power."""
    power = {(p.arm, p.opponent, p.criterion): p for p in d.summary.power}
    verdicts = verdict_table(d)
    tables = [] if verdicts is None else [verdicts]
    fixed: list[Table] = []
    for pair in charts.pair_sections(d):
        table = Table(
            title=(
                f"{d.name}: {pair.arm} vs {pair.opponent} ({d.summary.n_votes:,} votes), "
                "fixed-sample (valid only at a pre-planned n)"
            ),
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
        fixed.append(table)
    if fixed:
        # Which arm the tables read, and any arm without a render cost, instead of a guess.
        fixed[0].caption = "\n".join([charts.focus_note(d), *charts.cost_notes(d)])
        fixed[0].caption_justify = "left"
    return tables + fixed


def adjusted_table(d: Dashboard, a: Advanced) -> Table | None:
    """The focus arm's decisive win rate with the clip measures held equal, beside the
    unadjusted one (None when no clip is measured or nothing could be fitted)."""
    c = a.confounds
    if c is None or not c.adjusted:
        return None
    sets = list(dict.fromkeys(r.covariates for r in c.adjusted))
    focus = ", ".join(dict.fromkeys(r.arm for r in c.adjusted))
    table = Table(
        title=f"{d.name}: {focus} with the clip measures held equal (fixed-sample, 95%)",
        box=box.SIMPLE_HEAVY,
    )
    table.add_column("criterion")
    table.add_column("against", no_wrap=True)
    table.add_column("unadjusted", justify="right", no_wrap=True)
    for names in sets:
        table.add_column(
            "motion held equal" if names == MOTION else "every measure held equal",
            justify="right",
            no_wrap=True,
        )
    table.add_column("votes", justify="right", no_wrap=True)

    def cell(effect: float | None, lower: float | None, upper: float | None) -> str:
        if effect is None:
            return "—"
        return f"{charts.percent(effect)} ({charts.interval(lower, upper)})"

    keys = dict.fromkeys((r.criterion, r.opponent) for r in c.adjusted)
    for criterion, opponent in keys:
        rows = {
            r.covariates: r
            for r in c.adjusted
            if (r.criterion, r.opponent) == (criterion, opponent)
        }
        first = next(iter(rows.values()))
        table.add_row(
            d.label(criterion),
            opponent,
            cell(first.unadjusted_effect, first.unadjusted_lower, first.unadjusted_upper),
            *(cell(r.effect, r.lower, r.upper) if r else "—" for r in (rows.get(n) for n in sets)),
            f"{first.n_votes:,}",
        )
    table.caption = (
        "Logistic model of the focus arm winning a decisive vote, with the side and the measure "
        f"differences; prompt-clustered jackknife intervals. Motion: {', '.join(MOTION)}."
    )
    table.caption_justify = "left"
    return table


NOTE = (
    "Verdicts: the study's analysis plan, tested with confidence sequences that stay valid at "
    "every look, so they may be read at any time. Fixed-sample tables: win rate is the first "
    "arm's share of decisive votes (ties left out), 95% Wilson interval; p: two-sided exact sign "
    "test, Holm-adjusted across criteria (* < 0.05); 80% power: decisive votes still needed at "
    "the effect seen so far. They hold only at a sample size fixed in advance: peeking at them "
    "inflates false positives, so watch the verdicts instead."
)


def html(d: Dashboard, a: Advanced) -> str:
    """The report as one HTML document (the dashboard's charts and tables, frozen)."""
    styles = "\n".join((STATIC_DIR / name).read_text() for name in ("app.css", "dashboard.css"))
    return templates.get_template("dashboard/report.html").render(
        d=d, a=a, charts=charts, styles=styles, refresh_url=None
    )

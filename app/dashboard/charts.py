"""Chart geometry for the server-rendered charts (templates/dashboard/_charts.html).

Charts are HTML and CSS (bars and points placed in percent of their box, so labels keep their
size on a phone) with inline SVG only for the cumulative line; no JavaScript and no library.
Everything here is a pure function of the statistics: scales, positions, colours, number formats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from app.analysis import PairwiseResult, PowerResult, SpeedPreference, Verdict
from app.analysis.speed import fastest_arm, unpriced_arms
from app.dashboard.schemas import Dashboard, Timeline, VerdictView
from app.dashboard.tally import FLAGGED_EVALUATOR_SHARE as FLAGGED_EVALUATOR_SHARE  # templates

# Win-rate axes are zoomed to the data: +-this much around 50% (the smallest that fits).
WIN_DOMAINS = (0.1, 0.2, 0.3, 0.5)
MIN_HEAT_DECISIVE = 10  # fewer decisive votes than this: the heatmap cell is greyed out
# The speed chart's plot area, in percent of its box (room for tick labels around it).
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 11, 96, 10, 84


# --- formats ------------------------------------------------------------------------------------


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def interval(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "—"
    return f"{100 * low:.1f}\N{EN DASH}{100 * high:.1f}"


def p_value(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def number(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def gib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**30:.1f} GiB"


# --- diverging win-rate bars --------------------------------------------------------------------


def win_domain(results: Iterable[PairwiseResult]) -> float:
    """Half-width of the win-rate axis: the smallest of WIN_DOMAINS holding every interval."""
    reach = max(
        (abs(v - 0.5) for r in results for v in (r.ci_low, r.ci_high, r.win_rate) if v is not None),
        default=0.0,
    )
    return next((d for d in WIN_DOMAINS if reach <= d), 0.5)


def position(rate: float | None, domain: float) -> float:
    """Percent from the left of a win-rate axis centred on 50% spanning +-domain."""
    if rate is None:
        return 50.0
    return max(0.0, min(100.0, 50 + (rate - 0.5) / domain * 50))


def ticks(domain: float) -> list[tuple[float, str]]:
    """(percent from left, label) for five ticks of a win-rate axis."""
    values = [0.5 - domain, 0.5 - domain / 2, 0.5, 0.5 + domain / 2, 0.5 + domain]
    return [(position(v, domain), f"{100 * v:.0f}%") for v in values]


def significant(result: PairwiseResult, alpha: float = 0.05) -> bool:
    return result.p_holm is not None and result.p_holm < alpha


# --- heatmap ------------------------------------------------------------------------------------


def heat_class(result: PairwiseResult | None) -> str:
    """CSS class of a heatmap cell: `heat-p1`..`heat-p5` when the focus arm is preferred by
    5..25+ points, `heat-m1`..`heat-m5` for its opponent, `heat-0` near even, `heat-na` when
    there are too few decisive votes to say."""
    if result is None or result.win_rate is None or result.n_decisive < MIN_HEAT_DECISIVE:
        return "heat-na"
    step = max(-5, min(5, round((result.win_rate - 0.5) / 0.05)))
    return "heat-0" if step == 0 else f"heat-{'p' if step > 0 else 'm'}{abs(step)}"


HEAT_RAMP = tuple(
    [f"heat-m{i}" for i in range(5, 0, -1)] + ["heat-0"] + [f"heat-p{i}" for i in range(1, 6)]
)


def theme_grid(
    results: Iterable[PairwiseResult], *, themes: Sequence[str], criteria: Sequence[str]
) -> list[tuple[str, list[PairwiseResult | None]]]:
    """Rows of (theme, one result per criterion) for one arm pair."""
    cells = {(r.theme, r.criterion): r for r in results}
    return [(theme, [cells.get((theme, c)) for c in criteria]) for theme in themes]


# --- speed beside preference --------------------------------------------------------------------

SPEED_HEIGHT = 280  # px: the speed chart's SVG height (its width follows the page)
N_ARM_COLOURS = 8  # .arm-c0 .. .arm-c7 in static/dashboard.css (Okabe and Ito's palette)
LABEL_OFFSET = 12  # px between a point's centre (its whisker) and its label
LABEL_HEIGHT = 16  # px a label takes vertically
LABEL_SHIFTS = tuple(sorted(range(-208, 209, 8), key=abs))  # px up (<0) or down, nearest first
REF_WIDTH = 300  # px: about the narrowest speed chart (a phone)
CHAR_WIDTH = 9.0  # px per character of a 13 px bold label (8.3 to 8.8 measured in Chromium)


@dataclass(frozen=True, slots=True)
class SpeedPoint:
    arm: str
    x: float  # percent from the left
    y: float  # percent from the bottom
    low: float
    high: float
    row: SpeedPreference
    colour: str = "arm-c0"  # CSS class
    label_anchor: str = "start"  # the label's text-anchor: "start" right of the whisker
    label_dy: float = 0.0  # px from the point's centre to the label's middle


@dataclass(frozen=True, slots=True)
class SpeedLayout:
    points: tuple[SpeedPoint, ...]
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    log: bool
    missing: tuple[str, ...]  # arms without render times or decisive votes


def arm_colour(arm: str, arms: Sequence[str]) -> str:
    """CSS class of an arm's own colour, from its place in the study (the same in every view)."""
    return f"arm-c{list(arms).index(arm) % N_ARM_COLOURS}" if arm in arms else "arm-c0"


def speed_layout(
    rows: Sequence[SpeedPreference], *, arms: Sequence[str] | None = None
) -> SpeedLayout:
    """Median render seconds (x; log scale when they span over 5x) against pooled win rate (y),
    each arm in its own colour (by its place in `arms`, default the rows' order)."""
    arms = list(arms) if arms is not None else [r.arm for r in rows]
    placed = [r for r in rows if r.speed.median_total_seconds and r.preference.win_rate is not None]
    missing = tuple(r.arm for r in rows if r not in placed)
    if not placed:
        return SpeedLayout((), (), (), False, missing)
    times = [r.speed.median_total_seconds or 0.0 for r in placed]
    log = max(times) / min(times) > 5
    x_of, x_ticks = _x_scale(min(times), max(times), log=log)
    domain = win_domain_of(placed)
    points = [
        SpeedPoint(
            arm=r.arm,
            x=x_of(r.speed.median_total_seconds or 0.0),
            y=position(r.preference.win_rate, domain),
            low=position(r.preference.ci_low, domain),
            high=position(r.preference.ci_high, domain),
            row=r,
            colour=arm_colour(r.arm, arms),
        )
        for r in placed
    ]
    return SpeedLayout(tuple(_place_labels(points)), x_ticks, tuple(ticks(domain)), log, missing)


def _place_labels(points: list[SpeedPoint]) -> list[SpeedPoint]:
    """Each label beside its point (so never on its whisker), on the side and at the height
    where it covers no whisker, dot or label placed before it, as near its point as it can.

    Placed in pixels at REF_WIDTH: on a wider chart points move apart while labels keep their
    size, so what clears at the narrowest width clears at every width."""
    placed: dict[str, SpeedPoint] = {}
    boxes: list[Box] = []
    for point in sorted(points, key=lambda p: p.x):
        taken = [box for p in points if p is not point for box in _marks(p)] + boxes
        # Nearest first, the right before the left: the first clear spot is the best one.
        options = [(anchor, dy) for dy in LABEL_SHIFTS for anchor in ("start", "end")]
        clear = (o for o in options if _label_cost(point, *o, taken) < 1000)
        # Nowhere clear: the least bad spot.
        best = next(clear, None) or min(
            options, key=lambda o: _label_cost(point, o[0], o[1], taken)
        )
        placed[point.arm] = _with_label(point, anchor=best[0], dy=best[1])
        boxes.append(_label_box(point, *best))
    return [placed[p.arm] for p in points]


Box = tuple[float, float, float, float]  # left, top, right, bottom in px at REF_WIDTH


def _marks(point: SpeedPoint) -> list[Box]:
    """The whisker and the dot of a point."""
    x, y = REF_WIDTH * point.x / 100, _px(point.y)
    return [(x - 2, _px(point.high), x + 2, _px(point.low)), (x - 8, y - 8, x + 8, y + 8)]


def _label_box(point: SpeedPoint, anchor: str, dy: float) -> Box:
    """The label with the gap between it and its point (what lies in the gap at this width
    may lie under the label on a wider chart)."""
    x, y = REF_WIDTH * point.x / 100, _px(point.y) + dy
    width = LABEL_OFFSET + CHAR_WIDTH * len(point.arm)
    left = x if anchor == "start" else x - width
    return (left, y - LABEL_HEIGHT / 2, left + width, y + LABEL_HEIGHT / 2)


def _label_cost(point: SpeedPoint, anchor: str, dy: float, taken: list[Box]) -> float:
    """Leaving the plot costs most, then each overlap; then distance from the point; then
    the left side."""
    left, top, right, bottom = box = _label_box(point, anchor, dy)
    overlaps = sum(_overlap(box, other) for other in taken)
    outside = (
        left < REF_WIDTH * PLOT_LEFT / 100
        or right > REF_WIDTH
        or top < 0
        or bottom > SPEED_HEIGHT * PLOT_BOTTOM / 100
    )
    return 10_000 * outside + 1000 * overlaps + abs(dy) + 4 * (anchor == "end")


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _with_label(point: SpeedPoint, *, anchor: str, dy: float) -> SpeedPoint:
    return SpeedPoint(
        point.arm, point.x, point.y, point.low, point.high, point.row, point.colour, anchor, dy
    )


def _px(y: float) -> float:
    """A 0..100 (bottom..top) position as pixels from the top of the speed chart."""
    return SPEED_HEIGHT * plot_y(y) / 100


def label_dx(point: SpeedPoint) -> int:
    return LABEL_OFFSET if point.label_anchor == "start" else -LABEL_OFFSET


def unpriced(d: Dashboard) -> tuple[str, ...]:
    """Arms of the dashboard with no render cost recorded."""
    return unpriced_arms(r.speed for r in d.speed)


def fastest(d: Dashboard) -> str | None:
    """The fastest arm, or None unless every arm has a render cost."""
    return fastest_arm([r.speed for r in d.speed])


def cost_notes(d: Dashboard) -> list[str]:
    """One line per arm without a render cost, saying why, instead of guessing."""
    clips = {r.arm: r.speed.n_clips for r in d.speed}
    return [
        f"No render cost recorded for arm {arm}: "
        + (
            f"its {clips[arm]} done clip(s) carry no total_s (add the cost columns to the "
            "import manifest)."
            if clips.get(arm)
            else "none of its clips is done yet."
        )
        for arm in unpriced(d)
    ]


def focus_note(d: Dashboard) -> str:
    """Which arm the results are read for, and why: chosen, the fastest arm, or (when an arm has
    no render cost, so none is named the fastest) the first arm of the study."""
    if d.filters.arm == d.focus:
        return f"Focus arm: {d.focus} (chosen)."
    if fastest(d) == d.focus:
        return f"Focus arm: {d.focus}, the fastest (lowest median render seconds per clip)."
    missing = unpriced(d)
    return (
        f"Focus arm: {d.focus}, the first of the study: no render cost recorded for "
        f"arm{'s' if len(missing) > 1 else ''} {', '.join(missing)}, so no arm is named "
        "the fastest."
    )


def plot_y(position_: float) -> float:
    """A 0..100 (bottom..top) position as percent from the top of the speed chart's box."""
    return PLOT_BOTTOM - (PLOT_BOTTOM - PLOT_TOP) * position_ / 100


def win_domain_of(rows: Iterable[SpeedPreference]) -> float:
    values = [
        v
        for r in rows
        for v in (r.preference.ci_low, r.preference.ci_high, r.preference.win_rate)
        if v is not None
    ]
    reach = max((abs(v - 0.5) for v in values), default=0.0)
    return next((d for d in WIN_DOMAINS if reach <= d), 0.5)


PLOT_WIDTH = PLOT_RIGHT - PLOT_LEFT - 8  # 4 points of padding inside each side


def _x(offset: float) -> float:
    return PLOT_LEFT + 4 + offset


def _x_scale(
    low: float, high: float, *, log: bool
) -> tuple[Callable[[float], float], tuple[tuple[float, str], ...]]:
    """A padded axis over [low, high] seconds: (value -> percent, ticks)."""
    if log:
        lo, hi = math.log10(low) - 0.15, math.log10(high) + 0.15

        def log_x(v: float) -> float:
            return _x(PLOT_WIDTH * (math.log10(v) - lo) / (hi - lo))

        decades = range(math.floor(lo), math.ceil(hi) + 1)
        candidates = [m * 10**d for d in decades for m in (1, 2, 5)]
        ticks_ = [(log_x(v), seconds(v)) for v in candidates if lo <= math.log10(v) <= hi]
        return log_x, tuple(ticks_)
    step = _nice_step((high - low) or high or 1.0)
    lo = math.floor(low / step) * step
    lo = lo - step if lo == low and lo >= step else lo
    hi = math.ceil(high / step) * step
    hi = hi + step if hi == high else hi

    def linear_x(v: float) -> float:
        return _x(PLOT_WIDTH * (v - lo) / (hi - lo))

    values = [lo + i * step for i in range(round((hi - lo) / step) + 1)]
    return linear_x, tuple((linear_x(v), seconds(v)) for v in values)


def _nice_step(span: float) -> float:
    """1, 2 or 5 times a power of ten, giving three to six ticks over `span`."""
    raw = span / 4
    power: float = 10 ** math.floor(math.log10(raw))  # int ** int is typed Any
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


# --- votes over time ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineLayout:
    bars: tuple[float, ...]  # percent of the tallest bucket
    line: str  # SVG polyline points in a 0..100 x 0..100 box (cumulative votes)
    labels: tuple[tuple[float, str], ...]  # (percent from left, date label)


def timeline_layout(timeline: Timeline) -> TimelineLayout:
    buckets = timeline.buckets
    if not buckets:
        return TimelineLayout((), "", ())
    tallest = max(b.votes for b in buckets) or 1
    total = buckets[-1].cumulative_votes or 1
    n = len(buckets)
    line = " ".join(
        f"{100 * (i + 0.5) / n:.2f},{100 - 100 * b.cumulative_votes / total:.2f}"
        for i, b in enumerate(buckets)
    )
    fmt = {10080: "%d %b %Y", 1440: "%d %b"}.get(timeline.bucket_minutes, "%d %b %H:%M")
    picks = sorted({0, n // 2, n - 1})
    labels = tuple((100 * (i + 0.5) / n, buckets[i].start.strftime(fmt)) for i in picks)
    return TimelineLayout(tuple(100 * b.votes / tallest for b in buckets), line, labels)


# --- one section per arm pair -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairSection:
    arm: str
    opponent: str
    overall: tuple[PairwiseResult, ...]  # one per criterion
    by_theme: tuple[PairwiseResult, ...]
    grid: list[tuple[str, list[PairwiseResult | None]]]
    power: dict[str, PowerResult]  # by criterion


def pair_sections(d: Dashboard) -> list[PairSection]:
    """The dashboard's results grouped by arm pair, pairs with the focus arm first."""
    criteria = [c.key for c in d.criteria]
    sections = []
    pairs = dict.fromkeys((r.arm, r.opponent) for r in d.summary.overall)
    for arm, opponent in sorted(pairs, key=lambda p: p[0] != d.focus):
        by_theme = tuple(r for r in d.summary.by_theme if (r.arm, r.opponent) == (arm, opponent))
        sections.append(
            PairSection(
                arm=arm,
                opponent=opponent,
                overall=tuple(
                    r for r in d.summary.overall if (r.arm, r.opponent) == (arm, opponent)
                ),
                by_theme=by_theme,
                grid=theme_grid(by_theme, themes=d.summary.themes, criteria=criteria),
                power={
                    p.criterion: p
                    for p in d.summary.power
                    if (p.arm, p.opponent) == (arm, opponent)
                },
            )
        )
    return sections


def power_text(power: PowerResult | None) -> str:
    """'≈N more' decisive votes for the target power at the effect seen so far."""
    if power is None or power.n_decisive == 0:
        return "—"
    if power.additional_decisive is None:
        return "no effect seen"
    if power.additional_decisive == 0:
        return "reached"
    return f"≈{power.additional_decisive:,} more"


# --- verdicts -----------------------------------------------------------------------------------

VERDICT_WORDS = {
    "superior": "better",
    "inferior": "worse",
    "non_inferior": "no worse",
    "undecided": "undecided",
}


def verdict_word(verdict: Verdict) -> str:
    """The verdict in a word: `better` / `worse` (superiority), `no worse` / `worse by more
    than the margin` (non-inferiority), `undecided`."""
    if verdict.status == "inferior" and verdict.hypothesis == "non_inferiority":
        return "worse by more than the margin"
    return VERDICT_WORDS[verdict.status]


def hypothesis_text(verdict: Verdict) -> str:
    """What the hypothesis tests: `superiority` or `no worse by N pp`."""
    if verdict.hypothesis == "non_inferiority":
        return f"no worse by {100 * verdict.margin:g} pp"
    return "superiority"


def verdict_threshold(verdict: Verdict) -> float:
    """The win rate the interval is compared with: 50%, or 50% minus the margin."""
    return 0.5 - verdict.margin if verdict.hypothesis == "non_inferiority" else 0.5


def primary_keys(view: VerdictView) -> set[tuple[str, str, str]]:
    return {(h.criterion, h.arm, h.opponent) for h in view.plan.primary}


def is_primary(view: VerdictView, verdict: Verdict) -> bool:
    return (verdict.criterion, verdict.arm, verdict.opponent) in primary_keys(view)


def alpha_text(value: float) -> str:
    """A significance level in two significant digits: 0.05, 0.0083."""
    return f"{value:.2g}"

"""Pure helpers of the dashboard: chart scales and colours, the timeline's buckets, the
evaluator histogram, the focus arm, and the filters' query string (no database)."""

from __future__ import annotations

import random
import re
from datetime import datetime

import pytest

from app.analysis import ArmPreference, ArmSpeed, PairwiseResult, SpeedPreference
from app.analysis import speed as speed_module
from app.dashboard import charts, service
from app.dashboard.schemas import Filters
from app.web.pages import STATIC_DIR


def result(rate: float | None, n: int = 100, low: float = 0.4, high: float = 0.6) -> PairwiseResult:
    wins = round((rate or 0) * n)
    return PairwiseResult(
        criterion="c", theme=None, arm="a", opponent="b", wins=wins, ties=0, losses=n - wins,
        n_votes=n, n_decisive=n, win_rate=rate, ci_low=low, ci_high=high, confidence=0.95,
        p_value=0.01, p_holm=0.02, tie_rate=0.0,
    )  # fmt: skip


def test_win_rate_axes_zoom_to_the_widest_interval():
    assert charts.win_domain([result(0.55, low=0.5, high=0.59)]) == 0.1
    assert charts.win_domain([result(0.7, low=0.62, high=0.78)]) == 0.3
    assert charts.win_domain([result(None)]) == 0.1
    assert charts.position(0.5, 0.1) == 50 and charts.position(0.6, 0.1) == pytest.approx(100)
    assert charts.position(0.2, 0.1) == 0  # clipped
    assert [label for _, label in charts.ticks(0.2)] == ["30%", "40%", "50%", "60%", "70%"]


@pytest.mark.parametrize(
    ("rate", "n", "css"),
    [(0.5, 100, "heat-0"), (0.56, 100, "heat-p1"), (0.9, 100, "heat-p5"), (0.3, 100, "heat-m4"),
     (0.9, 5, "heat-na"), (None, 0, "heat-na")],
)  # fmt: skip
def test_heatmap_cells_are_binned_by_effect(rate, n, css):
    assert charts.heat_class(result(rate, n=n)) == css


def test_speed_chart_uses_a_log_axis_when_render_times_differ_a_lot():
    def row(arm: str, seconds: float, rate: float) -> SpeedPreference:
        speed = ArmSpeed(arm, 10, seconds, seconds, 4, 2**30)
        preference = ArmPreference("c", arm, 50, 0, 50, 100, rate, rate - 0.05, rate + 0.05)
        return SpeedPreference(arm, "c", speed, preference)

    layout = charts.speed_layout([row("fast", 0.2, 0.45), row("slow", 9.0, 0.55)])
    assert layout.log and [p.arm for p in layout.points] == ["fast", "slow"]
    fast, slow = layout.points
    assert fast.x < slow.x and fast.y < 50 < slow.y and fast.low < fast.y < fast.high
    linear = charts.speed_layout([row("a", 1.0, 0.5), row("b", 2.0, 0.5)])
    assert not linear.log and linear.x_ticks[0][1] == "0.50 s"
    unrendered = row("a", 1.0, 0.5)
    unrendered = SpeedPreference(
        "a", "c", ArmSpeed("a", 0, None, None, None, None), unrendered.preference
    )
    assert charts.speed_layout([unrendered, row("b", 1.0, 0.5)]).missing == ("a",)


def test_timeline_regroups_minutes_into_at_most_48_buckets():
    minutes = {"2025-03-01T09:00": 2, "2025-03-01T09:59": 1, "2025-03-03T10:30": 4}
    t = service.timeline(minutes, votes_per_trial=6)
    assert t.bucket_minutes == 180 and len(t.buckets) <= 48
    assert sum(b.trials for b in t.buckets) == 7 and t.buckets[-1].cumulative_votes == 42
    assert t.buckets[0].start == datetime(2025, 3, 1, 9, 0)
    assert service.timeline({"2025-03-01T09:07": 1}, votes_per_trial=3).bucket_minutes == 1
    weeks = service.timeline({"2025-01-01T00:00": 1, "2025-06-01T00:00": 1}, votes_per_trial=1)
    assert weeks.label == "week" and weeks.buckets[0].start.weekday() == 0
    assert service.timeline({}, votes_per_trial=6).buckets == ()


def test_evaluator_histogram_covers_everyone():
    bins = service._histogram([1, 2, 5, 20, 22, 22], not_started=3, top=22)
    assert bins[0] == ("0", 3) and bins[-1] == ("22+", 2)
    assert sum(n for _, n in bins) == 9


def test_focus_arm_is_the_fastest_unless_chosen():
    speed = [ArmSpeed("slow", 1, 2.0, None, None, None), ArmSpeed("fast", 1, 0.4, None, None, None)]
    assert service.focus_arm(None, arms=["slow", "fast"], speed=speed) == "fast"
    assert service.focus_arm("slow", arms=["slow", "fast"], speed=speed) == "slow"
    assert service.focus_arm("other", arms=["slow", "fast"], speed=[]) == "slow"
    assert service.oriented_pairs(["a", "b", "c"], "b") == [("b", "a"), ("a", "c"), ("b", "c")]


def test_no_arm_is_the_fastest_while_one_has_no_render_cost():
    """An arm imported without cost columns might be the fastest: the first arm is the focus,
    and nothing is called the fastest (it used to be the fastest of the arms with a cost)."""
    arms = ["imported", "slow", "fast"]
    speed = [
        ArmSpeed("imported", 6, None, None, None, None),
        ArmSpeed("slow", 6, 2.0, None, None, None),
        ArmSpeed("fast", 6, 0.4, None, None, None),
    ]
    assert speed_module.unpriced_arms(speed) == ("imported",)
    assert speed_module.fastest_arm(speed) is None
    assert service.focus_arm(None, arms=arms, speed=speed) == "imported"
    assert speed_module.fastest_arm(speed[1:]) == "fast"
    assert speed_module.fastest_arm([]) is None


def speed_row(arm: str, seconds: float, rate: float, half: float = 0.1) -> SpeedPreference:
    speed = ArmSpeed(arm, 10, seconds, None, 4, 2**30)
    low, high = max(0.0, rate - half), min(1.0, rate + half)
    return SpeedPreference(arm, "c", speed, ArmPreference("c", arm, 5, 0, 5, 10, rate, low, high))


def test_each_arm_of_the_speed_chart_has_its_own_colour():
    arms = ["zebra-arm", "quokka-arm", "narwhal-arm"]
    rows = [speed_row("narwhal-arm", 9.5, 0.7), speed_row("zebra-arm", 21, 0.6),
            speed_row("quokka-arm", 2.4, 0.2)]  # fmt: skip
    colours = {p.arm: p.colour for p in charts.speed_layout(rows, arms=arms).points}
    assert colours == {"zebra-arm": "arm-c0", "quokka-arm": "arm-c1", "narwhal-arm": "arm-c2"}
    css = (STATIC_DIR / "dashboard.css").read_text()
    palette = [re.search(rf"\.arm-c{i} {{ --c: (#[0-9a-f]{{6}}); }}", css) for i in range(8)]
    assert all(palette) and len({m.group(1) for m in palette}) == charts.N_ARM_COLOURS == 8


def label_boxes(layout, width: float, char: float = 8.8):  # type: ignore[no-untyped-def]
    """Each label's box in px on a chart `width` px wide (8.3 to 8.8 px per character of the
    13 px bold label, measured in Chromium), from the template's placement."""
    boxes = {}
    for p in layout.points:
        x = p.x / 100 * width + charts.label_dx(p)
        text = char * len(p.arm)
        left = x if p.label_anchor == "start" else x - text
        y = charts.SPEED_HEIGHT * charts.plot_y(p.y) / 100 + p.label_dy
        boxes[p.arm] = (left, y - 6.5, left + text, y + 6.5)
    return boxes


def collisions(layout, width: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Labels that cross a whisker or dot (their own included), another label, or the edge."""
    height = charts.SPEED_HEIGHT / 100
    boxes = label_boxes(layout, width)
    found = []
    for arm, (left, top, right, bottom) in boxes.items():
        if left < 0 or right > width:
            found.append(f"{arm} leaves the chart")
        for q in layout.points:
            x = q.x / 100 * width
            high, low, y = (height * charts.plot_y(v) for v in (q.high, q.low, q.y))
            if left < x + 1 and x - 1 < right and top < low and high < bottom:
                found.append(f"{arm} crosses the whisker of {q.arm}")
            if left < x + 7 and x - 7 < right and top < y + 7 and y - 7 < bottom:
                found.append(f"{arm} covers the dot of {q.arm}")
        for other, (l2, t2, r2, b2) in boxes.items():
            if other != arm and left < r2 and l2 < right and top < b2 and t2 < bottom:
                found.append(f"{arm} overlaps {other}")
    return found


def test_speed_labels_clear_every_whisker_dot_and_label():
    """Three arms at random speeds and win rates (2,000 layouts, a third with nearly equal
    render times), drawn on a phone's and a laptop's chart: no label crosses anything."""
    rng = random.Random(12)
    names = ["zebra-arm", "quokka-arm", "narwhal-arm"]
    for _ in range(2000):
        close = rng.random() < 1 / 3
        rows = [
            speed_row(n, rng.uniform(2, 2.6) if close else rng.uniform(0.5, 40),
                      rng.uniform(0.15, 0.85), rng.uniform(0.03, 0.2))
            for n in names
        ]  # fmt: skip
        layout = charts.speed_layout(rows)
        for width in (300, 330, 527, 900):
            assert collisions(layout, width) == [], (width, rows)


def test_filters_read_blank_fields_as_unset_and_write_only_what_is_set():
    filters = Filters.model_validate({"arm": "", "margin": "", "exclude_ties": "1", "x": "y"})
    assert filters == Filters(exclude_ties=True)
    assert filters.query() == "exclude_ties=1"
    assert Filters(margin=5, arm="fast").query() == "arm=fast&margin=5.0"
    assert Filters(exclude_flagged_trials=True, margin=2.5).describe() == [
        "flagged trials excluded", "non-inferiority margin 2.5 pp",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        Filters(margin=60)
    assert charts.power_text(None) == "—"

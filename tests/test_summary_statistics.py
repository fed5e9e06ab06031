"""The summary's statistics on SQLite and PostgreSQL, votes cast through the real rating flow:
every statistic (Krippendorff's alpha, repeat consistency, evaluator quality, counts) is computed
from exactly the votes the filters keep, in the JSON export, on the dashboard and from the command
line; and the same votes give the same statistics whatever the order in which the study file
lists its arms, prompts and criteria."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from typing import Any

import krippendorff
import numpy as np
import pytest

from app.dashboard.schemas import Filters
from app.exports import service as exports_service
from app.studies import service as studies_service
from app.studies.models import Study
from app.studies.studyfile import AnalysisSpec
from tests.kit.admin import log_in
from tests.kit.cli import run
from tests.kit.studies import PROMPT_TEXTS, listed_study
from tests.kit.votes import cast_votes, copy_votes, flagged_evaluator_ids

ARMS = ("zebra-arm", "quokka-arm", "narwhal-arm")
FAVORED = "quokka-arm"
CRITERIA = ("video_text_relevance", "motion_naturalness", "overall_quality")
RATES = {"video_text_relevance": 0.75, "motion_naturalness": 0.5, "overall_quality": 0.3}
PROMPTS = tuple(PROMPT_TEXTS[:5])
FILTERS = {
    "none": Filters(arm=FAVORED),
    "trials": Filters(arm=FAVORED, exclude_flagged_trials=True),
    "evaluators": Filters(arm=FAVORED, exclude_flagged_evaluators=True),
}


def voted_study(session, settings, *, slug: str = "listed") -> Study:  # type: ignore[no-untyped-def]
    """3 arms x 5 prompts (15 matchups), two repeats each; 9 evaluators rate everything: two
    answer everything too fast (flagged evaluators), the others hurry on one of their 17 trials
    (flagged, as is a repeat answered differently: at most 3 of 17, under the flagged-evaluator
    share). Repeats mostly get the first answers again."""
    study = listed_study(
        session, settings, slug=slug, arms=ARMS, prompts=PROMPTS, criteria=CRITERIA,
        open_enrollment=True, repeat_trials=2, fast_trial_seconds=1.0,
    )  # fmt: skip
    cast_votes(
        session, settings, study, favored=FAVORED, rates=RATES, evaluators=9, careless=2,
        fast=lambda i, n: n == 4, steady=0.7,
    )  # fmt: skip
    session.rollback()
    return study


def summary(session, study: Study, filters: Filters) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    text = "".join(
        exports_service.export_chunks(
            session=session, study=study, kind="summary.json", filters=filters
        )
    )
    session.rollback()
    return json.loads(text)


# --- the filters ----------------------------------------------------------------------------------


def vote_rows(session, study: Study) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    columns = exports_service.VOTE_COLUMNS
    rows = [
        dict(zip(columns, values, strict=True))
        for values in exports_service.vote_rows(session=session, study=study)
    ]
    session.rollback()
    return rows


def kept(rows: list[dict[str, Any]], how: str, flagged_evaluators: set[Any]) -> list[dict]:
    if how == "trials":
        return [r for r in rows if r["flagged"] != "true"]
    if how == "evaluators":
        return [r for r in rows if r["evaluator_id"] not in flagged_evaluators]
    return rows


def expected_agreement(rows: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    """Alpha from the `krippendorff` package over first showings, each matchup coded both ways
    round (the matchup's arms in name order, and reversed); repeat consistency over the repeats
    whose first showing is among the rows."""
    mine = [r for r in rows if r["criterion"] == criterion]
    first = {(r["evaluator_id"], r["matchup_id"]): r for r in mine if r["is_repeat"] == "false"}
    same = [
        first[(r["evaluator_id"], r["matchup_id"])]["winner"] == r["winner"]
        for r in mine
        if r["is_repeat"] == "true" and (r["evaluator_id"], r["matchup_id"]) in first
    ]
    coders = sorted({e for e, _ in first})
    units = sorted({m for _, m in first})
    data = np.full((len(coders), len(units)), np.nan)
    for (e, m), r in first.items():
        low = min(r["left_arm"], r["right_arm"])
        value = 1 if r["winner"] == "tie" else 0 if r["winner"] == low else 2
        data[coders.index(e), units.index(m)] = value
    raters = Counter(m for _, m in first)
    return {
        "alpha": krippendorff.alpha(
            reliability_data=np.hstack([data, 2 - data]), level_of_measurement="nominal"
        ),
        "n_units": sum(1 for n in raters.values() if n >= 2),
        "repeat_consistency": sum(same) / len(same) if same else None,
        "n_repeat_comparisons": len(same),
    }


def expected_quality(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_evaluator: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_evaluator[r["evaluator_id"]].append(r)
    out = {}
    for evaluator, mine in by_evaluator.items():
        first = {(r["matchup_id"], r["criterion"]): r for r in mine if r["is_repeat"] == "false"}
        same = [
            first[(r["matchup_id"], r["criterion"])]["winner"] == r["winner"]
            for r in mine
            if r["is_repeat"] == "true" and (r["matchup_id"], r["criterion"]) in first
        ]
        sides = Counter(r["choice"] for r in mine)
        out[str(evaluator)] = {
            "n_votes": len(mine),
            "n_trials": len({r["trial_id"] for r in mine}),
            "n_flagged_trials": len({r["trial_id"] for r in mine if r["flagged"] == "true"}),
            "n_repeat_comparisons": len(same),
            "consistency": sum(same) / len(same) if same else None,
            "left_rate": sides["left"] / (sides["left"] + sides["right"]),
            "tie_rate": sides["tie"] / len(mine),
        }
    return out


def test_every_statistic_comes_from_the_votes_the_filters_keep(
    session, settings, client, database_url, tmp_path
):
    study = voted_study(session, settings)
    rows = vote_rows(session, study)
    flagged_evaluators = set(flagged_evaluator_ids(session, study))
    assert len(flagged_evaluators) == 2
    stray = {r["trial_id"] for r in rows if r["flagged"] == "true"} - {
        r["trial_id"] for r in rows if r["evaluator_id"] in flagged_evaluators
    }
    assert stray  # flagged trials of evaluators who are not flagged: the two filters differ

    repeat_pairs = {}
    for how, filters in FILTERS.items():
        mine = kept(rows, how, flagged_evaluators)
        doc = summary(session, study, filters)
        tables = doc["tables"]
        agreement = {r["criterion"]: r for r in tables["agreement"]}
        assert set(agreement) == set(CRITERIA)
        for criterion in CRITERIA:
            expected = expected_agreement(mine, criterion)
            got = agreement[criterion]
            assert got["alpha"] == pytest.approx(expected["alpha"], abs=1e-12), (how, criterion)
            assert got["n_units"] == expected["n_units"]
            assert got["n_repeat_comparisons"] == expected["n_repeat_comparisons"], (how, criterion)
            assert got["repeat_consistency"] == pytest.approx(expected["repeat_consistency"])
        repeat_pairs[how] = sum(r["n_repeat_comparisons"] for r in agreement.values())
        quality = {r["evaluator"]: r for r in tables["evaluator_quality"]}
        expected_q = expected_quality(mine)
        assert set(quality) == set(expected_q), how
        for evaluator, values in expected_q.items():
            for name, value in values.items():
                assert quality[evaluator][name] == pytest.approx(value), (how, evaluator, name)
        first_votes = Counter(r["criterion"] for r in mine if r["is_repeat"] == "false")
        for bt in tables["bradley_terry"]:
            assert bt["n_votes"] == first_votes[bt["criterion"]]
        assert doc["n_votes"] == sum(first_votes.values())
    # each filter leaves out repeat pairs, and not the same ones
    assert repeat_pairs["none"] > repeat_pairs["trials"] > 0
    assert repeat_pairs["none"] > repeat_pairs["evaluators"] > 0
    assert repeat_pairs["trials"] != repeat_pairs["evaluators"]

    # the dashboard's robustness panel and the command line read the same numbers
    log_in(client)
    expected = expected_agreement(kept(rows, "trials", flagged_evaluators), "overall_quality")
    html = client.get(
        f"/admin/studies/{study.slug}/dashboard/advanced",
        params={"arm": FAVORED, "exclude_flagged_trials": "1"},
    ).text
    section = html[html.index("Inter-rater agreement") :]
    row = section[section.index("Overall quality</bdi></th>") :].split("</tr>")[0]
    assert f"{expected['alpha']:.3f}</td>" in row
    assert f"n={expected['n_repeat_comparisons']}</span>" in row
    result = run(
        "export", "summary", study.slug, "--format", "json", "--exclude-flagged-evaluators",
        "--arm", FAVORED, database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cli = {r["criterion"]: r for r in json.loads(result.stdout)["tables"]["agreement"]}
    mine = kept(rows, "evaluators", flagged_evaluators)
    for criterion in CRITERIA:
        expected = expected_agreement(mine, criterion)
        assert cli[criterion]["n_repeat_comparisons"] == expected["n_repeat_comparisons"]
        assert cli[criterion]["alpha"] == pytest.approx(expected["alpha"], abs=1e-12)


# --- the order of arms, prompts and criteria ------------------------------------------------------


def canonical(
    table: str, row: dict[str, Any], evaluators: dict[str, str]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A summary row keyed by what it is about, arm pairs in name order (an (arm, opponent) row
    read the other way round: wins and losses swap, rates and intervals mirror)."""
    row = dict(row)
    if table == "evaluator_quality":
        row["evaluator"] = evaluators[row["evaluator"]]
    if row.get("opponent") is not None and row["arm"] > row["opponent"]:
        row["arm"], row["opponent"] = row["opponent"], row["arm"]
        if "wins" in row:
            row["wins"], row["losses"] = row["losses"], row["wins"]
        for name in ("win_rate", "observed_rate"):
            if row.get(name) is not None:
                row[name] = 1 - row[name]
        if row.get("effect") is not None:
            row["effect"] = -row["effect"]
        if row.get("ci_low") is not None:
            row["ci_low"], row["ci_high"] = 1 - row["ci_high"], 1 - row["ci_low"]
        if table == "verdicts":
            row["lower"], row["upper"] = 1 - row["upper"], 1 - row["lower"]
            turned = {"superior": "inferior", "inferior": "superior"}
            if row["hypothesis"] == "superiority":
                row["status"] = turned.get(row["status"], row["status"])
    names = ("criterion", "theme", "arm", "opponent", "evaluator")
    return (table, *(row.get(n) for n in names)), row


def canonical_tables(doc: dict[str, Any], evaluators: dict[str, str]) -> dict[tuple, dict]:
    out = {}
    for table, rows in doc["tables"].items():
        for row in rows:
            key, value = canonical(table, row, evaluators)
            assert key not in out, key
            out[key] = value
    return out


def assert_same_rows(a: dict[tuple, dict], b: dict[tuple, dict]) -> None:
    assert set(a) == set(b)
    for key, row in a.items():
        assert set(row) == set(b[key]), key
        for name, value in row.items():
            other = b[key][name]
            if isinstance(value, float) and isinstance(other, float):
                assert math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-9), (key, name)
            else:
                assert value == other, (key, name)


def warnings(doc: dict[str, Any]) -> set[str]:
    """The warnings, a list of criteria read as a set (it follows the display order)."""
    out = set()
    for warning in doc["warnings"]:
        head, sep, rest = warning.partition(" side on ")
        if sep:
            names, _, tail = rest.partition(" (")
            warning = head + sep + ", ".join(sorted(names.split(", "))) + " (" + tail
        out.add(warning)
    return out


@pytest.mark.parametrize(
    ("arms", "prompts", "criteria"),
    [
        # the first two arms swapped: one of three pairs turns round
        (("quokka-arm", "zebra-arm", "narwhal-arm"), PROMPTS[::-1], CRITERIA[::-1]),
        # two of three pairs turn round, among them the pair without the focus arm
        (
            ("narwhal-arm", "zebra-arm", "quokka-arm"),
            PROMPTS[2:] + PROMPTS[:2],
            CRITERIA[1:] + CRITERIA[:1],
        ),
    ],
)  # fmt: skip
def test_the_same_votes_give_the_same_statistics_whatever_the_listing_order(
    session, settings, arms, prompts, criteria
):
    study = voted_study(session, settings)
    relisted = listed_study(
        session, settings, slug="relisted", arms=arms, prompts=prompts, criteria=criteria,
        open_enrollment=True, repeat_trials=2, fast_trial_seconds=1.0,
    )  # fmt: skip
    evaluators = {str(a): str(b) for a, b in copy_votes(session, study, relisted).items()}
    # the verdicts test the plan's focus arm, which (no render cost recorded) would otherwise be
    # each study's first arm: both plans name the same one
    for each in (study, relisted):
        studies_service.set_analysis(session=session, study=each, spec=AnalysisSpec(focus=FAVORED))
    session.commit()
    assert [arm.name for arm in relisted.arms] == list(arms)
    assert [p.text for p in relisted.prompts] == list(prompts)
    assert relisted.criterion_keys == list(criteria)
    identity = {b: b for b in evaluators.values()}
    for how, filters in FILTERS.items():
        one, other = summary(session, study, filters), summary(session, relisted, filters)
        assert one["n_votes"] == other["n_votes"] > 0
        assert one["focus_arm"] == other["focus_arm"] == FAVORED
        assert warnings(one) == warnings(other)
        alphas = [r["alpha"] for r in one["tables"]["agreement"]]
        assert all(a is not None for a in alphas), how
        assert_same_rows(
            canonical_tables(one, evaluators), canonical_tables(other, identity)
        )  # every table: pairwise, per theme, bootstrap, power, position bias, BT, agreement...

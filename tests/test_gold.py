"""Gold pairs (issue 16) on SQLite and PostgreSQL: twins made once from a study's own clips (same
frames, delays and size, never a clip of their own), shown at about `gold_rate` of an evaluator's
trials and never first, blind (the same JSON and media as any pair), scored, flagging and
marking for rejection (after two failures) an evaluator who fails them, and left out of every
preference statistic: the live dashboard, summary.json, the verdicts, the stop check's budget
and the matchup counters."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
from collections import Counter
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.clips.gif import gif_info
from app.clips.models import Clip
from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters
from app.db import utcnow
from app.exports import service as exports_service
from app.main import create_app
from app.rating import enrollment, gold, twins, votes
from app.rating import service as rating_service
from app.rating.models import Evaluator, GoldKind, GoldPair, Matchup, Trial, Vote
from app.storage import get_storage
from app.studies.studyfile import StudyFileError, parse_study
from tests.kit.config import configured
from tests.kit.rating import assert_counters_match_trials, join, link, store_answer
from tests.kit.studies import rating_study, study_toml
from tests.kit.votes import cast_votes

CRITERIA = [
    "video_text_relevance",
    "appearance_distortion",
    "motion_naturalness",
    "overall_quality",
]
QUOTA = 8  # regular trials per evaluator
RATE = 0.2  # gold trials: round(8 * 0.2 / 0.8) = 2 of 10
SIDES = ("left", "right")


def gold_study(session, settings, *, slug="gold", prompts=10, twins_now=True, **rating):  # type: ignore[no-untyped-def]
    rating.setdefault("trials_per_evaluator", QUOTA)
    rating.setdefault("gold_rate", RATE)
    rating.setdefault("open_enrollment", True)
    study = rating_study(session, settings, slug=slug, prompts=prompts, criteria=CRITERIA, **rating)
    if twins_now:
        make_twins(session, settings, study)
    return study


def make_twins(session, settings, study) -> int:  # type: ignore[no-untyped-def]
    made = twins.make_twins(session=session, storage=get_storage(settings), study=study)
    session.commit()
    return made


def twin_side(trial: Trial) -> str:
    """The side a gold trial shows its twin on (the original is the pair's clip A)."""
    return "right" if trial.a_on_left else "left"


def original_side(trial: Trial) -> str:
    return "left" if trial.a_on_left else "right"


def rate_through_service(session, study, evaluator, answer, *, start=None):  # type: ignore[no-untyped-def]
    """The evaluator answers every trial given (`answer(trial) -> votes`) until done; the
    results in order. Each answer 5 s after its trial is shown."""
    clock = start or utcnow() - timedelta(hours=1)
    results = []
    while True:
        clock += timedelta(seconds=10)
        result = rating_service.current_trial(
            session=session, study=study, evaluator=evaluator, now=clock
        )
        session.commit()
        if result.status != "trial":
            return results
        results.append(result)
        store_answer(
            session,
            study,
            evaluator,
            trial_id=result.trial.id,
            votes=answer(result.trial),
            now=clock + timedelta(seconds=5),
        )
        session.commit()


def new_evaluator(session, settings, study, name):  # type: ignore[no-untyped-def]
    joined = enrollment.join(
        session=session,
        secret=settings.resolved_secret_key(),
        study=study,
        external_id=name,
    )
    session.commit()
    return joined.evaluator


# --- the study file ---------------------------------------------------------------------------


def parse(rating: dict, criteria: list[str] | None = None):  # type: ignore[no-untyped-def, type-arg]
    return parse_study(
        toml_text=study_toml(slug="g", criteria=criteria, rating=rating),
        toml_name="study.toml",
        prompts_bytes=b"prompt,theme\na cat,t\na dog,t\n",
        prompts_name="prompts.csv",
    )


def test_study_file_gold_rate_and_threshold_are_checked_with_their_place():
    assert parse({"gold_rate": 0.1}).rating.gold_rate == 0.1
    assert parse({}).rating.gold_rate == 0.0  # off unless asked for
    assert parse({}).rating.gold_min_accuracy == 0.7
    with pytest.raises(StudyFileError) as too_high:
        parse({"gold_rate": 0.6})
    assert "study.toml:" in str(too_high.value) and "rating.gold_rate" in str(too_high.value)
    assert "less than or equal to 0.5" in str(too_high.value)
    with pytest.raises(StudyFileError) as accuracy:
        parse({"gold_min_accuracy": 1.5})
    assert "rating.gold_min_accuracy" in str(accuracy.value)
    with pytest.raises(StudyFileError) as unscored:
        parse({"gold_rate": 0.1}, criteria=["overall_quality"])
    problem = unscored.value.problems[0]
    assert (problem.file, problem.column) == ("study.toml", 13)  # `gold_rate = 0.1`: its value
    assert (
        problem.line
        == study_toml(slug="g", rating={"gold_rate": 0.1}).splitlines().index("gold_rate = 0.1") + 1
    )
    assert "gold pairs score only the criteria" in problem.message
    assert "add one to criteria, or remove gold_rate" in problem.message


# --- twins ------------------------------------------------------------------------------------


def test_twins_are_made_once_from_the_clips_like_them_and_are_no_clips(session, settings):
    study = gold_study(session, settings, twins_now=False)
    clips_before = session.scalar(select(func.count(Clip.id)))
    matchups_before = session.scalar(select(func.count(Matchup.id)))
    made = make_twins(session, settings, study)
    clips = {c.id: c for c in session.scalars(select(Clip))}
    pairs = session.scalars(select(GoldPair).where(GoldPair.study_id == study.id)).all()
    # Every clip gets one pair of each kind the criteria score (all three here).
    assert made == len(pairs) == 3 * len(clips)
    assert Counter(p.kind for p in pairs) == dict.fromkeys(GoldKind, len(clips))
    storage = get_storage(settings)
    for pair in pairs:
        original = clips[pair.clip_id]
        assert pair.prompt_id == original.prompt_id
        if pair.kind == GoldKind.mismatched:
            other = clips[pair.other_clip_id]
            assert other.arm_id == original.arm_id and other.prompt_id != original.prompt_id
            assert pair.storage_key is None
            continue
        twin, source = storage.read(pair.storage_key), storage.read(original.storage_key)
        made_info, source_info = gif_info(twin), gif_info(source)
        for key in ("frames", "width", "height", "durations_ms", "duration_ms", "loop"):
            assert made_info[key] == source_info[key], (pair.kind, key)
        assert (pair.num_frames, pair.width, pair.height) == (
            source_info["frames"], source_info["width"], source_info["height"],
        )  # fmt: skip
        assert twin != source and pair.size_bytes == len(twin)
    # Once: nothing more to make; twins are no clips and make no matchups.
    assert make_twins(session, settings, study) == 0
    assert session.scalar(select(func.count(Clip.id))) == clips_before
    assert session.scalar(select(func.count(Matchup.id))) == matchups_before


def test_the_web_process_makes_the_twins_off_request(session, settings):
    """Each web process makes the missing twins on its analysis lane, every
    VIDARENA_STOP_CHECK_SECONDS (no request, no render worker needed)."""
    gold_study(session, settings, slug="loop", prompts=3, twins_now=False)
    wanted = 3 * 3 * 2  # three kinds of each of 3 prompts x 2 arms
    made = 0
    with TestClient(create_app(configured(settings, stop_check_seconds=0.1))):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and made < wanted:
            made = session.scalar(select(func.count(GoldPair.id)))
            session.rollback()
            time.sleep(0.1)
    assert made == wanted


def test_no_twins_without_gold_rate(session, settings):
    study = rating_study(session, settings, slug="nogold", prompts=3, criteria=CRITERIA)
    assert make_twins(session, settings, study) == 0


def test_frozen_twin_holds_one_frame_and_degraded_twin_is_blurred():
    import numpy as np
    from PIL import Image, ImageSequence

    from tests.kit.media import encoded_gif_bytes

    source = encoded_gif_bytes(3, frames=8, size=48, fps=8)

    def frames(data: bytes) -> list:  # type: ignore[type-arg]
        with Image.open(io.BytesIO(data)) as image:
            return [
                np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(image)
            ]

    original, frozen, degraded = (
        frames(source),
        frames(twins.frozen_twin(source)),
        frames(twins.degraded_twin(source)),
    )
    assert len(original) == len(frozen) == len(degraded) == 8
    moving = np.mean([np.abs(a - b).mean() for a, b in itertools.pairwise(original)])
    still = np.mean([np.abs(a - b).mean() for a, b in itertools.pairwise(frozen)])
    assert still < moving / 10  # frozen: no motion left, but frames not merged
    # Degraded: the fine detail of random pixels is gone (neighbouring pixels alike).
    detail = np.mean([np.abs(np.diff(f, axis=1)).mean() for f in original])
    blurred = np.mean([np.abs(np.diff(f, axis=1)).mean() for f in degraded])
    assert blurred < detail / 2
    # Neither twin outgrows its original, so the pair's padding (to the larger clip's size
    # class) serves it at the original's size: a gold pair cannot be spotted by its bytes.
    assert len(twins.degraded_twin(source)) <= len(source)
    assert len(twins.frozen_twin(source)) <= len(source)


# --- assignment -------------------------------------------------------------------------------


def test_gold_trials_come_at_the_rate_never_first_and_count_towards_nothing(session, settings):
    study = gold_study(session, settings)
    plan = rating_service.planned_trials(session=session, study=study)
    assert plan == QUOTA + 2  # gold trials come on top of the quota
    positions: list[tuple[int, ...]] = []
    regular_total = gold_total = 0
    for i in range(12):
        evaluator = new_evaluator(session, settings, study, f"rate-{i}")
        results = rate_through_service(
            session, study, evaluator, lambda t: dict.fromkeys(CRITERIA, "left")
        )
        assert [r.progress.total for r in results] == [plan] * plan  # known from the start
        trials = [r.trial for r in results]
        golden = tuple(t.position for t in trials if t.gold_pair_id is not None)
        assert trials[0].gold_pair_id is None  # never the first pair
        assert len(golden) == 2 and len(trials) == plan
        assert all(t.matchup_id is None for t in trials if t.gold_pair_id is not None)
        assert len({t.gold_pair_id for t in trials} - {None}) == 2  # no gold pair twice
        positions.append(golden)
        gold_total += len(golden)
        regular_total += len(trials) - len(golden)
    assert gold_total / (gold_total + regular_total) == pytest.approx(RATE)
    assert len(set(positions)) > 3  # jittered per evaluator, not a fixed period
    assert_counters_match_trials(session)  # gold trials changed no matchup counter
    # Each matchup covered as evenly as without gold: 12 x 8 regular trials over 10 matchups.
    live = session.scalars(select(Matchup.live_trials).where(Matchup.study_id == study.id)).all()
    assert sum(live) == 12 * QUOTA and max(live) - min(live) <= 1


def test_without_gold_pairs_yet_evaluators_rate_regular_pairs(session, settings):
    study = gold_study(session, settings, slug="late", twins_now=False)
    evaluator = new_evaluator(session, settings, study, "early")
    results = rate_through_service(
        session, study, evaluator, lambda t: dict.fromkeys(CRITERIA, "left")
    )
    assert len(results) == QUOTA and all(r.trial.gold_pair_id is None for r in results)
    assert session.get(Evaluator, evaluator.id).completed_at is not None


# --- scoring ----------------------------------------------------------------------------------


def test_an_evaluator_who_picks_the_twins_is_flagged_and_then_marked_for_rejection(
    admin, session, settings
):
    study = gold_study(session, settings, slug="scored")
    careless = new_evaluator(session, settings, study, "careless")
    careful = new_evaluator(session, settings, study, "careful")
    failures = []

    def pick_twin(trial: Trial) -> dict[str, str]:
        if trial.gold_pair_id is None:
            return dict.fromkeys(CRITERIA, "left")
        failures.append(gold.failed_checks(session=session, evaluator_id=careless.id))
        session.rollback()
        return dict.fromkeys(CRITERIA, twin_side(trial))

    def pick_original(trial: Trial) -> dict[str, str]:
        if trial.gold_pair_id is None:
            return dict.fromkeys(CRITERIA, "right")
        return dict.fromkeys(CRITERIA, original_side(trial))

    rate_through_service(session, study, careless, pick_twin)
    rate_through_service(session, study, careful, pick_original)
    assert failures == [0, 1]  # before each of its two gold trials
    assert gold.failed_checks(session=session, evaluator_id=careless.id) == 2
    assert gold.failed_checks(session=session, evaluator_id=careful.id) == 0
    scores = gold.scores(session=session, study_id=study.id, criteria=CRITERIA, min_accuracy=0.7)
    assert (scores[careless.id].accuracy, scores[careless.id].flagged) == (0.0, True)
    assert scores[careless.id].reject
    assert (scores[careful.id].accuracy, scores[careful.id].flagged) == (1.0, False)
    assert not scores[careful.id].reject
    # The admin evaluators page says so.
    page = admin.get(f"/admin/studies/{study.slug}/evaluators")
    assert page.status_code == 200
    rows = {
        ev: page.text.split(f'data-evaluator="{ev}"')[1].split("</tr>")[0]
        for ev in (careless.id, careful.id)
    }
    assert "marked for rejection" in rows[careless.id] and "flagged" in rows[careless.id]
    assert "marked for rejection" not in rows[careful.id] and "flagged" not in rows[careful.id]
    # The dashboard counts them as flagged; its filter leaves out their votes.
    cache = dashboard_service.DashboardCache()
    every = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    kept = dashboard_service.live(
        session=session,
        study=study,
        filters=Filters(exclude_flagged_evaluators=True),
        cache=cache,
    )
    session.rollback()
    assert every.progress.flagged == 1
    # The dashboard's trials are regular ones: its plan leaves out the gold pairs, as its counts.
    assert every.progress.planned_trials == QUOTA
    assert every.progress.answered_trials == 2 * QUOTA
    by_criterion = {r.criterion: r for r in every.summary.overall}
    without = {r.criterion: r for r in kept.summary.overall}
    for criterion in CRITERIA:
        both = by_criterion[criterion].wins + by_criterion[criterion].losses
        one = without[criterion].wins + without[criterion].losses
        assert both == 2 * QUOTA and one == QUOTA  # the careless evaluator's 8 are gone


def test_one_failed_check_is_not_enough_to_reject(session, settings):
    study = gold_study(session, settings, slug="once")
    evaluator = new_evaluator(session, settings, study, "once")
    seen = []

    def fail_first(trial: Trial) -> dict[str, str]:
        if trial.gold_pair_id is None:
            return dict.fromkeys(CRITERIA, "left")
        seen.append(trial.id)
        side = twin_side(trial) if len(seen) == 1 else original_side(trial)
        return dict.fromkeys(CRITERIA, side)

    rate_through_service(session, study, evaluator, fail_first)
    score = gold.scores(session=session, study_id=study.id, criteria=CRITERIA, min_accuracy=0.7)
    assert score[evaluator.id].failed == 1 and score[evaluator.id].flagged  # 50% < 70%
    assert not score[evaluator.id].reject


def test_only_the_criteria_a_kind_scores_count_and_ties_are_wrong():
    assert gold.scored(GoldKind.degraded, CRITERIA) == ("appearance_distortion",)
    assert gold.scored(GoldKind.frozen, CRITERIA) == ("motion_naturalness",)
    assert gold.scored(GoldKind.mismatched, CRITERIA) == ("video_text_relevance",)
    right = {
        "appearance_distortion": "left",
        "overall_quality": "right",
        "motion_naturalness": "tie",
    }
    assert gold.is_correct(kind="degraded", criteria=CRITERIA, answers=right, a_on_left=True)
    assert not gold.is_correct(kind="degraded", criteria=CRITERIA, answers=right, a_on_left=False)
    tie = {"appearance_distortion": "tie"}
    assert gold.is_correct(kind="degraded", criteria=CRITERIA, answers=tie, a_on_left=True) is False
    assert (
        gold.is_correct(kind="frozen", criteria=["overall_quality"], answers=tie, a_on_left=True)
        is None
    )


# --- blinding ---------------------------------------------------------------------------------


def shape(value):  # type: ignore[no-untyped-def]
    """The JSON's keys and value types, recursively (not its values)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


def test_a_gold_trial_looks_like_any_other_over_http(client, session, settings):
    study = gold_study(session, settings, slug="blind")
    base = link(settings, study)
    joined = join(client, base, external_id="blind-1")
    current = joined["next"]
    trials = []
    pages = {}  # trial id -> the rating page while it is the current pair
    while current["status"] == "trial":
        trial = current["trial"]
        trials.append((trial, current))
        pages[trial["id"]] = client.get(f"{base}/rate").text
        body = {"votes": dict.fromkeys(CRITERIA, "left")}
        response = client.post(f"{base}/api/trials/{trial['id']}/votes", json=body)
        assert response.status_code == 200, response.text
        current = response.json()["next"]
    assert current["status"] == "done"
    stored = {t.id: t for t in session.scalars(select(Trial))}
    golden = [(t, n) for t, n in trials if stored[t["id"]].gold_pair_id is not None]
    regular = [(t, n) for t, n in trials if stored[t["id"]].gold_pair_id is None]
    assert len(golden) == 2 and len(regular) == QUOTA
    storage = get_storage(settings)
    for trial, answer in golden:
        _, other = regular[0]
        assert shape(answer) == shape(other)  # the same keys and types, `after` included
        # The rating page: the same HTML but for the pair's own values (prompt, media URLs).
        pages_seen = []
        for trial_id in (trial["id"], regular[1][0]["id"]):
            html = pages[trial_id]
            config = json.loads(re.search(r'id="rate-config">(.*?)</script>', html).group(1))
            pages_seen.append(config)
            for shown in (config["first"]["trial"], config["first"]["after"] or {}):
                values = [shown.get("prompt")] + [shown.get(k, {}).get("url") for k in SIDES]
                for value in filter(None, values):
                    html = html.replace(value, "VALUE")
            pages_seen.append(re.sub(r'id="rate-config">.*?</script>', "", html, flags=re.S))
        gold_config, gold_html, plain_config, plain_html = pages_seen
        assert shape(gold_config) == shape(plain_config)
        assert gold_html == plain_html
        assert answer["progress"]["total"] == other["progress"]["total"]
        for side in ("left", "right"):
            url = trial[side]["url"]
            assert len(url) == len(regular[0][0][side]["url"])  # tokens of one length
            media = client.get(url)
            assert media.status_code == 200, url
            assert media.headers["content-type"] == "image/gif"
            info = gif_info(media.content)
            pair = session.get(GoldPair, stored[trial["id"]].gold_pair_id)
            source = gif_info(storage.read(session.get(Clip, pair.clip_id).storage_key))
            for key in ("frames", "width", "height", "durations_ms"):
                assert info[key] == source[key]
    session.rollback()


# --- statistics -------------------------------------------------------------------------------


def summary_document(session, study) -> dict:  # type: ignore[type-arg]
    text = "".join(exports_service.export_chunks(session=session, study=study, kind="summary.json"))
    session.rollback()
    document = json.loads(text)
    document.pop("generated_at", None)
    return document


def votes_csv(session, study) -> list[dict[str, str]]:
    text = "".join(exports_service.export_chunks(session=session, study=study, kind="votes"))
    session.rollback()
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


def add_gold_votes(session, study, *, arm_name: str) -> int:  # type: ignore[no-untyped-def]
    """Every evaluator answers three more gold trials, all of clips of `arm_name`, picking the
    original on every criterion: right answers (no flag), all for one arm."""
    arm_id = next(a.id for a in study.arms if a.name == arm_name)
    pairs = session.scalars(
        select(GoldPair)
        .join(Clip, Clip.id == GoldPair.clip_id)
        .where(GoldPair.study_id == study.id, Clip.arm_id == arm_id)
        .order_by(GoldPair.id)
    ).all()
    added = 0
    now = utcnow()
    for evaluator_id in session.scalars(
        select(Evaluator.id).where(Evaluator.study_id == study.id)
    ).all():
        last = session.scalar(
            select(func.max(Trial.position)).where(Trial.evaluator_id == evaluator_id)
        )
        for k, pair in enumerate(pairs[:3]):
            a_on_left = k % 2 == 0
            trial = Trial(
                evaluator_id=evaluator_id,
                gold_pair_id=pair.id,
                position=last + k + 1,
                a_on_left=a_on_left,
                assigned_at=now,
                shown_at=now,
                answered_at=now + timedelta(seconds=5),
            )
            session.add(trial)
            session.flush()
            for criterion in study.criterion_keys:
                session.add(
                    Vote(
                        trial_id=trial.id,
                        criterion=criterion,
                        choice="left" if a_on_left else "right",
                    )
                )
                added += 1
    session.commit()
    return added


def test_gold_answers_enter_no_preference_statistic(session, settings):
    study = gold_study(session, settings, slug="stats", twins_now=False, repeat_trials=1)
    cast_votes(
        session,
        settings,
        study,
        favored="quokka-arm",
        rates=dict.fromkeys(CRITERIA, 0.5),
        evaluators=6,
    )
    session.rollback()
    cache = dashboard_service.DashboardCache()
    before = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    session.rollback()
    document = summary_document(session, study)
    spent = session.scalar(votes.study_votes(func.count(), study_id=study.id))
    counters = session.execute(
        select(Matchup.id, Matchup.live_trials, Matchup.a_left, Matchup.open_evaluators)
    ).all()
    regular_rows = votes_csv(session, study)
    session.rollback()

    make_twins(session, settings, study)
    added = add_gold_votes(session, study, arm_name="zebra-arm")  # the arm not favoured
    assert added == 6 * 3 * len(CRITERIA)

    # Counted, they would move every zebra-arm win rate: none moves.
    after = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    cold = dashboard_service.live(
        session=session, study=study, filters=Filters(), cache=dashboard_service.DashboardCache()
    )
    session.rollback()
    for dashboard in (after, cold):
        assert dashboard.summary.overall == before.summary.overall
        assert dashboard.summary.by_theme == before.summary.by_theme
        assert dashboard.progress == before.progress
        assert dashboard.verdicts == before.verdicts
    assert summary_document(session, study) == document
    assert session.scalar(votes.study_votes(func.count(), study_id=study.id)) == spent
    assert (
        session.execute(
            select(Matchup.id, Matchup.live_trials, Matchup.a_left, Matchup.open_evaluators)
        ).all()
        == counters
    )
    session.rollback()
    assert_counters_match_trials(session)

    # votes.csv carries them, marked; every other row unchanged and marked false.
    rows = votes_csv(session, study)
    gold_rows = [r for r in rows if r["gold"] == "true"]
    assert len(gold_rows) == added
    assert [r for r in rows if r["gold"] == "false"] == [
        {**r, "gold": "false", "gold_correct": "", "gold_kind": ""} for r in regular_rows
    ]
    assert {r["gold_correct"] for r in gold_rows} == {"true"}
    assert all(
        r["left_arm"] == r["right_arm"] == r["winner"] == r["matchup_id"] == "" for r in gold_rows
    )
    assert [int(r["vote_id"]) for r in rows] == sorted(int(r["vote_id"]) for r in rows)

"""Votes with known preference rates, cast through the real rating flow (app.rating.service:
join -> current_trial -> check and store the answer, each committed), for the dashboard and
export tests; the evaluators a dashboard flags; one study's votes copied into another.

Each simulated evaluator prefers `favored` on criterion c with probability `rates[c]` among
decisive answers, answers `tie` with probability `tie_rate`, and clicks whichever side shows the
arm it prefers. "Careless" evaluators answer faster than the study's `fast_trial_seconds`, so the
rating flow flags their trials.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from app.config import Settings
from app.db import utcnow
from app.rating import enrollment, matchups
from app.rating import service as rating_service
from app.rating.models import Evaluator, Matchup, Trial, Vote
from app.studies.models import Arm, Prompt, Study
from tests.kit.rating import store_answer


@dataclass
class Cast:
    """What was cast: per criterion (favored wins, ties, favored losses) over first showings of
    the pairs the favored arm takes part in, and every vote's winner ('tie' or the arm name) by
    (trial id, criterion)."""

    favored: str = ""
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    winners: dict[tuple[int, str], str] = field(default_factory=dict)
    votes: int = 0
    first_votes: int = 0
    flagged_trials: int = 0
    evaluators: list[int] = field(default_factory=list)


def cast_votes(
    session: Session,
    settings: Settings,
    study: Study,
    *,
    favored: str,
    rates: dict[str, float],
    evaluators: int,
    tie_rate: float = 0.2,
    careless: int = 0,
    seed: int = 0,
    cast: Cast | None = None,
    max_trials: int | None = None,
    fast: Callable[[int, int], bool] | None = None,
    steady: float = 0.0,
) -> Cast:
    """`evaluators` new evaluators rate until done (or `max_trials` each); the first `careless`
    of them answer too fast (flagged when the study sets fast_trial_seconds), and so does
    evaluator i on its n-th trial (from 0) when `fast(i, n)`. With probability `steady` a
    repeat gets the evaluator's first answers again (else fresh ones)."""
    rng = random.Random(seed)
    cast = cast or Cast(favored=favored, outcomes={c: Counter() for c in study.criterion_keys})
    arm_names = {arm.id: arm.name for arm in study.arms}
    secret = settings.resolved_secret_key()
    clock = utcnow() - timedelta(hours=2)
    for i in range(evaluators):
        evaluator = enrollment.join(
            session=session, secret=secret, study=study, external_id=f"sim-{seed}-{i}"
        ).evaluator
        session.commit()
        cast.evaluators.append(evaluator.id)
        answered = 0
        first: dict[int, dict[str, str]] = {}  # matchup id -> criterion -> winner
        while max_trials is None or answered < max_trials:
            clock += timedelta(seconds=7)
            result = rating_service.current_trial(
                session=session, study=study, evaluator=evaluator, now=clock
            )
            session.commit()
            if result.status != "trial" or result.trial is None:
                break
            trial = result.trial
            hurried = i < careless or (fast is not None and fast(i, answered))
            delay = 0.3 if hurried else 4.0
            votes = _answer(trial, arm_names, favored=favored, rates=rates, tie=tie_rate, rng=rng)
            if not trial.is_repeat:
                first[trial.matchup_id] = {c: winner for c, (_, winner) in votes.items()}
            elif steady and rng.random() < steady and trial.matchup_id in first:
                votes = _again(trial, arm_names, first[trial.matchup_id])
            submitted = store_answer(
                session,
                study,
                evaluator,
                trial_id=trial.id,
                votes={c: side for c, (side, _) in votes.items()},
                now=clock + timedelta(seconds=delay),
            )
            session.commit()
            shown = {arm_names[trial.matchup.arm_a_id], arm_names[trial.matchup.arm_b_id]}
            _record(cast, trial, votes, flagged=submitted.trial.flagged, count=favored in shown)
            answered += 1
    return cast


def _answer(trial, arm_names, *, favored, rates, tie, rng):  # type: ignore[no-untyped-def]
    """criterion -> (side clicked, winner) for one trial. In a pair without `favored` (three
    arms or more) either arm wins half the decisive answers."""
    matchup = trial.matchup
    left = arm_names[matchup.arm_a_id if trial.a_on_left else matchup.arm_b_id]
    right = arm_names[matchup.arm_b_id if trial.a_on_left else matchup.arm_a_id]
    one, other = left, right
    if favored in (left, right):
        one, other = favored, (right if left == favored else left)
    answers = {}
    for criterion, rate in rates.items():
        if rng.random() < tie:
            answers[criterion] = ("tie", "tie")
            continue
        winner = one if rng.random() < (rate if one == favored else 0.5) else other
        answers[criterion] = ("left" if winner == left else "right", winner)
    return answers


def _again(trial, arm_names, winners: dict[str, str]):  # type: ignore[no-untyped-def]
    """criterion -> (side clicked, winner) giving the same winners as before."""
    matchup = trial.matchup
    left = arm_names[matchup.arm_a_id if trial.a_on_left else matchup.arm_b_id]
    return {
        c: ("tie" if w == "tie" else "left" if w == left else "right", w)
        for c, w in winners.items()
    }


def _record(cast: Cast, trial, votes, *, flagged: bool, count: bool) -> None:  # type: ignore[no-untyped-def]
    cast.votes += len(votes)
    cast.flagged_trials += int(flagged)
    for criterion, (_, winner) in votes.items():
        cast.winners[(trial.id, criterion)] = winner
        if trial.is_repeat:
            continue
        cast.first_votes += 1
        if not count:
            continue  # a pair without the favored arm
        key = "tie" if winner == "tie" else ("win" if winner == cast.favored else "loss")
        cast.outcomes[criterion][key] += 1


def flagged_evaluator_ids(session: Session, study: Study) -> list[int]:
    """Evaluators of the study whose answered trials are >= 20% flagged (the dashboard's rule)."""
    from sqlalchemy import case, func, select

    from app.dashboard.tally import is_flagged
    from app.rating.models import Trial

    rows = session.execute(
        select(
            Trial.evaluator_id,
            func.count(Trial.answered_at),
            func.sum(case((Trial.flagged, 1), else_=0)),
        )
        .join(Evaluator, Evaluator.id == Trial.evaluator_id)
        .where(Evaluator.study_id == study.id, Trial.answered_at.is_not(None))
        .group_by(Trial.evaluator_id)
    ).all()
    session.rollback()
    return sorted(e for e, answered, flagged in rows if is_flagged(answered, int(flagged or 0)))


def _matchup_keys(session: Session, study: Study) -> dict[int, tuple[str, str, str]]:
    """matchup id -> (prompt text, arm a name, arm b name)."""
    arm_a, arm_b = aliased(Arm), aliased(Arm)
    rows = session.execute(
        select(Matchup.id, Prompt.text, arm_a.name, arm_b.name)
        .join(Prompt, Prompt.id == Matchup.prompt_id)
        .join(arm_a, arm_a.id == Matchup.arm_a_id)
        .join(arm_b, arm_b.id == Matchup.arm_b_id)
        .where(Matchup.study_id == study.id)
    )
    return {m: (text, a, b) for m, text, a, b in rows}


def copy_votes(session: Session, source: Study, target: Study) -> dict[int, int]:
    """Give `target` (the same arms and prompts, listed in any order) the very votes of
    `source`: same evaluators, trials (same arm on the same side, same flags, times and order)
    and answers. Returns source evaluator id -> target evaluator id."""
    matchups.ensure_matchups(session=session, study=target)
    source_keys = _matchup_keys(session, source)
    target_of = {
        (text, frozenset((a, b))): (m, a)
        for m, (text, a, b) in _matchup_keys(session, target).items()
    }
    evaluators: dict[int, int] = {}
    skip = {"id", "study_id", "public_id"}
    for old in session.scalars(
        select(Evaluator).where(Evaluator.study_id == source.id).order_by(Evaluator.id)
    ).all():
        new = Evaluator(
            study_id=target.id,
            public_id=secrets.token_urlsafe(16),
            **{c.key: getattr(old, c.key) for c in Evaluator.__mapper__.column_attrs
               if c.key not in skip},
        )  # fmt: skip
        session.add(new)
        session.flush()
        evaluators[old.id] = new.id
    skip = {"id", "evaluator_id", "matchup_id", "a_on_left"}
    trials = session.scalars(
        select(Trial).where(Trial.evaluator_id.in_(evaluators)).order_by(Trial.id)
    ).all()
    for old in trials:
        text, a, b = source_keys[old.matchup_id]
        matchup_id, target_a = target_of[(text, frozenset((a, b)))]
        left = a if old.a_on_left else b
        new = Trial(
            evaluator_id=evaluators[old.evaluator_id],
            matchup_id=matchup_id,
            a_on_left=left == target_a,
            **{c.key: getattr(old, c.key) for c in Trial.__mapper__.column_attrs
               if c.key not in skip},
        )  # fmt: skip
        session.add(new)
        session.flush()
        for vote in session.scalars(select(Vote).where(Vote.trial_id == old.id)).all():
            values = {c.key: getattr(vote, c.key) for c in Vote.__mapper__.column_attrs}
            session.add(Vote(**{**values, "id": None, "trial_id": new.id}))
    session.commit()
    return evaluators

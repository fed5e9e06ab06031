"""Votes with known preference rates, cast through the real rating flow (app.rating.service:
join -> current_trial -> submit_votes, each committed), for the dashboard and export tests.

Each simulated evaluator prefers `favored` on criterion c with probability `rates[c]` among
decisive answers, answers `tie` with probability `tie_rate`, and clicks whichever side shows the
arm it prefers. "Careless" evaluators answer faster than the study's `fast_trial_seconds`, so the
rating flow flags their trials.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.orm import Session

from app.config import Settings
from app.db import utcnow
from app.rating import service as rating_service
from app.rating.models import Evaluator
from app.studies.models import Study


@dataclass
class Cast:
    """What was cast: per criterion (favored wins, ties, favored losses) over first showings,
    and every vote's winner ('tie' or the arm name) by (trial id, criterion)."""

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
) -> Cast:
    """`evaluators` new evaluators rate until done (or `max_trials` each); the first `careless`
    of them answer too fast (flagged when the study sets fast_trial_seconds)."""
    rng = random.Random(seed)
    cast = cast or Cast(favored=favored, outcomes={c: Counter() for c in study.criterion_keys})
    arm_names = {arm.id: arm.name for arm in study.arms}
    secret = settings.resolved_secret_key()
    clock = utcnow() - timedelta(hours=2)
    for i in range(evaluators):
        evaluator = rating_service.join(
            session=session, secret=secret, study=study, external_id=f"sim-{seed}-{i}"
        ).evaluator
        session.commit()
        cast.evaluators.append(evaluator.id)
        answered = 0
        while max_trials is None or answered < max_trials:
            clock += timedelta(seconds=7)
            result = rating_service.current_trial(
                session=session, study=study, evaluator=evaluator, now=clock
            )
            session.commit()
            if result.status != "trial" or result.trial is None:
                break
            trial = result.trial
            delay = 0.3 if i < careless else 4.0
            votes = _answer(trial, arm_names, favored=favored, rates=rates, tie=tie_rate, rng=rng)
            submitted = rating_service.submit_votes(
                session=session,
                study=study,
                evaluator=evaluator,
                trial_id=trial.id,
                votes={c: side for c, (side, _) in votes.items()},
                now=clock + timedelta(seconds=delay),
            )
            session.commit()
            _record(cast, trial, votes, flagged=submitted.trial.flagged)
            answered += 1
    return cast


def _answer(trial, arm_names, *, favored, rates, tie, rng):  # type: ignore[no-untyped-def]
    """criterion -> (side clicked, winner) for one trial."""
    matchup = trial.matchup
    left = arm_names[matchup.arm_a_id if trial.a_on_left else matchup.arm_b_id]
    right = arm_names[matchup.arm_b_id if trial.a_on_left else matchup.arm_a_id]
    other = right if left == favored else left
    answers = {}
    for criterion, rate in rates.items():
        if rng.random() < tie:
            answers[criterion] = ("tie", "tie")
            continue
        winner = favored if rng.random() < rate else other
        answers[criterion] = ("left" if winner == left else "right", winner)
    return answers


def _record(cast: Cast, trial, votes, *, flagged: bool) -> None:  # type: ignore[no-untyped-def]
    cast.votes += len(votes)
    cast.flagged_trials += int(flagged)
    for criterion, (_, winner) in votes.items():
        cast.winners[(trial.id, criterion)] = winner
        if trial.is_repeat:
            continue
        cast.first_votes += 1
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

"""Hundreds of evaluators rating one study at the same moment, through the use cases the web
routes run (join, next, submit with a read and a write session each), on SQLite and PostgreSQL.

No lock is shared by the whole study any more (app/rating/service.py, "Concurrency"), so on
PostgreSQL the writers run side by side. The guarantees must hold all the same: every evaluator
finishes, no error and no deadlock (PostgreSQL's own count of deadlocks stays where it was),
coverage balanced among live trials, sides counterbalanced per matchup, no matchup twice for an
evaluator except its designated repeats, one vote per trial and criterion, and the matchup
counters equal a recount of the trials.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select

from app.db import session_factory
from app.rating import enrollment, flow, service
from app.rating.models import Evaluator, Matchup, Trial, Vote
from app.rating.service import NextResult
from app.studies.models import Study
from tests.kit.rating import assert_counters_match_trials, secret
from tests.kit.studies import rating_study

EVALUATORS = 200
QUOTA = 6
REPEATS = 1
PROMPTS = 30  # 3 arms: 90 matchups, each judged 200 * 6 / 90 = 13.3 times


def rate(engine: sa.Engine, key: str, sign: str, n: int, barrier: threading.Barrier) -> int:
    """One evaluator's whole session, request by request as the API runs them (a read session,
    then the write session); returns how many trials it answered."""
    writer, reader = session_factory(engine), session_factory(engine, read_only=True)
    with writer() as session:
        study = enrollment.get_study_by_key(session=session, secret=sign, key=key)
        assert study is not None
        keys, study_id = study.criterion_keys, study.id
        session.commit()  # the connection goes back while everyone gathers
        barrier.wait()  # everyone joins at the same moment
        joined = flow.join(session=session, secret=sign, study=study, external_id=f"p-{n}")
        evaluator_id = joined.evaluator.id

    def request(trial_id: int | None) -> NextResult:
        with writer() as write, reader() as read:
            study = read.get_one(Study, study_id)
            evaluator = read.get_one(Evaluator, evaluator_id)
            if trial_id is None:
                return flow.next_trial(read=read, session=write, study=study, evaluator=evaluator)
            votes = {k: ("left", "right", "tie")[(n + i) % 3] for i, k in enumerate(keys)}
            return flow.submit(
                read=read,
                session=write,
                study=study,
                evaluator=evaluator,
                trial_id=trial_id,
                votes=votes,
            ).next

    answered = 0
    result = request(None)
    while result.status == "trial":
        assert result.trial is not None
        result = request(result.trial.id)
        answered += 1
    assert result.status == "done", result
    return answered


def _deadlocks(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            ).scalar_one()
        )


def test_hundreds_of_evaluators_at_once(engine, session, settings):
    study = rating_study(
        session,
        settings,
        prompts=PROMPTS,
        arms=3,
        trials_per_evaluator=QUOTA,
        repeat_trials=REPEATS,
        open_enrollment=True,
    )
    sign = secret(settings)
    key = enrollment.study_link(secret=sign, study=study).rsplit("/", 1)[1]
    postgres = engine.dialect.name == "postgresql"
    deadlocks_before = _deadlocks(engine) if postgres else 0
    barrier = threading.Barrier(EVALUATORS)
    with ThreadPoolExecutor(EVALUATORS) as pool:
        futures = [pool.submit(rate, engine, key, sign, n, barrier) for n in range(EVALUATORS)]
        answered = [future.result() for future in futures]  # re-raises any error, deadlocks too
    assert answered == [QUOTA + REPEATS] * EVALUATORS
    if postgres:
        assert _deadlocks(engine) == deadlocks_before

    session.expire_all()
    assert session.scalar(select(func.count(Evaluator.completed_at))) == EVALUATORS
    trials = session.execute(
        select(Trial.evaluator_id, Trial.matchup_id, Trial.a_on_left, Trial.is_repeat, Trial.id)
    ).all()
    assert len(trials) == EVALUATORS * (QUOTA + REPEATS)  # nothing assigned beyond the plan
    fresh = [t for t in trials if not t.is_repeat]
    # Balanced coverage among live trials (every fresh trial is answered, so live).
    matchups = session.scalars(select(Matchup.id)).all()
    coverage = Counter(t.matchup_id for t in fresh)
    counts = [coverage[m] for m in matchups]
    assert max(counts) - min(counts) <= 2, sorted(counts)
    # Sides within one per matchup.
    for matchup_id in matchups:
        sides = Counter(t.a_on_left for t in fresh if t.matchup_id == matchup_id)
        assert abs(sides[True] - sides[False]) <= 1, (matchup_id, sides)
    # No matchup twice for an evaluator, except its one designated repeat.
    for evaluator_id in {t.evaluator_id for t in trials}:
        mine = [t for t in trials if t.evaluator_id == evaluator_id]
        assert len({t.matchup_id for t in mine if not t.is_repeat}) == QUOTA
        repeats = [t for t in mine if t.is_repeat]
        assert len(repeats) == REPEATS
        assert {t.matchup_id for t in repeats} <= {t.matchup_id for t in mine if not t.is_repeat}
    # One vote per trial and criterion.
    per_trial = session.execute(
        select(
            Vote.trial_id, func.count(Vote.id), func.count(func.distinct(Vote.criterion))
        ).group_by(Vote.trial_id)
    ).all()
    criteria = len(study.criterion_keys)
    assert len(per_trial) == len(trials)
    assert {(n, distinct) for _, n, distinct in per_trial} == {(criteria, criteria)}
    assert_counters_match_trials(session)


def test_writers_of_one_study_do_not_wait_for_each_other(engine, session, settings):
    """While one evaluator's assignment is uncommitted (holding what it holds), another
    evaluator of the same study joins, gets a pair and answers it: nothing waits for the
    first transaction (a study-wide lock would make each of these wait until it ends)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes every writer by design (BEGIN IMMEDIATE)")
    study = rating_study(session, settings, prompts=6, arms=3, open_enrollment=True)
    sign = secret(settings)
    first = enrollment.join(session=session, secret=sign, study=study, external_id="first")
    second = enrollment.join(session=session, secret=sign, study=study, external_id="second")
    session.commit()
    writer = session_factory(engine)
    with writer() as held:  # assigns and holds its locks until the end of the block
        flow_study = held.get_one(Study, study.id)
        current = service.current_trial(
            session=held, study=flow_study, evaluator=held.get_one(Evaluator, first.evaluator.id)
        )
        assert current.status == "trial"

        def other() -> str:
            with writer() as write:
                write.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
                other_study = write.get_one(Study, study.id)
                evaluator = write.get_one(Evaluator, second.evaluator.id)
                result = flow.next_trial(session=write, study=other_study, evaluator=evaluator)
                assert result.trial is not None
                write.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
                votes = dict.fromkeys(other_study.criterion_keys, "left")
                answered = flow.submit(
                    session=write,
                    study=other_study,
                    evaluator=evaluator,
                    trial_id=result.trial.id,
                    votes=votes,
                )
                write.execute(sa.text("SET LOCAL lock_timeout = '3s'"))
                joined = flow.join(session=write, secret=sign, study=other_study, external_id="3")
                return f"{answered.stored.created} {joined.resumed}"

        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(other).result(timeout=30) == "True False"
        held.rollback()

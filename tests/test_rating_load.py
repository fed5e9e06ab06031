"""Many evaluators at once over real HTTP (uvicorn + httpx threads) on SQLite and PostgreSQL.

Each simulated evaluator joins with its own invite, then rates like the browser does: current
trial, prefetch of the next one, both clips, one submit. Some double-submit concurrently, some
have two tabs racing for the next pair. At the end coverage is balanced, sides are
counterbalanced per matchup and there is exactly one vote per trial and criterion.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from app.rating.models import Evaluator, Matchup, Trial, Vote
from tests.kit.rating import invite_token, link
from tests.kit.studies import rating_study

EVALUATORS = 30
QUOTA = 4
PROMPTS = 12  # 2 arms: 12 matchups, each judged 30 * 4 / 12 = 10 times


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """All simulated evaluators join from 127.0.0.1: lift the per-address join limit."""
    return settings.model_copy(update={"rate_limit_join_per_minute": 0})


def rate_session(base_url: str, path: str, invite: str, keys: list[str], n: int) -> list[int]:
    """One evaluator's whole session; returns the status codes it saw (besides 200)."""
    odd: list[int] = []
    choices = ("left", "right", "tie")
    with httpx.Client(base_url=base_url, timeout=60) as client:
        response = client.post(f"{path}/api/join", json={"invite": invite})
        assert response.status_code == 200, response.text
        token = response.json()["evaluator_token"]
        headers = {"Authorization": f"Bearer {token}"}
        if n % 5 == 0:  # two tabs open the rating page at the same moment
            barrier = threading.Barrier(2)

            def tab() -> int:
                barrier.wait()
                return client.get(f"{path}/api/next", headers=headers).json()["trial"]["id"]

            with ThreadPoolExecutor(2) as pool:
                ids = list(pool.map(lambda _: tab(), range(2)))
            assert ids[0] == ids[1], ids
        result = client.get(f"{path}/api/next", headers=headers).json()
        step = 0
        while result["status"] == "trial":
            trial = result["trial"]
            ahead = client.get(f"{path}/api/next?after={trial['id']}", headers=headers)
            assert ahead.status_code == 200
            assert client.get(trial["left"]["url"]).status_code == 200
            votes = {k: choices[(n + step + i) % 3] for i, k in enumerate(keys)}
            url = f"{path}/api/trials/{trial['id']}/votes"
            if n % 3 == 0:  # a double click: the same submit twice at once
                barrier = threading.Barrier(2)

                def submit() -> httpx.Response:
                    barrier.wait()
                    return client.post(url, json={"votes": votes}, headers=headers)

                with ThreadPoolExecutor(2) as pool:
                    first, second = pool.map(lambda _: submit(), range(2))
                assert first.status_code == second.status_code == 200, (first.text, second.text)
                assert first.json()["answered_at"] == second.json()["answered_at"]
                response = first
            else:
                response = client.post(url, json={"votes": votes}, headers=headers)
                if n % 7 == 0:  # a retry with a changed mind changes nothing
                    changed = {k: "tie" if v != "tie" else "left" for k, v in votes.items()}
                    conflict = client.post(url, json={"votes": changed}, headers=headers)
                    odd.append(conflict.status_code)
            assert response.status_code == 200, response.text
            result = response.json()["next"]
            step += 1
        assert result["status"] == "done", result
        assert result["progress"] == {"answered": QUOTA, "total": QUOTA}
    return odd


def test_many_evaluators_at_once(live_server, session, settings):
    study = rating_study(session, settings, prompts=PROMPTS, trials_per_evaluator=QUOTA)
    path, keys = link(settings, study), study.criterion_keys
    invites = [invite_token(settings, study) for _ in range(EVALUATORS)]
    with ThreadPoolExecutor(EVALUATORS) as pool:
        futures = [
            pool.submit(rate_session, live_server, path, invite, keys, n)
            for n, invite in enumerate(invites)
        ]
        odd = [code for future in futures for code in future.result()]
    assert set(odd) <= {409}

    session.commit()
    assert session.scalar(select(func.count(Evaluator.id))) == EVALUATORS
    assert session.scalar(select(func.count(Evaluator.completed_at))) == EVALUATORS
    trials = session.execute(select(Trial.matchup_id, Trial.a_on_left, Trial.answered_at)).all()
    assert len(trials) == EVALUATORS * QUOTA  # prefetching assigned nothing extra
    assert all(t.answered_at is not None for t in trials)
    # Exactly one vote per trial and criterion.
    per_trial = session.execute(
        select(
            Vote.trial_id, func.count(Vote.id), func.count(func.distinct(Vote.criterion))
        ).group_by(Vote.trial_id)
    ).all()
    assert len(per_trial) == EVALUATORS * QUOTA
    assert {(n, distinct) for _, n, distinct in per_trial} == {(len(keys), len(keys))}
    # Balanced coverage and counterbalanced sides, per matchup.
    matchups = session.scalars(select(Matchup.id)).all()
    assert len(matchups) == PROMPTS
    coverage = Counter(t.matchup_id for t in trials)
    counts = [coverage[m] for m in matchups]
    assert max(counts) - min(counts) <= 1, counts
    for matchup_id in matchups:
        sides = Counter(t.a_on_left for t in trials if t.matchup_id == matchup_id)
        assert abs(sides[True] - sides[False]) <= 1, (matchup_id, sides)
    # Nobody judged a matchup twice.
    per_evaluator = session.execute(
        select(
            Trial.evaluator_id, func.count(Trial.id), func.count(func.distinct(Trial.matchup_id))
        ).group_by(Trial.evaluator_id)
    ).all()
    assert all(n == distinct == QUOTA for _, n, distinct in per_evaluator)

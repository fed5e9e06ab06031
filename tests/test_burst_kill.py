"""The server killed with SIGKILL in the middle of a burst of concurrent submits, on SQLite and
PostgreSQL: afterwards every trial is all-or-nothing (all of the study's criteria votes and
`answered_at`, or neither), every answer the server acknowledged is stored, and a server
started again on the same database carries on where the evaluators left off.

The server is a real `uvicorn app.main:create_app --factory --workers 2` subprocess (its own
process group, so the kill takes the master and both workers at once, like a machine losing
power to the process); the evaluators are threads submitting as fast as they can.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy import func, select

from app.rating.models import Matchup, Trial, Vote
from tests.kit.rating import link
from tests.kit.servers import uvicorn_server
from tests.kit.studies import rating_study

EVALUATORS = 16
KILL_AFTER = 25  # acknowledged submits before the kill: well inside the burst


def partial_trials(engine, study_id: int, criteria: int) -> list[tuple[int, bool, int]]:  # type: ignore[no-untyped-def]
    """(trial id, answered, votes) of every trial that is not all-or-nothing."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Trial.id, Trial.answered_at.is_not(None), func.count(Vote.id))
            .join(Matchup, Matchup.id == Trial.matchup_id)
            .outerjoin(Vote, Vote.trial_id == Trial.id)
            .where(Matchup.study_id == study_id)
            .group_by(Trial.id, Trial.answered_at)
        ).all()
    return [
        (trial_id, answered, n)
        for trial_id, answered, n in rows
        if not ((answered and n == criteria) or (not answered and n == 0))
    ]


def answered_ids(engine, study_id: int) -> set[int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return set(
            conn.scalars(
                select(Trial.id)
                .join(Matchup, Matchup.id == Trial.matchup_id)
                .where(Matchup.study_id == study_id, Trial.answered_at.is_not(None))
            )
        )


class Burst:
    """Evaluators submitting as fast as they can; counts acknowledged and in-flight submits."""

    def __init__(self, base_url: str, path: str, tokens: list[str], criteria: list[str]) -> None:
        self.base_url, self.path, self.tokens, self.criteria = base_url, path, tokens, criteria
        self.lock = threading.Lock()
        self.acked: set[int] = set()
        self.in_flight = 0
        self.stop = threading.Event()
        self.start = threading.Barrier(len(tokens) + 1)

    def evaluator(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.tokens[n]}"}
        choices = ("left", "right", "tie")
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            current = client.get(f"{self.path}/api/next", headers=headers).json()
            self.start.wait()
            step = 0
            while not self.stop.is_set() and current["status"] == "trial":
                trial_id = current["trial"]["id"]
                votes = {k: choices[(n + step + i) % 3] for i, k in enumerate(self.criteria)}
                with self.lock:
                    self.in_flight += 1
                try:
                    response = client.post(
                        f"{self.path}/api/trials/{trial_id}/votes",
                        json={"votes": votes},
                        headers=headers,
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                finally:
                    with self.lock:
                        self.in_flight -= 1
                if response.status_code != 200:
                    return
                with self.lock:
                    self.acked.add(trial_id)
                current = response.json()["next"]
                step += 1


def test_server_killed_mid_burst_leaves_every_trial_all_or_nothing(session, settings, tmp_path):
    study = rating_study(
        session, settings, slug="burst", prompts=12, open_enrollment=True, trials_per_evaluator=12
    )
    path, criteria = link(settings, study), study.criterion_keys
    engine = session.get_bind()
    session.close()
    log = tmp_path / "server.log"
    with uvicorn_server(settings, log) as (process, base_url):
        tokens = []
        for _ in range(EVALUATORS):  # a client each: a shared cookie would resume one evaluator
            joined = httpx.post(f"{base_url}{path}/api/join", json={}, timeout=10)
            tokens.append(joined.json()["evaluator_token"])
        assert len(set(tokens)) == EVALUATORS
        burst = Burst(base_url, path, tokens, criteria)
        with ThreadPoolExecutor(EVALUATORS) as pool:
            futures = [pool.submit(burst.evaluator, n) for n in range(EVALUATORS)]
            burst.start.wait()
            deadline = time.monotonic() + 30
            while len(burst.acked) < KILL_AFTER or burst.in_flight == 0:
                assert time.monotonic() < deadline, "the burst never got going"
                time.sleep(0.001)
            with burst.lock:
                in_flight_at_kill = burst.in_flight
                acked_before_kill = set(burst.acked)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            burst.stop.set()
            for future in futures:
                future.result()
    assert in_flight_at_kill >= 1  # the kill landed among submits in progress

    # Every trial is all-or-nothing, and no acknowledged answer was lost.
    assert partial_trials(engine, study.id, len(criteria)) == []
    stored = answered_ids(engine, study.id)
    assert acked_before_kill <= stored
    assert burst.acked <= stored

    # A new server on the same database (SQLite: WAL recovery) serves the same evaluators.
    with (
        uvicorn_server(settings, log) as (_process, base_url),
        httpx.Client(base_url=base_url, timeout=10) as client,
    ):
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"}
            current = client.get(f"{path}/api/next", headers=headers)
            assert current.status_code == 200, current.text
            result = current.json()
            if result["status"] != "trial":
                continue
            votes = dict.fromkeys(criteria, "tie")
            answer = client.post(
                f"{path}/api/trials/{result['trial']['id']}/votes",
                json={"votes": votes},
                headers=headers,
            )
            assert answer.status_code == 200, answer.text
    assert partial_trials(engine, study.id, len(criteria)) == []
    with engine.connect() as conn:
        votes = conn.scalar(select(func.count(Vote.id)))
    assert votes == len(answered_ids(engine, study.id)) * len(criteria)

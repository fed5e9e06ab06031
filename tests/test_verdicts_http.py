"""The verdicts over the whole HTTP path, as a study runs: evaluators join, fetch pairs and
answer through the JSON API of a real uvicorn server, and a researcher reads summary.json after
every batch of evaluators. With no true preference nothing is ever declared and the stop check
leaves the study open; with a clear one the verdict appears, the check stops the study and the
next evaluator is done at once. SQLite and PostgreSQL.

The simulated evaluators know which arm is on which side only through the test's own database
read (an oracle the browser never has); their answers follow a known truth."""

from __future__ import annotations

import random

import httpx
import pytest
from sqlalchemy import select

from app.dashboard.service import DashboardCache
from app.dashboard.stopping import check_studies
from app.db import session_factory
from app.main import create_app
from app.rating.models import Matchup, Trial
from app.studies import service as studies_service
from app.studies.studyfile import AnalysisSpec
from tests.kit.admin import ADMIN_PASSWORD, csrf_of
from tests.kit.config import configured
from tests.kit.rating import link
from tests.kit.studies import rating_study

BATCH = 5  # evaluators between two reads of summary.json


@pytest.fixture
def app(settings):  # type: ignore[no-untyped-def]
    # Dozens of evaluators join from one loopback address: no per-address join limit here.
    return create_app(
        configured(settings, rate_limit_join_per_minute=0, rate_limit_submit_per_minute=0)
    )


def researcher(base_url: str) -> httpx.Client:
    http = httpx.Client(base_url=base_url, timeout=30)
    token = csrf_of(http.get("/admin/login").text)
    done = http.post(
        "/admin/login",
        data={"password": ADMIN_PASSWORD, "csrf_token": token, "next": "/admin/"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    return http


def left_arm(engine, trial_id: int, arms: dict[int, str]) -> str:  # type: ignore[no-untyped-def]
    # One statement on a connection of its own, given back at once: the test's writable
    # session would hold SQLite's write lock while the server answers.
    query = (
        select(Trial.a_on_left, Matchup.arm_a_id, Matchup.arm_b_id)
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .where(Trial.id == trial_id)
    )
    with engine.connect() as connection:
        a_on_left, arm_a, arm_b = connection.execute(query).one()
    return arms[arm_a if a_on_left else arm_b]


def rate(http, base, engine, study, rng, *, favored: str | None, p: float) -> dict:  # type: ignore[no-untyped-def]
    """One evaluator joins and answers until there is nothing left (`study`: its arms by id and
    its criteria): for `favored` with probability `p` on every criterion (no favored arm: left /
    right / tie whatever the clips, with a personal side bias). Returns the last /api/next
    answer."""
    token = http.post(f"{base}/api/join", json={}).json()["evaluator_token"]
    http.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"}
    arms, criteria = study
    lean = rng.uniform(0.35, 0.55)  # this evaluator's chance of answering left (null runs)
    while True:
        nxt = http.get(f"{base}/api/next", headers=headers).json()
        if nxt["status"] != "trial":
            return nxt
        trial_id = nxt["trial"]["id"]
        votes = {}
        for criterion in criteria:
            if favored is None:
                u = rng.random()
                votes[criterion] = "left" if u < lean else "right" if u < 0.8 else "tie"
            else:
                on_left = left_arm(engine, trial_id, arms) == favored
                won = rng.random() < p
                votes[criterion] = "left" if won == on_left else "right"
        answer = http.post(
            f"{base}/api/trials/{trial_id}/votes", json={"votes": votes}, headers=headers
        )
        assert answer.status_code == 200, answer.text


def check(engine):  # type: ignore[no-untyped-def]
    return check_studies(
        read=session_factory(engine, read_only=True),
        write=session_factory(engine),
        cache=DashboardCache(),
    )


def summary_verdicts(admin: httpx.Client, study) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    response = admin.get(f"/admin/studies/{study.slug}/export/summary.json")
    assert response.status_code == 200, response.text
    return response.json()["verdicts"]


def opened(session, settings, slug: str):  # type: ignore[no-untyped-def]
    study = rating_study(
        session, settings, slug=slug, prompts=8, trials_per_evaluator=8, open_enrollment=True
    )
    studies_service.set_analysis(
        session=session,
        study=study,
        spec=AnalysisSpec(stop="when_decided", primary=["overall_quality"]),
    )
    session.commit()
    return study


def test_no_true_preference_declares_nothing_at_any_read(live_server, engine, session, settings):
    study = opened(session, settings, "null-http")
    shape = ({arm.id: arm.name for arm in study.arms}, list(study.criterion_keys))
    session.rollback()
    base = link(settings, study)
    rng = random.Random(0)
    admin = researcher(live_server)
    reads = []
    with httpx.Client(base_url=live_server, timeout=30) as http:
        for _ in range(8):  # 40 evaluators, read after every 5
            for _ in range(BATCH):
                assert rate(http, base, engine, shape, rng, favored=None, p=0.5)["status"] == "done"
            found = summary_verdicts(admin, study)
            reads.append(found)
            assert {v["status"] for v in found} == {"undecided"}, found
            assert check(engine) == []
    votes = [sum(v["votes"] for v in found) for found in reads]
    assert votes == sorted(votes) and votes[-1] == 40 * 8 * len(shape[1])
    session.refresh(study)
    assert study.stopped_at is None


def test_a_clear_preference_is_declared_and_stops_assigning(live_server, engine, session, settings):
    study = opened(session, settings, "clear-http")
    favored = study.arms[0].name
    shape = ({arm.id: arm.name for arm in study.arms}, list(study.criterion_keys))
    session.rollback()
    base = link(settings, study)
    rng = random.Random(1)
    admin = researcher(live_server)
    with httpx.Client(base_url=live_server, timeout=30) as http:
        stopped: list[tuple[str, str]] = []
        for _ in range(12):
            for _ in range(BATCH):
                rate(http, base, engine, shape, rng, favored=favored, p=0.9)
            stopped = check(engine)
            if stopped:
                break
        assert [slug for slug, _ in stopped] == [study.slug]
        overall = next(
            v for v in summary_verdicts(admin, study) if v["criterion"] == "overall_quality"
        )
        assert (overall["arm"], overall["status"]) == (favored, "superior")
        assert overall["lower"] > 0.5
        # A newcomer now gets no pair: done at once, with the completion code.
        last = rate(http, base, engine, shape, rng, favored=favored, p=0.9)
        assert last["status"] == "done" and last.get("completion_code")
    page = admin.get(f"/admin/studies/{study.slug}").text
    assert "Every primary hypothesis is decided" in page

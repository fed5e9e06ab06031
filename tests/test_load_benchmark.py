"""The load benchmark's own parts that run without a load (benchmarks/load): the submit-shaped
floor does one answer's writes per request, and the statement count sees every request of an
evaluator's session; SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.db import make_engine
from app.rating import tokens
from benchmarks.load.config import SECRET_KEY
from benchmarks.load.floor import create_floor_app, prepare_floor
from benchmarks.load.statements import count_statements
from benchmarks.load.study import Seeded
from tests.kit.db import fresh_database
from tests.kit.studies import rating_study

CRITERIA = ["a", "b", "c", "d", "e", "f"]


def test_the_submit_shaped_floor_writes_one_answer_per_request(database_url, tmp_path, monkeypatch):
    db = "postgres" if database_url.startswith("postgresql") else "sqlite"
    with fresh_database(db, tmp_path, name="floor", migrate=False) as url:
        prepare_floor(url)
        monkeypatch.setenv("LOAD_FLOOR_DATABASE_URL", url)
        trials = {1: [1], 7: [7]}  # each evaluator's chain of trials, from its first
        app = create_floor_app()
        with TestClient(app) as client:
            for _ in range(3):
                for evaluator, chain in trials.items():
                    votes = dict.fromkeys(CRITERIA, "left")
                    response = client.post(
                        f"/floor/submit/{evaluator}/{chain[-1]}", json={"votes": votes}
                    )
                    assert response.status_code == 200, response.text
                    chain.append(response.json()["trial"])
            # The minimal floor still answers.
            assert client.post("/floor/3").json() == {"item": 3}
        app.state.engine.dispose()
        engine = make_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT t.id, t.evaluator_id, t.position, t.answered_at IS NOT NULL, "
                    "(SELECT count(*) FROM floor_vote v WHERE v.trial_id = t.id) "
                    "FROM floor_trial t WHERE t.evaluator_id IN (1, 7) ORDER BY t.id"
                )
            ).all()
        engine.dispose()
    for evaluator, chain in trials.items():
        mine = [r for r in rows if r[1] == evaluator]
        assert [r[0] for r in mine] == chain  # a new trial per answer, the next one answered
        assert [r[2] for r in mine] == [1, 2, 3, 4]
        assert [(bool(r[3]), r[4]) for r in mine] == [(True, 6)] * 3 + [(False, 0)]


def test_statements_are_counted_per_request(session, settings, database_url, tmp_path):
    study = rating_study(session, settings, prompts=4, trials_per_evaluator=3)
    seeded = Seeded(
        study_id=study.id,
        slug=study.slug,
        key=tokens.study_key(SECRET_KEY, study.id),
        criteria=list(study.criterion_keys),
        gif_bytes=0,
    )
    (tmp_path / "var").mkdir()
    counts = count_statements(database_url, tmp_path, seeded, evaluators=2)
    runs = counts.requests
    assert [len(runs[k]) for k in ("join", "next", "submit", "last submit")] == [2, 2, 4, 2]
    # A join enrolls and assigns two pairs in one transaction; a resume only reads.
    # A join enrolls and assigns two pairs in one transaction; a resume only reads. (On
    # PostgreSQL some requests run a second, after the first commits: the sweep that releases
    # expired holds, or an evaluator's finished judging.)
    assert all(c.commits >= 1 and c.statements > 0 for c in runs["join"])
    assert all(c.commits == 0 and c.checkouts == 1 for c in runs["next"])
    # A submit reads in a read session, then writes in one transaction.
    assert all(c.commits >= 1 and c.checkouts >= 2 for c in runs["submit"])
    # Measured 9 on SQLite and 10 on PostgreSQL (the evaluator's row lock) in a steady state:
    # more would be a statement added to every trial.
    assert counts.mean("submit") <= 12
    assert counts.span("submit") != "-"

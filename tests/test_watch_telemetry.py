"""Watch telemetry over HTTP (TestClient) on SQLite and PostgreSQL: the submit's `watch` is
validated (bounded, non-negative, within the time the server saw), made into loops with each
clip's own loop duration, stored with the trial, judged by `min_loops` and exported in
votes.csv."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.clips.models import Clip
from app.db import utcnow
from app.rating.models import Trial, Vote
from app.studies.studyfile import RatingSpec, StudyFileError, parse_study
from tests.kit.admin import log_in
from tests.kit.db import count
from tests.kit.rating import all_left, join, link
from tests.kit.studies import rating_study, study_clips, study_toml

LOOP_MS = 480  # the clips' measured loop (gif_bytes: 4 frames of 120 ms)


def _open(client, session, settings, prompts=2, **rating):  # type: ignore[no-untyped-def]
    """An open-enrollment study whose clips loop in LOOP_MS, joined; (study, trial, votes URL)."""
    study = rating_study(session, settings, prompts=prompts, open_enrollment=True, **rating)
    session.execute(
        update(Clip)
        .where(Clip.id.in_([c.id for c in study_clips(session, study)]))
        .values(duration_ms=LOOP_MS)
    )
    session.commit()
    base = link(settings, study)
    trial = join(client, base)["next"]["trial"]
    return study, trial, f"{base}/api/trials/{trial['id']}/votes"


def parse_rating(toml: str) -> RatingSpec:
    """The [rating] table of a study file, as parsed with the rest of it."""
    draft = parse_study(
        toml_text=toml,
        toml_name="study.toml",
        prompts_bytes=b"prompt,theme\na fox,animals\n",
        prompts_name="prompts.csv",
    )
    return draft.rating


def _backdate(session, trial_id: int, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Make the trial shown `seconds` ago, so that much watching is possible."""
    session.execute(
        update(Trial)
        .where(Trial.id == trial_id)
        .values(shown_at=utcnow() - timedelta(seconds=seconds))
    )
    session.commit()


def _stored(session, trial_id: int) -> Trial:  # type: ignore[no-untyped-def]
    """The trial as stored now, detached (its transaction ended: on SQLite an open one would
    hold the write lock the app's next request waits for)."""
    session.expire_all()
    trial = session.get(Trial, trial_id)
    assert trial is not None
    session.expunge(trial)
    session.commit()
    return trial


def test_watch_is_validated_stored_as_loops_and_exported(client, session, settings):
    study, trial, url = _open(client, session, settings)
    votes = all_left(study)
    for bad in (
        {"left_seconds": -1, "right_seconds": 1, "hidden_seconds": 0},
        {"left_seconds": 1, "right_seconds": 1},  # hidden_seconds missing
        {"left_seconds": 1, "right_seconds": 1, "hidden_seconds": 0, "loops": 3},
        {"left_seconds": "x", "right_seconds": 1, "hidden_seconds": 0},
        {"left_seconds": 1, "right_seconds": 1e9, "hidden_seconds": 0},  # over a day
    ):
        response = client.post(url, json={"votes": votes, "watch": bad})
        assert response.status_code == 422, response.text
        assert response.json()["detail"]["code"] == "invalid_request"
        assert "watch" in response.json()["detail"]["message"]
    # More on screen (plus hidden) than the server's time since the pair was shown: refused.
    impossible = {"left_seconds": 0, "right_seconds": 600, "hidden_seconds": 0}
    response = client.post(url, json={"votes": votes, "watch": impossible})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["code"] == "invalid_watch" and "right clip" in detail["message"]
    assert "Nothing was stored" in detail["message"]
    _backdate(session, trial["id"], 5)
    too_hidden = {"left_seconds": 3, "right_seconds": 3, "hidden_seconds": 3}
    response = client.post(url, json={"votes": votes, "watch": too_hidden})
    assert response.status_code == 422 and response.json()["detail"]["code"] == "invalid_watch"
    assert count(session, Vote) == 0

    watch = {"left_seconds": 1.2, "right_seconds": 0.36, "hidden_seconds": 0.25}
    response = client.post(url, json={"votes": votes, "watch": watch})
    assert response.status_code == 200, response.text
    stored = _stored(session, trial["id"])
    assert stored.loops_left == pytest.approx(1.2 / 0.48)  # 2.5 loops
    assert stored.loops_right == pytest.approx(0.36 / 0.48)  # 0.75 of a loop
    assert stored.watched_both is False
    assert stored.hidden_seconds == pytest.approx(0.25)
    assert not stored.flagged  # min_loops is off by default

    # The next pair without telemetry: unknown, not zero.
    following = response.json()["next"]["trial"]
    _backdate(session, following["id"], 2)
    base = url.split("/api/")[0]
    response = client.post(f"{base}/api/trials/{following['id']}/votes", json={"votes": votes})
    assert response.status_code == 200, response.text
    bare = _stored(session, following["id"])
    assert (bare.loops_left, bare.loops_right, bare.watched_both, bare.hidden_seconds) == (
        None,
        None,
        None,
        None,
    )

    log_in(client)
    exported = client.get(f"/admin/studies/{study.slug}/export/votes.csv")
    assert exported.status_code == 200, exported.text
    reader = csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff")))
    header = reader.fieldnames or []
    assert header.index("loops_left") == header.index("client_view_ms") + 1
    assert header[header.index("loops_left") :][:4] == [
        "loops_left",
        "loops_right",
        "watched_both",
        "hidden_ms",
    ]
    rows = {int(r["trial_id"]): r for r in reader}
    watched, unknown = rows[trial["id"]], rows[following["id"]]
    assert float(watched["loops_left"]) == pytest.approx(2.5)
    assert float(watched["loops_right"]) == pytest.approx(0.75)
    assert watched["watched_both"] == "false" and watched["hidden_ms"] == "250"
    assert [unknown[c] for c in ("loops_left", "loops_right", "watched_both", "hidden_ms")] == [
        "",
        "",
        "",
        "",
    ]


def test_loop_duration_falls_back_to_frames_over_fps(client, session, settings):
    """A clip without a measured duration loops in num_frames / its arm's fps (4 / 8 = 0.5 s)."""
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    trial = join(client, base)["next"]["trial"]
    _backdate(session, trial["id"], 5)
    watch = {"left_seconds": 1.0, "right_seconds": 2.0, "hidden_seconds": 0}
    response = client.post(
        f"{base}/api/trials/{trial['id']}/votes", json={"votes": all_left(study), "watch": watch}
    )
    assert response.status_code == 200, response.text
    stored = _stored(session, trial["id"])
    assert (stored.loops_left, stored.loops_right, stored.watched_both) == (2.0, 4.0, True)


def test_min_loops_flags_trials_answered_before_both_clips_looped(client, session, settings):
    study, trial, url = _open(client, session, settings, prompts=3, min_loops=2)
    base = url.split("/api/")[0]
    votes = all_left(study)
    answers = [
        # 2.5 and 0.75 loops: the right clip played less than two
        {"left_seconds": 1.2, "right_seconds": 0.36, "hidden_seconds": 0},
        # no telemetry at all: nothing shows the clips were watched
        None,
        # both at least two loops (0.96 s = 2 loops exactly)
        {"left_seconds": 0.96, "right_seconds": 1.5, "hidden_seconds": 1.0},
    ]
    ids = []
    for watch in answers:
        _backdate(session, trial["id"], 5)
        body = {"votes": votes} if watch is None else {"votes": votes, "watch": watch}
        response = client.post(f"{base}/api/trials/{trial['id']}/votes", json=body)
        assert response.status_code == 200, response.text
        ids.append(trial["id"])
        trial = response.json()["next"]["trial"]
    few, unreported, enough = (_stored(session, i) for i in ids)
    assert few.flagged and few.flag_reason is not None
    assert "few loops: 2.5 left, 0.8 right" in few.flag_reason
    assert "min_loops 2" in few.flag_reason
    assert unreported.flagged and "watch: not reported" in (unreported.flag_reason or "")
    assert not enough.flagged and enough.watched_both is True
    assert enough.flag_reason is None
    flagged = session.scalars(select(Trial.id).where(Trial.flagged.is_(True))).all()
    assert sorted(flagged) == sorted(ids[:2])


def test_min_loops_in_the_study_file_is_checked():
    with pytest.raises(StudyFileError) as error:
        parse_rating(study_toml(slug="loops", rating={"min_loops": -1}))
    assert "study.toml:" in str(error.value) and "rating.min_loops" in str(error.value)
    assert parse_rating(study_toml(slug="loops", rating={"min_loops": 1.5})).min_loops == 1.5
    assert parse_rating(study_toml(slug="loops", rating={})).min_loops == 0

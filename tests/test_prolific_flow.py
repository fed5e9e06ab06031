"""The Prolific flow over HTTP (TestClient) on SQLite and PostgreSQL: the study file's
completion URL and screen-out code checked with their place, STUDY_ID and SESSION_ID recorded
beside the participant id and exported, and a finished evaluator sent back with the right code:
the completion code, or the screen-out code after failing two gold checks."""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

import pytest
from sqlalchemy import select

from app.rating import gold, twins
from app.rating.models import Evaluator, Trial
from app.storage import get_storage
from app.studies.schemas import completion_url
from app.studies.studyfile import StudyFileError, parse_study
from tests.kit.admin import log_in
from tests.kit.rating import join, link
from tests.kit.studies import rating_study, study_toml

PROLIFIC = "https://app.prolific.com/submissions/complete?cc={code}"
CODE, SCREENOUT = "C1DONE", "C2SCREEN"
GOLD_CRITERIA = ["video_text_relevance", "appearance_distortion", "motion_naturalness"]


def _parse(**rating: object) -> None:
    parse_study(
        toml_text=study_toml(slug="prolific", rating=rating),
        toml_name="study.toml",
        prompts_bytes=b"prompt,theme\na fox,animals\n",
        prompts_name="prompts.csv",
    )


@pytest.mark.parametrize(
    ("rating", "said"),
    [
        ({"completion_url": "http://app.prolific.com/x?cc={code}"}, "is not an https:// address"),
        ({"completion_url": "app.prolific.com/x?cc={code}"}, "is not an https:// address"),
        ({"completion_url": "https://app.prolific.com/x?cc=CODE"}, "has no {code} placeholder"),
        ({"completion_url": "https://app.prolific.com/x?cc={CODE}"}, "has no {code} placeholder"),
        ({"completion_url": "https://x.org/{code}?s={study}"}, "the only placeholder is {code}"),
        ({"completion_code": "SAME", "screenout_code": "SAME"}, "must differ from completion_code"),
        ({"external_study_param": "STUDY ID"}, "is not valid"),
    ],
)
def test_completion_settings_are_checked_with_their_place(rating, said):
    with pytest.raises(StudyFileError) as error:
        _parse(**rating)
    message = str(error.value)
    assert said in message
    key = "screenout_code" if "screenout_code" in rating else next(iter(rating))
    rows = study_toml(slug="prolific", rating=rating).splitlines()
    line = next(n for n, row in enumerate(rows, start=1) if row.startswith(f"{key} ="))
    assert f"study.toml:{line}:" in message and f"rating.{key}" in message


def test_completion_url_puts_the_code_in_percent_encoded():
    _parse(completion_url=PROLIFIC, completion_code=CODE, screenout_code=SCREENOUT)
    assert (
        completion_url(PROLIFIC, CODE) == f"https://app.prolific.com/submissions/complete?cc={CODE}"
    )
    assert completion_url("https://x.org/done/{code}?again={code}", "a b&c") == (
        f"https://x.org/done/{quote('a b&c', safe='')}?again={quote('a b&c', safe='')}"
    )


def _evaluator(session, **where) -> Evaluator:  # type: ignore[no-untyped-def]
    query = select(Evaluator).filter_by(**where).execution_options(populate_existing=True)
    found = session.scalars(query).one()
    session.commit()
    return found


def test_study_and_session_ids_are_recorded_beside_the_participant_id(client, session, settings):
    study = rating_study(session, settings, prompts=3, open_enrollment=True)
    base = link(settings, study)
    welcome = client.get(f"{base}?PROLIFIC_PID=pid1&STUDY_ID=study9&SESSION_ID=sess1")
    assert welcome.status_code == 200
    for name, value in (
        ("external_id", "pid1"),
        ("external_study_id", "study9"),
        ("external_session_id", "sess1"),
    ):
        assert f'name="{name}" value="{value}"' in welcome.text
    form = {"external_id": "pid1", "external_study_id": "study9", "external_session_id": "sess1"}
    joined = client.post(f"{base}/join", data=form, follow_redirects=False)
    assert joined.status_code == 303
    ev = _evaluator(session, external_id="pid1")
    assert (ev.external_study_id, ev.external_session_id) == ("study9", "sess1")
    # The same participant in a new session (the JSON API): the latest session is kept.
    client.cookies.clear()
    body = join(
        client, base, external_id="pid1", external_study_id="study9", external_session_id="s2"
    )
    assert body["resumed"] is True
    assert body["study"]["external_study_param"] == "STUDY_ID"
    assert _evaluator(session, external_id="pid1").external_session_id == "s2"
    # A malformed id is refused, as a participant id is, and nothing is recorded.
    client.cookies.clear()
    bad = client.get(f"{base}?PROLIFIC_PID=pid2&SESSION_ID=has%20space")
    assert bad.status_code == 403 and "session id in this link is not valid" in bad.text
    refused = client.post(
        f"{base}/api/join", json={"external_id": "pid2", "external_study_id": "a b"}
    )
    assert refused.status_code == 403
    assert refused.json()["detail"]["code"] == "invalid_external_id"
    assert session.scalars(select(Evaluator).filter_by(external_id="pid2")).first() is None
    session.commit()
    # Exported beside the participant id.
    voted = client.post(
        f"{base}/api/trials/{body['next']['trial']['id']}/votes",
        json={"votes": dict.fromkeys(study.criterion_keys, "left")},
        headers={"Authorization": f"Bearer {body['evaluator_token']}"},
    )
    assert voted.status_code == 200, voted.text
    log_in(client)
    exported = client.get(f"/admin/studies/{study.slug}/export/votes.csv")
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    header = list(rows[0])
    assert header[header.index("external_id") + 1 : header.index("external_id") + 3] == [
        "external_study_id",
        "external_session_id",
    ]
    assert {(r["external_id"], r["external_study_id"], r["external_session_id"]) for r in rows} == {
        ("pid1", "study9", "s2")
    }


def test_parameter_names_are_configurable(client, session, settings):
    study = rating_study(
        session,
        settings,
        prompts=3,
        open_enrollment=True,
        external_id_param="PID",
        external_study_param="SID",
        external_session_param="RUN",
    )
    base = link(settings, study)
    welcome = client.get(f"{base}?PID=p7&SID=st7&RUN=r7&STUDY_ID=ignored")
    assert 'name="external_study_id" value="st7"' in welcome.text
    assert 'name="external_session_id" value="r7"' in welcome.text
    assert "ignored" not in welcome.text


def _rate_all(client, session, base, votes_for):  # type: ignore[no-untyped-def]
    """Answer every pair over the API (`votes_for(trial row)`); the last answer's `next`."""
    nxt = join(client, base, external_id="pid-done")["next"]
    while nxt["status"] == "trial":
        trial = session.get(Trial, nxt["trial"]["id"])
        votes = votes_for(trial)
        session.commit()
        response = client.post(
            f"{base}/api/trials/{nxt['trial']['id']}/votes", json={"votes": votes}
        )
        assert response.status_code == 200, response.text
        nxt = response.json()["next"]
    return nxt


def test_a_finished_evaluator_is_sent_back_with_the_completion_code(client, session, settings):
    study = rating_study(
        session,
        settings,
        prompts=3,
        open_enrollment=True,
        trials_per_evaluator=2,
        completion_url=PROLIFIC,
        completion_code=CODE,
        screenout_code=SCREENOUT,
    )
    base = link(settings, study)
    done = _rate_all(client, session, base, lambda _: dict.fromkeys(study.criterion_keys, "tie"))
    url = f"https://app.prolific.com/submissions/complete?cc={CODE}"
    assert (done["status"], done["completion_code"], done["completion_url"]) == ("done", CODE, url)
    page = client.get(f"{base}/done", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == url
    assert page.headers["cache-control"] == "no-store"
    assert CODE in page.text and f'href="{url}"' in page.text  # the fallback, in the body
    # Asking again (a reload, another tab) says the same.
    again = client.get(f"{base}/api/next").json()
    assert (again["completion_code"], again["completion_url"]) == (CODE, url)
    assert client.get(base, follow_redirects=False).headers["location"] == f"{base}/done"
    # The admin's links page gives the study link with Prolific's three placeholders.
    log_in(client)
    links = client.get(f"/admin/studies/{study.slug}/invites").text
    assert (
        "?PROLIFIC_PID={{%PROLIFIC_PID%}}&amp;STUDY_ID={{%STUDY_ID%}}"
        "&amp;SESSION_ID={{%SESSION_ID%}}" in links
    )
    assert "https://app.prolific.com/submissions/complete?cc={code}" in links and SCREENOUT in links


def test_without_a_completion_url_the_done_page_shows_the_code(client, session, settings):
    study = rating_study(session, settings, prompts=3, open_enrollment=True, trials_per_evaluator=1)
    base = link(settings, study)
    done = _rate_all(client, session, base, lambda _: dict.fromkeys(study.criterion_keys, "tie"))
    assert done["completion_url"] is None and len(done["completion_code"]) == 10
    page = client.get(f"{base}/done", follow_redirects=False)
    assert page.status_code == 200 and done["completion_code"] in page.text
    assert 'id="completion-link"' not in page.text


@pytest.mark.parametrize(("failures", "code"), [(2, SCREENOUT), (1, CODE)])
def test_gold_failures_get_the_screen_out_code(client, session, settings, failures, code):
    """Prolific's policy: two failed gold checks, not one, earn the screen-out code."""
    study = rating_study(
        session,
        settings,
        prompts=10,
        criteria=GOLD_CRITERIA,
        open_enrollment=True,
        trials_per_evaluator=8,
        gold_rate=0.2,  # 2 gold trials of 10
        completion_url=PROLIFIC,
        completion_code=CODE,
        screenout_code=SCREENOUT,
    )
    twins.make_twins(session=session, storage=get_storage(settings), study=study)
    session.commit()
    base = link(settings, study)
    failed: list[int] = []

    def answer(trial: Trial) -> dict[str, str]:
        if trial.gold_pair_id is None:
            return dict.fromkeys(GOLD_CRITERIA, "left")
        original = "left" if trial.a_on_left else "right"
        twin = "right" if trial.a_on_left else "left"
        fail = len(failed) < failures
        if fail:
            failed.append(trial.id)
        return dict.fromkeys(GOLD_CRITERIA, twin if fail else original)

    done = _rate_all(client, session, base, answer)
    assert len(failed) == failures  # the study did show gold pairs
    ev = _evaluator(session, external_id="pid-done")
    assert gold.failed_checks(session=session, evaluator_id=ev.id) == failures
    session.commit()
    url = f"https://app.prolific.com/submissions/complete?cc={code}"
    assert (done["completion_code"], done["completion_url"]) == (code, url)
    assert ev.completion_code == code
    page = client.get(f"{base}/done", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == url
    # The admin's evaluators page lists the code given, marked when it is the screen-out code.
    log_in(client)
    listed = client.get(f"/admin/studies/{study.slug}/evaluators")
    row = listed.text.split(f'data-evaluator="{ev.id}"')[1].split("</tr>")[0]
    assert code in row and ("(screen-out)" in row) == (code == SCREENOUT)

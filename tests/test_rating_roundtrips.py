"""Round trips of the evaluator API over HTTP (TestClient), SQLite and PostgreSQL: the join
answers the first pair (an arrival is one request), the rating page embeds it, and the last
pair says it is the last, so nothing is asked after it."""

from __future__ import annotations

import json
import re

from sqlalchemy import select, update

from app.clips.models import Clip
from app.rating.models import Trial
from tests.kit.db import count
from tests.kit.rating import all_left, invite_token, join, link
from tests.kit.studies import mark_clips_done, rating_study


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def answer(client, base, study, trial_id, token):  # type: ignore[no-untyped-def]
    response = client.post(
        f"{base}/api/trials/{trial_id}/votes", json={"votes": all_left(study)}, headers=token
    )
    assert response.status_code == 200, response.text
    return response.json()["next"]


def test_join_answers_the_first_pair_and_the_one_after(client, session, settings):
    study = rating_study(session, settings, prompts=4, trials_per_evaluator=3)
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study))
    first = joined["next"]
    assert first["status"] == "trial" and first["after"] is not None and not first["last"]
    assert first["progress"] == joined["progress"] == {"answered": 0, "total": 3}
    # Both assigned in the join's transaction, the first marked shown (it can be answered).
    session.commit()
    trials = session.scalars(select(Trial).order_by(Trial.position)).all()
    assert [t.id for t in trials] == [first["trial"]["id"], first["after"]["id"]]
    assert trials[0].shown_at is not None and trials[1].shown_at is None
    # GET next (a reload, another client) answers the same, assigning nothing.
    token = bearer(joined["evaluator_token"])
    again = client.get(f"{base}/api/next", headers=token).json()
    assert again == first and count(session, Trial) == 2


def test_a_resumed_join_answers_the_current_pair(client, session, settings):
    study = rating_study(session, settings, prompts=4, trials_per_evaluator=3)
    base, invite = link(settings, study), invite_token(settings, study)
    joined = join(client, base, invite=invite)
    token = bearer(joined["evaluator_token"])
    second = answer(client, base, study, joined["next"]["trial"]["id"], token)
    client.cookies.clear()
    resumed = join(client, base, invite=invite)
    assert resumed["resumed"] is True
    assert resumed["next"] == second and resumed["progress"]["answered"] == 1
    assert count(session, Trial) == 3


def test_join_without_the_first_pair(client, session, settings):
    study = rating_study(session, settings, prompts=4, trials_per_evaluator=3)
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study), first_pair=False)
    assert joined["next"] is None and joined["progress"] == {"answered": 0, "total": 3}
    assert count(session, Trial) == 0
    first = client.get(f"{base}/api/next", headers=bearer(joined["evaluator_token"])).json()
    assert first["status"] == "trial" and first["after"] is not None
    assert count(session, Trial) == 2


def test_the_last_pair_says_so_and_its_answer_says_done(client, session, settings):
    study = rating_study(
        session, settings, prompts=4, trials_per_evaluator=3, completion_code="C0DE-9"
    )
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study))
    token = bearer(joined["evaluator_token"])
    current, lasts = joined["next"], []
    while current["status"] == "trial":
        lasts.append(current["last"])
        if current["last"]:
            assert current["after"] is None
            # GET next says it too; `next?after=` still answers, for clients that ask anyway.
            again = client.get(f"{base}/api/next", headers=token).json()
            assert again["last"] is True and again["trial"] == current["trial"]
            ahead = client.get(
                f"{base}/api/next?after={current['trial']['id']}", headers=token
            ).json()
            assert ahead["status"] == "done" and ahead["trial"] is None
        else:
            assert current["after"] is not None
        current = answer(client, base, study, current["trial"]["id"], token)
    assert lasts == [False, False, True]
    assert current["status"] == "done" and current["completion_code"] == "C0DE-9"
    assert current["last"] is False and current["progress"] == {"answered": 3, "total": 3}


def test_one_pair_only_is_the_last_at_once(client, session, settings):
    study = rating_study(session, settings, prompts=2, trials_per_evaluator=1)
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study))
    assert joined["next"]["last"] is True and joined["next"]["after"] is None
    assert count(session, Trial) == 1
    done = answer(
        client, base, study, joined["next"]["trial"]["id"], bearer(joined["evaluator_token"])
    )
    assert done["status"] == "done" and done["completion_code"]


def test_the_last_pair_is_a_repeat_when_repeats_come_last(client, session, settings):
    study = rating_study(session, settings, prompts=4, trials_per_evaluator=2, repeat_trials=1)
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study))
    token = bearer(joined["evaluator_token"])
    current, seen = joined["next"], []
    while current["status"] == "trial":
        seen.append((current["progress"]["answered"], current["last"]))
        current = answer(client, base, study, current["trial"]["id"], token)
    assert current["status"] == "done"
    assert seen == [(0, False), (1, False), (2, True)]


def test_a_pair_still_rendering_after_this_one_is_not_the_last(client, session, settings):
    """The pair after this one waits for its clips: `after` is null but more will come, so the
    page is not told `last` (it asks `next?after=`, which answers `waiting`)."""
    study = rating_study(session, settings, prompts=2, trials_per_evaluator=2, done=False)
    mark_clips_done(session, settings, study, prompt_ids=[study.prompts[0].id])
    session.execute(
        update(Clip).where(Clip.prompt_id == study.prompts[1].id).values(status="rendering")
    )
    session.commit()
    base = link(settings, study)
    joined = join(client, base, invite=invite_token(settings, study))
    first = joined["next"]
    assert first["status"] == "trial" and first["after"] is None and first["last"] is False
    ahead = client.get(
        f"{base}/api/next?after={first['trial']['id']}",
        headers=bearer(joined["evaluator_token"]),
    ).json()
    assert ahead["status"] == "waiting"


CONFIG = re.compile(r'<script type="application/json" id="rate-config">(.*?)</script>', re.S)


def test_the_rating_page_embeds_the_first_pair(client, session, settings):
    """The start form joins and assigns the first pair and the one after it; the page it leads
    to embeds what `GET next` would answer, without assigning anything more."""
    study = rating_study(session, settings, prompts=4, trials_per_evaluator=3)
    base, invite = link(settings, study), invite_token(settings, study)
    joined = client.post(f"{base}/join", data={"invite": invite}, follow_redirects=False)
    assert joined.status_code == 303 and count(session, Trial) == 2
    page = client.get(f"{base}/rate")
    assert page.status_code == 200
    config = json.loads(CONFIG.search(page.text).group(1))
    first = config["first"]
    assert first["status"] == "trial" and first["after"] is not None and not first["last"]
    assert client.get(f"{base}/api/next").json() == first
    assert count(session, Trial) == 2
    # A reload after an answer embeds the pair now current.
    second = answer(client, base, study, first["trial"]["id"], {})
    page = client.get(f"{base}/rate")
    embedded = json.loads(CONFIG.search(page.text).group(1))["first"]
    assert embedded == second and embedded["after"] is not None
    # The page's own done card, for the answer that says done, is in a template.
    assert '<template id="done-template">' in page.text


def test_the_rating_page_of_an_evaluator_whose_next_pair_renders(client, session, settings):
    study = rating_study(session, settings, prompts=2, trials_per_evaluator=2, done=False)
    session.execute(update(Clip).values(status="rendering"))
    session.commit()
    base = link(settings, study)
    client.post(f"{base}/join", data={"invite": invite_token(settings, study)})
    page = client.get(f"{base}/rate")
    first = json.loads(CONFIG.search(page.text).group(1))["first"]
    assert first["status"] == "waiting" and first["retry_after"]

"""Evaluator pages and JSON API over HTTP (TestClient) on SQLite and PostgreSQL: joining,
forged and repeated submits, media, the OpenAPI schema and the admin invite page."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.rating import tokens
from app.rating.models import Evaluator, Trial, Vote
from app.studies.models import StudyStatus
from tests.kit.admin import csrf_of, log_in
from tests.kit.db import count
from tests.kit.rating import all_left, invite_token, join, link
from tests.kit.studies import rating_study


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def study(session, settings):  # type: ignore[no-untyped-def]
    return rating_study(session, settings, prompts=4)


# --- joining --------------------------------------------------------------------------------


def test_invite_link_welcome_join_rate_and_resume(client, session, settings, study):
    base, invite = link(settings, study), invite_token(settings, study)
    welcome = client.get(f"{base}?invite={invite}")
    assert welcome.status_code == 200
    assert "Start rating" in welcome.text
    for criterion in study.criterion_list:  # every criterion is defined before the first pair
        assert criterion.label in welcome.text and criterion.question in welcome.text
    assert welcome.headers["cache-control"] == "no-store"
    assert welcome.headers["referrer-policy"] == "no-referrer"
    joined = client.post(f"{base}/join", data={"invite": invite}, follow_redirects=False)
    assert joined.status_code == 303 and joined.headers["location"] == f"{base}/rate"
    cookie = joined.headers["set-cookie"]
    assert f"Path={base};" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = client.get(f"{base}/rate")
    assert page.status_code == 200 and 'id="votes"' in page.text
    # The same invite on another device resumes the same evaluator.
    client.cookies.clear()
    client.post(f"{base}/join", data={"invite": invite}, follow_redirects=False)
    assert count(session, Evaluator) == 1
    # A returning evaluator (cookie only) is welcomed back.
    assert "Continue rating" in client.get(base).text


def test_external_participant_ids_resume_and_open_enrollment(client, session, settings):
    study = rating_study(
        session, settings, prompts=3, open_enrollment=True, external_id_param="PID"
    )
    base = link(settings, study)
    page = client.get(f"{base}?PID=abc123&STUDY_ID=x")
    assert 'name="external_id" value="abc123"' in page.text
    first = join(client, base, external_id="abc123")
    client.cookies.clear()
    again = join(client, base, external_id="abc123")
    assert again["resumed"] and not first["resumed"]
    assert again["evaluator_token"] != ""
    client.cookies.clear()
    anonymous = join(client, base)
    assert not anonymous["resumed"]
    assert count(session, Evaluator) == 2
    bad = client.get(f"{base}?PID=has%20space")
    assert bad.status_code == 403 and "not valid" in bad.text


def test_invitation_only_and_forged_links_are_refused_politely(client, session, settings, study):
    base = link(settings, study)
    plain = client.get(base, headers={"Accept": "text/html"})
    assert plain.status_code == 403 and "invitation only" in plain.text
    forged = client.get(f"{base}?invite={invite_token(settings, study)[:-3]}abc")
    assert forged.status_code == 403 and "not valid" in forged.text
    api = client.post(f"{base}/api/join", json={})
    assert api.status_code == 403 and api.json()["detail"]["code"] == "invite_required"
    assert client.get(base[:-2] + "zz").status_code == 404  # forged study key
    assert client.get("/r/999-aaaaaaaaaaaaaaaa/api/study").status_code == 404
    assert count(session, Evaluator) == 0


def test_an_invite_joined_with_three_made_up_participant_ids_is_one_evaluator(
    client, session, settings, study
):
    """A personal invite binds one evaluator: the first participant id is recorded on it,
    others are refused, by the API, the form and the welcome link alike."""
    base, invite = link(settings, study), invite_token(settings, study)
    first = join(client, base, invite=invite, external_id="made-up-1")
    client.cookies.clear()
    second = client.post(f"{base}/api/join", json={"invite": invite, "external_id": "made-up-2"})
    assert second.status_code == 409 and second.json()["detail"]["code"] == "invite_used"
    assert second.headers["cache-control"] == "no-store"
    assert client.get(f"{base}?invite={invite}&PROLIFIC_PID=made-up-3").status_code == 200
    third = client.post(f"{base}/join", data={"invite": invite, "external_id": "made-up-3"})
    assert third.status_code == 409 and "already used" in third.text
    assert tokens.EVALUATOR_COOKIE not in third.cookies
    # The invite itself still resumes its evaluator, with or without its own participant id.
    assert join(client, base, invite=invite)["resumed"]
    assert join(client, base, invite=invite, external_id="made-up-1")["resumed"]
    assert count(session, Evaluator) == 1
    evaluator = session.scalar(select(Evaluator))
    assert evaluator.external_id == "made-up-1" and evaluator.invite is not None
    assert first["evaluator_token"]


def test_a_participant_id_is_recorded_on_an_invite_once_and_never_twice(
    client, session, settings, study
):
    base = link(settings, study)
    mine, theirs = invite_token(settings, study), invite_token(settings, study)
    join(client, base, invite=mine)  # opened without an id first: the id comes later
    client.cookies.clear()
    assert join(client, base, invite=mine, external_id="P-1")["resumed"]
    client.cookies.clear()
    taken = client.post(f"{base}/api/join", json={"invite": theirs, "external_id": "P-1"})
    assert taken.status_code == 409 and taken.json()["detail"]["code"] == "external_id_used"
    assert count(session, Evaluator) == 1
    assert session.scalar(select(Evaluator.external_id)) == "P-1"


def test_joining_from_another_site_is_refused(client, session, settings):
    """Another site's page could make a visitor's browser join as someone the site chose."""
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    cross_site = [
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},  # a modern browser, no referrer
        {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.testserver"},
        {"Origin": "https://evil.example"},  # an older browser: Origin only
    ]
    for headers in cross_site:
        form = client.post(
            f"{base}/join", data={"external_id": "victim"}, headers=headers, follow_redirects=False
        )
        assert form.status_code == 403 and "another website" in form.text, headers
        assert tokens.EVALUATOR_COOKIE not in form.cookies
        api = client.post(f"{base}/api/join", json={}, headers=headers)
        assert api.status_code == 403 and api.json()["detail"]["code"] == "cross_site"
    assert count(session, Evaluator) == 0
    # The study's own pages (Chromium posts them with Origin: null under no-referrer), and API
    # clients, which send neither header, are accepted.
    own = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
    joined = client.post(f"{base}/join", data={}, headers=own, follow_redirects=False)
    assert joined.status_code == 303
    client.cookies.clear()
    same_host = {"Origin": "http://testserver"}
    assert client.post(
        f"{base}/join", data={}, headers=same_host, follow_redirects=False
    ).is_redirect
    client.cookies.clear()
    assert join(client, base)["evaluator_token"]
    assert count(session, Evaluator) == 3


def spellings(token: str) -> list[str]:
    """The token with its last character's spare base64 bits set every other way."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    return [token[:-1] + alphabet[(last & ~3) | bits] for bits in range(4) if bits != last & 3]


def test_an_evaluator_token_is_accepted_in_one_spelling_only(client, session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    token = join(client, base)["evaluator_token"]
    client.cookies.clear()
    assert client.get(f"{base}/api/next", headers=bearer(token)).status_code == 200
    others = spellings(token)
    assert len(others) == 3 and token not in others
    for other in others:
        response = client.get(f"{base}/api/next", headers=bearer(other))
        assert response.status_code == 401, other
    # Invites too: one invite, one spelling.
    invite = invite_token(settings, rating_study(session, settings, slug="inv", prompts=1))
    assert all(
        tokens.parse_invite(settings.resolved_secret_key(), v, 2) is None for v in spellings(invite)
    )


def test_evaluator_422s_are_private_and_name_refused_keys_briefly(client, session, settings, study):
    base = link(settings, study)
    token = join(client, base, invite=invite_token(settings, study))["evaluator_token"]
    trial = client.get(f"{base}/api/next", headers=bearer(token)).json()["trial"]
    url = f"{base}/api/trials/{trial['id']}/votes"
    long_key = "k" * 20_000
    votes = all_left(study)
    for body in (
        {"votes": {**votes, long_key: "left"}},  # an unknown criterion (the service refuses)
        {"votes": {**votes, long_key: "sideways"}},  # an unknown answer (validation refuses)
        {"votes": votes, long_key: 1},  # an unknown field
        {"votes": {f"{i}{'k' * 1_000}": "left" for i in range(50)}},  # many (within 64 KB)
    ):
        response = client.post(url, json=body, headers=bearer(token))
        assert response.status_code == 422, response.text[:200]
        assert response.headers["cache-control"] == "no-store"
        assert len(response.text) < 2_000 and "k" * 100 not in response.text
    form = client.post(f"{base}/join", data={"invite": "x" * 400})  # the form's own 422
    assert form.status_code == 422 and form.headers["cache-control"] == "no-store"


def test_missing_media_is_not_cached(client, session, settings, study):
    base = link(settings, study)
    missing = client.get(f"{base}/media/{'A' * 55}")
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [
        (StudyStatus.closed, 409, "has closed"),
        (StudyStatus.draft, 403, "not open yet"),
        (StudyStatus.rendering, 403, "not open yet"),
    ],
)
def test_only_open_studies_accept_evaluators(client, session, settings, status, code, text):
    study = rating_study(session, settings, prompts=2, open_enrollment=True, status=status)
    base = link(settings, study)
    page = client.get(base)
    assert page.status_code == code and text in page.text and "<h1" in page.text
    assert client.post(f"{base}/join", data={}).status_code == code
    assert client.post(f"{base}/api/join", json={}).status_code == code
    assert count(session, Evaluator) == 0


def test_closing_mid_session_stops_votes(client, session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    join(client, base)
    trial = client.get(f"{base}/api/next").json()["trial"]
    study.status = StudyStatus.closed
    session.commit()
    response = client.post(
        f"{base}/api/trials/{trial['id']}/votes", json={"votes": all_left(study)}
    )
    assert response.status_code == 409 and response.json()["detail"]["code"] == "study_closed"
    assert client.get(trial["left"]["url"]).status_code == 409
    assert count(session, Vote) == 0


# --- forged and repeated submits ------------------------------------------------------------


def test_forged_submits_store_nothing(client, session, settings, study):
    base = link(settings, study)
    mine = join(client, base, invite=invite_token(settings, study))["evaluator_token"]
    client.cookies.clear()
    theirs = join(client, base, invite=invite_token(settings, study))["evaluator_token"]
    client.cookies.clear()
    trial = client.get(f"{base}/api/next", headers=bearer(mine)).json()["trial"]
    url = f"{base}/api/trials/{trial['id']}/votes"
    votes = all_left(study)
    keys = study.criterion_keys
    cases = [
        (bearer(theirs), {"votes": votes}, 404, "trial_not_found"),  # another evaluator's trial
        (bearer(mine), {"votes": {**votes, "smoothness": "left"}}, 422, "invalid_votes"),
        (bearer(mine), {"votes": {k: "left" for k in keys[1:]}}, 422, "invalid_votes"),
        (bearer(mine), {"votes": {**votes, keys[0]: "both"}}, 422, None),  # bad choice
        (bearer(mine), {"votes": votes, "extra": 1}, 422, None),
        (bearer(mine), {"votes": []}, 422, None),
        (bearer(mine + "x"), {"votes": votes}, 401, "not_joined"),  # tampered token
        ({}, {"votes": votes}, 401, "not_joined"),  # no token at all
    ]
    for headers, body, status, code in cases:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        if code:
            assert response.json()["detail"]["code"] == code
    unknown = client.post(
        f"{base}/api/trials/999999/votes", json={"votes": votes}, headers=bearer(mine)
    )
    assert unknown.status_code == 404
    # A cookie signed for another study, or forged, identifies nobody.
    other = rating_study(session, settings, slug="other", prompts=1, open_enrollment=True)
    other_token = join(client, link(settings, other))["evaluator_token"]
    client.cookies.clear()
    assert client.post(url, json={"votes": votes}, headers=bearer(other_token)).status_code == 401
    client.cookies.set(tokens.EVALUATOR_COOKIE, mine[:-4] + "AAAA")
    assert client.post(url, json={"votes": votes}).status_code == 401
    client.cookies.clear()
    # A form post (what another site could send) is not accepted as JSON.
    assert client.post(url, data={"votes": "x"}, headers=bearer(mine)).status_code == 422
    assert count(session, Vote) == 0
    assert session.scalar(select(Trial.answered_at).where(Trial.id == trial["id"])) is None


def test_repeated_submit_is_idempotent_and_a_conflicting_one_is_409(
    client, session, settings, study
):
    base = link(settings, study)
    token = join(client, base, invite=invite_token(settings, study))["evaluator_token"]
    trial = client.get(f"{base}/api/next", headers=bearer(token)).json()["trial"]
    url = f"{base}/api/trials/{trial['id']}/votes"
    votes = all_left(study)
    first = client.post(url, json={"votes": votes}, headers=bearer(token))
    second = client.post(url, json={"votes": votes}, headers=bearer(token))
    assert first.status_code == second.status_code == 200
    a, b = first.json(), second.json()
    assert a["trial_id"] == b["trial_id"] and a["votes"] == b["votes"] == votes
    assert a["answered_at"] == b["answered_at"]
    assert a["next"]["trial"]["id"] == b["next"]["trial"]["id"]  # the same next pair, too
    conflict = client.post(
        url, json={"votes": {**votes, study.criterion_keys[0]: "right"}}, headers=bearer(token)
    )
    assert conflict.status_code == 409 and conflict.json()["detail"]["code"] == "already_answered"
    assert count(session, Vote) == len(votes)
    assert sorted(session.scalars(select(Vote.choice))) == ["left"] * len(votes)


def test_two_tabs_share_the_current_and_prefetched_trial(client, session, settings, study):
    base = link(settings, study)
    token = join(client, base, invite=invite_token(settings, study))["evaluator_token"]
    tab_1 = client.get(f"{base}/api/next", headers=bearer(token)).json()
    tab_2 = client.get(f"{base}/api/next", headers=bearer(token)).json()
    assert tab_1 == tab_2
    after = f"{base}/api/next?after={tab_1['trial']['id']}"
    ahead_1 = client.get(after, headers=bearer(token)).json()
    ahead_2 = client.get(after, headers=bearer(token)).json()
    assert ahead_1["trial"]["id"] == ahead_2["trial"]["id"] != tab_1["trial"]["id"]
    assert count(session, Trial) == 2
    early = client.post(
        f"{base}/api/trials/{ahead_1['trial']['id']}/votes",
        json={"votes": all_left(study)},
        headers=bearer(token),
    )
    assert early.status_code == 409 and early.json()["detail"]["code"] == "not_current"
    done = client.post(
        f"{base}/api/trials/{tab_1['trial']['id']}/votes",
        json={"votes": all_left(study)},
        headers=bearer(token),
    )
    assert done.json()["next"]["trial"]["id"] == ahead_1["trial"]["id"]
    assert done.json()["next"]["progress"] == {"answered": 1, "total": 4}


def test_next_and_submit_answers_carry_the_pair_after_assigned_once(
    client, session, settings, study
):
    base = link(settings, study)
    token = join(client, base, invite=invite_token(settings, study))["evaluator_token"]
    current = client.get(f"{base}/api/next", headers=bearer(token)).json()
    # The first pair comes with its follower, both assigned in that one request...
    first_after = current["after"]
    assert first_after is not None and first_after["id"] != current["trial"]["id"]
    assert count(session, Trial) == 2
    # ...which a reload and a prefetch request give again, assigning nothing.
    again = client.get(f"{base}/api/next", headers=bearer(token)).json()
    assert again["trial"] == current["trial"] and again["after"] == first_after
    asked = client.get(
        f"{base}/api/next?after={current['trial']['id']}", headers=bearer(token)
    ).json()
    assert asked["trial"] == first_after and count(session, Trial) == 2
    seen = [current["trial"]["id"]]
    for answered in range(1, 5):
        trial_id = current["trial"]["id"]
        answer = client.post(
            f"{base}/api/trials/{trial_id}/votes",
            json={"votes": all_left(study)},
            headers=bearer(token),
        ).json()
        current = answer["next"]
        if answered == 4:  # quota reached: nothing after the last answer
            assert current["status"] == "done" and current["after"] is None
            break
        seen.append(current["trial"]["id"])
        after = current["after"]
        if answered == 3:  # the last pair has nothing after it
            assert after is None
            continue
        # The same trial a prefetch request gives, assigned once: asking adds no trial.
        asked = client.get(
            f"{base}/api/next?after={current['trial']['id']}", headers=bearer(token)
        ).json()
        assert asked["trial"] == after and after["id"] not in seen
        assert count(session, Trial) == answered + 2
        # Its clips are served before it becomes current.
        assert client.get(after["left"]["url"]).status_code == 200
    assert count(session, Trial) == 4


def test_min_view_time_is_enforced_by_the_server(client, session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True, min_view_seconds=30)
    base = link(settings, study)
    join(client, base)
    trial = client.get(f"{base}/api/next").json()["trial"]
    early = client.post(f"{base}/api/trials/{trial['id']}/votes", json={"votes": all_left(study)})
    assert early.status_code == 409 and early.json()["detail"]["code"] == "too_early"
    assert "watch both clips" in early.json()["detail"]["message"]
    assert count(session, Vote) == 0


# --- pages, media, API schema ---------------------------------------------------------------


def test_done_page_shows_the_completion_code(client, session, settings):
    study = rating_study(
        session, settings, prompts=2, open_enrollment=True, completion_code="C0DE-77"
    )
    base = link(settings, study)
    join(client, base)
    assert client.get(f"{base}/done", follow_redirects=False).status_code == 303
    result = client.get(f"{base}/api/next").json()
    while result["status"] == "trial":
        url = f"{base}/api/trials/{result['trial']['id']}/votes"
        result = client.post(url, json={"votes": all_left(study)}).json()["next"]
    assert result["status"] == "done" and result["completion_code"] == "C0DE-77"
    assert client.get(f"{base}/rate", follow_redirects=False).headers["location"] == f"{base}/done"
    done = client.get(f"{base}/done")
    assert "C0DE-77" in done.text and "Thank you" in done.text
    # Coming back to the study link later leads to the same thank-you page.
    assert client.get(base, follow_redirects=False).headers["location"] == f"{base}/done"


def test_media_is_opaque_cacheable_and_unforgeable(client, session, settings, study):
    base = link(settings, study)
    join(client, base, invite=invite_token(settings, study))
    trial = client.get(f"{base}/api/next").json()["trial"]
    left, right = client.get(trial["left"]["url"]), client.get(trial["right"]["url"])
    assert left.status_code == right.status_code == 200
    assert left.content[:6] == b"GIF89a" and left.content != right.content
    assert left.headers["content-type"] == "image/gif"
    assert left.headers["cache-control"] == "private, max-age=86400, immutable"
    for header in ("last-modified", "etag", "content-disposition"):
        assert header not in left.headers
    # The same trial keeps its URLs (a reload hits the browser's cache); they name nothing.
    assert client.get(f"{base}/api/next").json()["trial"] == trial
    token = trial["left"]["url"].rsplit("/", 1)[1]
    other_side = trial["right"]["url"].rsplit("/", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{66}", token) and len(other_side) == len(token)
    db_trial = session.get(Trial, trial["id"])
    found = tokens.parse_media_token(settings.resolved_secret_key(), token)
    assert found is not None and (found.study_id, found.trial_id, found.side) == (
        study.id,
        trial["id"],
        "l",
    )
    clip_on_left = db_trial.matchup.clip_a_id if db_trial.a_on_left else db_trial.matchup.clip_b_id
    assert found.clip_id == clip_on_left
    assert {found.clip_id, found.partner_id} == {
        db_trial.matchup.clip_a_id,
        db_trial.matchup.clip_b_id,
    }
    forged = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),  # last character changed
        token[:30] + ("A" if token[30] != "A" else "B") + token[31:],  # one in the middle
        token[:20] + other_side[20:],  # halves of two tokens
        tokens.media_token(  # the right clip id, but not signed with this server's secret
            "another-secret-" + "y" * 32,
            tokens.MediaRef(study.id, trial["id"], found.clip_id, "l", found.partner_id),
        ),
        "1l.x",
        "../../etc/passwd",
        "A" * 200,
    ]
    for bad in forged:
        assert client.get(f"{base}/media/{bad}").status_code == 404
    # A genuine token only opens media under its own study's link.
    other = rating_study(session, settings, slug="other", prompts=1)
    assert client.get(f"{link(settings, other)}/media/{token}").status_code == 404


def test_media_of_a_closed_study_is_refused(app, client, session, settings, study):
    base = link(settings, study)
    join(client, base, invite=invite_token(settings, study))
    url = client.get(f"{base}/api/next").json()["trial"]["left"]["url"]
    assert client.get(url).status_code == 200
    app.state.media_cache.status_seconds = 0  # the process cache keeps a status for 2 s
    study.status = StudyStatus.closed
    session.commit()
    refused = client.get(url)
    assert refused.status_code == 409 and "closed" in refused.text


def test_later_views_of_a_clip_read_neither_database_nor_storage(
    app, client, session, settings, study, monkeypatch
):
    from app.rating import media
    from app.storage.local import LocalStorage

    base = link(settings, study)
    join(client, base, invite=invite_token(settings, study))
    url = client.get(f"{base}/api/next").json()["trial"]["left"]["url"]
    first = client.get(url).content
    reads, lookups = [], []
    monkeypatch.setattr(LocalStorage, "read", lambda self, key: reads.append(key))
    real_lookup = media.media_lookup
    monkeypatch.setattr(media, "media_lookup", lambda **kw: lookups.append(kw) or real_lookup(**kw))
    again = client.get(url)
    assert again.status_code == 200 and again.content == first
    assert reads == [] and lookups == []


def test_openapi_documents_the_flow(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert "post" in paths["/r/{key}/api/join"]
    assert "get" in paths["/r/{key}/api/next"]
    assert "post" in paths["/r/{key}/api/trials/{trial_id}/votes"]
    assert "get" in paths["/r/{key}/media/{token}"]
    names = set(schema["components"]["schemas"])
    assert {"JoinIn", "JoinOut", "NextOut", "TrialOut", "VotesIn", "VotesOut", "ErrorOut"} <= names
    votes = paths["/r/{key}/api/trials/{trial_id}/votes"]["post"]
    assert {"200", "404", "409", "422"} <= set(votes["responses"])


def test_admin_makes_invite_links(client, session, settings, study):
    page = f"/admin/studies/{study.slug}/invites"
    assert client.get(page, follow_redirects=False).status_code == 303  # to the login form
    assert client.post(page, data={"count": "3"}).status_code in (401, 403)
    log_in(client)
    form = client.get(page)
    assert form.status_code == 200 and "Personal invite links" in form.text
    assert client.post(page, data={"count": "3"}).status_code == 403  # no CSRF token
    made = client.post(page, data={"count": "3", "csrf_token": csrf_of(form.text)})
    assert made.status_code == 200
    links = re.findall(r"http://testserver/r/[^\s<]+\?invite=[^\s<]+", made.text)
    assert len(links) == 3 and len(set(links)) == 3
    bad = client.post(page, data={"count": "0", "csrf_token": csrf_of(form.text)})
    assert bad.status_code == 422
    # The links work for evaluators (and the study slug appears in none of them).
    client.cookies.clear()
    assert all(study.slug not in url for url in links)
    assert client.get(links[0].replace("http://testserver", "")).status_code == 200

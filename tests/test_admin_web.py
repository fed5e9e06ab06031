"""Admin web on a real database: auth on every route, CSRF, uploads, status moves, prompts."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

from app.auth import service as auth_service
from app.auth.deps import PUBLIC_ADMIN_PATHS, assert_admin_routes_protected
from app.studies.models import Arm, Prompt, Study, StudyStatus
from app.studies.router import UPLOAD_BODY_LIMIT
from app.studies.studyfile import MAX_FILE_BYTES
from tests.kit.admin import ADMIN_PASSWORD, admin_token, csrf_of, log_in, upload
from tests.kit.db import db
from tests.kit.paths import EXAMPLE_STUDY
from tests.kit.studies import SMALL_PROMPTS_CSV, SMALL_STUDY_TOML, small_study

EXAMPLE_TOML = EXAMPLE_STUDY.read_bytes()
EXAMPLE_CSV = (EXAMPLE_STUDY.parent / "prompts.csv").read_bytes()


# --- helpers --------------------------------------------------------------------------------


def set_status(client, slug: str, status: str, *, token: str | None = None):  # type: ignore[no-untyped-def]
    data = {"status": status}
    if token is not None:
        data["csrf_token"] = token
    return client.post(f"/admin/studies/{slug}/status", data=data, follow_redirects=False)


def study_rows(engine) -> dict[str, StudyStatus]:  # type: ignore[no-untyped-def]
    with db(engine) as session:
        return {slug: status for slug, status in session.execute(select(Study.slug, Study.status))}


# --- every admin route is protected ---------------------------------------------------------


def admin_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route under /admin as served (included routers flattened)."""
    return [
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if (route.path or "").startswith("/admin") and route.path not in PUBLIC_ADMIN_PATHS
        for method in sorted(route.methods or ["GET"])
    ]


def test_every_admin_route_refuses_anonymous_requests(app, client, session, engine):
    slug = small_study(session).slug
    routes = admin_routes(app)
    assert len(routes) >= 5, routes  # not vacuous: list, new, create, study, status, logout
    for method, template in routes:
        path = re.sub(r"\{[^}]+\}", slug, template)
        response = client.request(method, path, follow_redirects=False)
        if method == "GET":
            assert response.status_code == 303, (method, path, response.status_code)
            location = response.headers["location"]
            assert location.startswith("/admin/login?next=%2Fadmin"), location
            as_json = client.get(path, headers={"Accept": "application/json"})
            assert as_json.status_code == 401, (path, as_json.status_code)
        else:
            assert response.status_code in (401, 403), (method, path, response.status_code)
    assert study_rows(engine) == {slug: StudyStatus.draft}


def test_app_refuses_to_start_with_an_unprotected_admin_route():
    app = FastAPI()
    oops = APIRouter(prefix="/admin")

    @oops.get("/oops")
    def unprotected() -> str:
        return "secret"

    app.include_router(oops)
    with pytest.raises(RuntimeError, match="/admin/oops"):
        assert_admin_routes_protected(app)


# --- login and logout -----------------------------------------------------------------------


def test_wrong_password_is_refused_and_grants_nothing(client):
    response = log_in(client, password="not the password")
    assert response.status_code == 401
    assert "Wrong password" in response.text
    assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_login_gives_access_and_logout_takes_it_away(client):
    anonymous_cookie = client.get("/admin/login").cookies.get(auth_service.SESSION_COOKIE)
    response = log_in(client)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/"
    # Rotated: the session after login is not the anonymous one.
    assert client.cookies.get(auth_service.SESSION_COOKIE) != anonymous_cookie
    page = client.get("/admin/")
    assert page.status_code == 200
    assert "Log out" in page.text

    response = client.post(
        "/admin/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert response.status_code == 303
    assert client.get("/admin/", follow_redirects=False).status_code == 303
    assert "Signed out" in client.get("/admin/login").text


def test_login_returns_to_the_requested_page_but_never_off_site(client, session):
    small_study(session, slug="back")
    response = client.get("/admin/studies/back?theme=urban", follow_redirects=False)
    next_url = httpx.URL(response.headers["location"]).params["next"]
    assert next_url == "/admin/studies/back?theme=urban"
    assert log_in(client, next_url=next_url).headers["location"] == next_url
    client.cookies.clear()
    assert log_in(client, next_url="https://evil.example/").headers["location"] == "/admin/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/admin/studies/x?theme=a", "/admin/studies/x?theme=a"),
        ("/admin", "/admin"),
        (None, "/admin/"),
        ("", "/admin/"),
        ("//evil.example/admin/", "/admin/"),
        ("https://evil.example/admin/", "/admin/"),
        ("/\\evil.example", "/admin/"),
        ("/admin\\@evil.example", "/admin/"),
        ("/adminevil", "/admin/"),
        ("/rate/anything", "/admin/"),
        ("/admin/\r\nSet-Cookie: x=1", "/admin/"),
        ("javascript:alert(1)", "/admin/"),
    ],
)
def test_next_is_only_ever_a_local_admin_path(value, expected):
    assert auth_service.safe_next(value) == expected


def test_repeated_failures_are_throttled(app, client):
    app.state.login_throttle = auth_service.LoginThrottle(max_failures=2, window_s=60)
    assert log_in(client, password="guess 1").status_code == 401
    assert log_in(client, password="guess 2").status_code == 401
    response = log_in(client)  # even the right password waits out the window
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert client.get("/admin/", follow_redirects=False).status_code == 303


# --- CSRF -----------------------------------------------------------------------------------


def test_post_without_or_with_a_wrong_csrf_token_is_refused(admin, session, engine):
    slug = small_study(session).slug
    for token in (None, "", "forged-" + "x" * 40):
        response = set_status(admin, slug, "rendering", token=token)
        assert response.status_code == 403, token
        assert "security token" in response.text
    response = upload(admin, EXAMPLE_TOML, EXAMPLE_CSV, token="wrong")
    assert response.status_code == 403
    assert admin.post("/admin/logout", follow_redirects=False).status_code == 403
    assert study_rows(engine) == {slug: StudyStatus.draft}
    assert admin.get("/admin/").status_code == 200  # still logged in


def test_login_form_checks_csrf_too(client):
    client.get("/admin/login")
    response = client.post("/admin/login", data={"password": ADMIN_PASSWORD})
    assert response.status_code == 403
    assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_the_pre_login_token_dies_with_the_anonymous_session(client, session):
    slug = small_study(session).slug
    anonymous_token = csrf_of(client.get("/admin/login").text)
    log_in(client)
    assert set_status(client, slug, "rendering", token=anonymous_token).status_code == 403


# --- creating studies -----------------------------------------------------------------------


def test_upload_the_example_study(admin, engine):
    response = upload(admin, EXAMPLE_TOML, EXAMPLE_CSV)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/studies/lightning-vs-animatediff"
    page = admin.get(response.headers["location"])
    assert "Created study" in page.text
    assert "AnimateDiff-Lightning vs AnimateDiff" in page.text
    with db(engine) as session:
        study = session.scalar(select(Study))
        assert study is not None and study.slug == "lightning-vs-animatediff"
        assert session.scalar(select(func.count(Arm.id)).where(Arm.study_id == study.id)) == 2
        assert (
            session.scalar(select(func.count(Prompt.id)).where(Prompt.study_id == study.id)) == 100
        )
    listing = admin.get("/admin/").text
    assert "/admin/studies/lightning-vs-animatediff" in listing
    assert "0</strong> / 200 done" in listing


def test_broken_csv_lists_every_problem_and_creates_nothing(admin, engine):
    csv = SMALL_PROMPTS_CSV + ",urban,3\na dog,pets,not-a-seed\n"
    response = upload(admin, SMALL_STUDY_TOML.format(slug="broken").encode(), csv.encode())
    assert response.status_code == 422
    assert "prompts.csv:4:1: prompt is empty" in response.text
    assert "prompts.csv:5:" in response.text and "not a whole number" in response.text
    assert "nothing was created" in response.text
    assert study_rows(engine) == {}


def test_broken_study_file_points_at_the_line(admin, engine):
    toml = SMALL_STUDY_TOML.format(slug="bad-kind").replace(
        'kind = "animatediff"\n', 'kind = "sora"\n'
    )
    response = upload(admin, toml.encode(), SMALL_PROMPTS_CSV.encode())
    assert response.status_code == 422
    assert re.search(r"study\.toml:\d+:1: arms\.0\.kind: unknown pipeline kind", response.text)
    assert study_rows(engine) == {}


def test_duplicate_slug_is_a_conflict(admin, engine):
    assert upload(admin, EXAMPLE_TOML, EXAMPLE_CSV).status_code == 303
    response = upload(admin, EXAMPLE_TOML, EXAMPLE_CSV)
    assert response.status_code == 409
    assert "already exists" in response.text
    assert list(study_rows(engine)) == ["lightning-vs-animatediff"]


def test_oversized_uploads_are_refused_with_a_clear_error(admin, engine):
    big_csv = b"prompt,theme\n" + b"x" * MAX_FILE_BYTES
    response = upload(admin, EXAMPLE_TOML, big_csv)
    assert response.status_code == 413
    assert "prompts.csv: the file is larger than the 5 MB limit" in response.text
    # Bodies past the form's limit are cut off while streaming, before any parsing.
    response = upload(admin, b"#" * UPLOAD_BODY_LIMIT, big_csv)
    assert response.status_code == 413
    assert "at most 5 MB" in response.text
    assert study_rows(engine) == {}


def test_upload_without_a_prompts_line_is_accepted(admin, engine):
    toml = SMALL_STUDY_TOML.format(slug="no-line").replace('prompts = "prompts.csv"\n', "")
    assert "prompts =" not in toml
    response = upload(admin, toml.encode(), SMALL_PROMPTS_CSV.encode())
    assert response.status_code == 303, response.text
    assert study_rows(engine) == {"no-line": StudyStatus.draft}
    form = admin.get("/admin/studies/new").text
    assert "is ignored" not in form and "may be\n      left out here" in form


def kept_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(kept_\w+)" value="([^"]*)">', html))


def test_a_refused_upload_keeps_both_files_for_the_next_try(admin, engine):
    csv = SMALL_PROMPTS_CSV + ",urban,3\n"
    toml = SMALL_STUDY_TOML.format(slug="kept").encode()
    response = upload(admin, toml, csv.encode())
    assert response.status_code == 422
    kept = kept_fields(response.text)
    assert set(kept) == {"kept_study_file", "kept_prompts_file"}
    assert "Kept from your last try: <code>study.toml</code>" in response.text
    assert 'name="study_file" type="file"' in response.text
    assert not re.search(r'name="study_file"[^>]*required', response.text)  # nothing to pick

    # Sending the kept files alone gives the same verdict; a fixed CSV beside the kept study
    # file creates the study, byte for byte what was uploaded first.
    token = admin_token(admin)
    again = admin.post("/admin/studies", data={"csrf_token": token, **kept})
    assert again.status_code == 422 and "prompts.csv:4:1: prompt is empty" in again.text
    files = {"prompts_file": ("fixed.csv", SMALL_PROMPTS_CSV.encode(), "text/csv")}
    data = {"csrf_token": token, "kept_study_file": kept["kept_study_file"]}
    done = admin.post("/admin/studies", data=data, files=files, follow_redirects=False)
    assert done.status_code == 303, done.text
    with db(engine) as session:
        study = session.scalar(select(Study).where(Study.slug == "kept"))
        assert study is not None and study.study_file == toml.decode()
        assert len(study.prompts) == 2


def test_a_missing_file_keeps_the_other_one(admin, engine):
    files = {"study_file": ("mine.toml", EXAMPLE_TOML, "application/toml")}
    response = admin.post("/admin/studies", data={"csrf_token": admin_token(admin)}, files=files)
    assert response.status_code == 422
    assert "prompts.csv:1:1: no file chosen" in response.text
    assert set(kept_fields(response.text)) == {"kept_study_file"}
    assert "Kept from your last try: <code>mine.toml</code>" in response.text
    damaged = {"csrf_token": admin_token(admin), "kept_study_file": "mine.toml:not base64!"}
    response = admin.post("/admin/studies", data=damaged)
    assert "mine.toml:1:1: the file kept from the last try is damaged" in response.text
    assert study_rows(engine) == {}


def test_counts_are_pluralized(admin, engine):
    csv = "prompt,theme\na lone lighthouse,sea\n"
    response = upload(admin, SMALL_STUDY_TOML.format(slug="one").encode(), csv.encode())
    page = admin.get(response.headers["location"]).text
    assert "2 arms, 1 prompt, 2 clips pending." in page
    assert re.search(r"Showing 1\u20131 of 1 prompt\s*</p>", page)
    assert "1 prompts" not in page


def test_missing_file_is_reported(admin, engine):
    files = {"study_file": ("study.toml", EXAMPLE_TOML, "application/toml")}
    data = {"csrf_token": admin_token(admin)}
    response = admin.post("/admin/studies", data=data, files=files)
    assert response.status_code == 422
    assert "prompts.csv:1:1: no file chosen" in response.text
    assert study_rows(engine) == {}


# --- one study ------------------------------------------------------------------------------


def test_status_moves_through_the_form(admin, session, engine):
    slug = small_study(session).slug
    token = admin_token(admin)
    response = set_status(admin, slug, "rendering", token=token)
    assert response.status_code == 303
    assert "is now rendering" in admin.get(response.headers["location"]).text
    assert study_rows(engine) == {slug: StudyStatus.rendering}


def test_illegal_status_move_is_a_conflict_and_changes_nothing(admin, session, engine):
    slug = small_study(session).slug
    token = admin_token(admin)
    response = set_status(admin, slug, "closed", token=token)
    assert response.status_code == 409
    assert "is draft; it can move to open, rendering, not closed" in response.text
    assert set_status(admin, slug, "bogus", token=token).status_code == 422
    assert study_rows(engine) == {slug: StudyStatus.draft}


def test_study_page_shows_arms_criteria_and_allowed_moves(admin, session):
    slug = small_study(session).slug
    page = admin.get(f"/admin/studies/{slug}").text
    expected = ["animatediff-lightning", "ByteDance/<wbr>AnimateDiff-Lightning"]
    expected += ["64\u00d764", "euler", "Motion naturalness", "Which clip moves more fluidly"]
    for text in expected:
        assert text in page, text
    moves = re.findall(r'name="status" value="(\w+)"', page)
    assert moves == ["rendering", "open"]


def test_theme_filter_shows_only_that_theme(admin, session):
    slug = small_study(session).slug
    page = admin.get(f"/admin/studies/{slug}", params={"theme": "urban"}).text
    assert "a city at night" in page
    assert "a red fox running" not in page
    assert re.search(r"wildlife\s*<span class=\"count\">1</span>", page)


def test_long_prompt_lists_are_paginated(admin, engine):
    upload(admin, EXAMPLE_TOML, EXAMPLE_CSV)
    page_one = admin.get("/admin/studies/lightning-vs-animatediff").text
    assert "Showing 1\u201350 of 100" in page_one and "Page 1 of 2" in page_one
    page_two = admin.get("/admin/studies/lightning-vs-animatediff", params={"page": 2}).text
    assert "Showing 51\u2013100 of 100" in page_two


def test_prompt_html_is_escaped(admin, session):
    csv = SMALL_PROMPTS_CSV + '"<script>alert(1)</script> a cat",<b>pets</b>,3\n'
    slug = small_study(session, slug="xss", prompts_csv=csv).slug
    page = admin.get(f"/admin/studies/{slug}").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a cat" in page
    assert "<b>pets</b>" not in page and "&lt;b&gt;pets&lt;/b&gt;" in page


def test_unknown_study_is_a_404_page(admin):
    response = admin.get("/admin/studies/no-such-study")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "no study with slug" in response.text


def test_root_leads_to_the_admin_and_every_page_has_a_favicon(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/admin/"
    assert client.get("/").url.path == "/admin/login"  # and on to the sign-in form
    page = client.get("/admin/login").text
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page)
    assert icon, "the base layout links no favicon"
    for path in (icon[1], "/favicon.ico"):  # the latter for browsers that ask regardless
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("image/svg+xml")
        assert response.text.lstrip().startswith("<svg")


# --- over real HTTP -------------------------------------------------------------------------


def test_admin_flow_over_real_http(live_server, engine):
    with httpx.Client(base_url=live_server, follow_redirects=False, timeout=10) as http:
        assert http.get("/admin/").status_code == 303
        token = csrf_of(http.get("/admin/login").text)
        cookie = http.cookies.get(auth_service.SESSION_COOKIE)
        assert cookie  # the pre-session that carries the login form's token
        response = http.post("/admin/login", data={"password": ADMIN_PASSWORD, "csrf_token": token})
        assert response.status_code == 303
        set_cookie = response.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        token = csrf_of(http.get("/admin/").text)
        files = {
            "study_file": ("study.toml", EXAMPLE_TOML),
            "prompts_file": ("prompts.csv", EXAMPLE_CSV),
        }
        response = http.post("/admin/studies", data={"csrf_token": token}, files=files)
        assert response.status_code == 303
        page = http.get(response.headers["location"], params={"theme": "sports"})
        assert page.status_code == 200 and "a skateboarder doing a kickflip" in page.text
    assert study_rows(engine) == {"lightning-vs-animatediff": StudyStatus.draft}

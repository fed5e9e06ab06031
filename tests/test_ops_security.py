"""Security headers, HTTPS-only cookies and HSTS, templates a strict CSP can serve, Chromium
loading the pages under that CSP, and the join/submit rate limits."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from app.main import create_app
from app.ops.security import RateLimiter, content_security_policy
from tests.kit.admin import log_in
from tests.kit.config import configured
from tests.kit.paths import ROOT
from tests.kit.rating import all_left, link
from tests.kit.studies import rating_study


def directives(csp: str) -> dict[str, list[str]]:
    out = {}
    for part in csp.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


# --- headers --------------------------------------------------------------------------------


def test_every_kind_of_response_carries_the_security_headers(client, session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    responses = {
        "login page": client.get("/admin/login"),
        "admin redirect": client.get("/admin/", follow_redirects=False),
        "evaluator page": client.get(base),
        "evaluator api": client.get(f"{base}/api/study"),
        "static file": client.get("/static/app.css"),
        "not found": client.get("/no/such/page"),
        "probe": client.get("/healthz"),
    }
    for what, response in responses.items():
        h = response.headers
        csp = directives(h["content-security-policy"])
        assert csp["script-src"] == ["'self'"], what
        assert csp["style-src"] == csp["style-src-elem"] == ["'self'"], what
        assert csp["style-src-attr"] == ["'unsafe-inline'"], what  # the dashboard's charts
        assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"], what
        assert h["x-frame-options"] == "DENY", what
        assert h["x-content-type-options"] == "nosniff", what
        assert "referrer-policy" in h and "permissions-policy" in h, what
        assert "strict-transport-security" not in h, what  # not over plain HTTP
    # Admin pages are never cached; a route's own, stricter headers win over the defaults.
    assert responses["login page"].headers["cache-control"] == "no-store"
    assert responses["admin redirect"].headers["cache-control"] == "no-store"
    assert responses["evaluator page"].headers["referrer-policy"] == "no-referrer"
    assert responses["probe"].headers["referrer-policy"] == "same-origin"


def test_the_api_docs_get_a_policy_of_their_own(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert "cdn.jsdelivr.net" not in client.get("/admin/login").headers["content-security-policy"]


EXTERNAL_RESOURCE = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']?(?:[a-z][a-z0-9+.-]*:)?//", re.I
)
# A stream that never ends; the media route answers bytes.
NOT_PAGES = ("/dashboard/events", "/media/{token}")


def test_production_serves_no_third_party_script(session, settings):
    """In production no page of the app (the API docs included: off) loads anything from
    another origin, and no policy names a CDN."""
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    production = configured(settings, env="production")
    app = create_app(production)
    values = {"{slug}": study.slug, "{key}": link(settings, study).removeprefix("/r/")}
    paths = []
    for route in iter_route_contexts(app.routes):
        path = route.path or ""
        if "GET" in (getattr(route, "methods", None) or ()) and not path.endswith(NOT_PAGES):
            for name, value in values.items():
                path = path.replace(name, value)
            paths.append(path)
    assert "/admin/studies/{slug}/dashboard".replace("{slug}", study.slug) in paths
    with TestClient(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
        assert client.post(f"{link(settings, study)}/api/join", json={}).status_code == 200
        assert log_in(client).status_code == 303
        for path in [*paths, "/docs", "/no/such/page"]:
            response = client.get(path)
            assert response.status_code < 500, (path, response.status_code)
            policy = response.headers["content-security-policy"]
            assert "http" not in policy and "cdn" not in policy, (path, policy)
            assert not EXTERNAL_RESOURCE.search(response.text), (path, response.text[:300])
    # Not vacuous: the docs page, where it is served, loads its scripts from a CDN.
    with TestClient(create_app(configured(production, api_docs=True))) as client:
        docs = client.get("/docs")
        assert EXTERNAL_RESOURCE.search(docs.text)
        assert "cdn." in docs.headers["content-security-policy"]


def test_https_only_marks_cookies_secure_and_sends_hsts(session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    secure = configured(settings, https_only=True)
    with TestClient(create_app(secure), base_url="https://testserver") as client:
        login = log_in(client)
        assert login.status_code == 303
        assert "secure" in login.headers["set-cookie"].lower()
        joined = client.post(f"{link(settings, study)}/api/join", json={})
        assert joined.status_code == 200, joined.text
        assert "secure" in joined.headers["set-cookie"].lower()
        page = client.get("/admin/login")
        assert page.headers["strict-transport-security"].startswith("max-age=")
        assert "upgrade-insecure-requests" in page.headers["content-security-policy"]


def test_s3_media_origin_is_allowed_for_images(settings):
    s3 = configured(
        settings, storage_url="s3://bucket/media", s3_endpoint_url="https://minio.example:9000"
    )
    csp = directives(content_security_policy(s3))
    assert "https://minio.example:9000" in csp["img-src"]
    assert "https://minio.example:9000" not in csp["script-src"]


# --- what a strict CSP would break ----------------------------------------------------------

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>")
STYLE_ELEMENT = re.compile(r"<style\b")
STYLE_ATTRIBUTE = re.compile(r"\sstyle=\"")
INLINE_HANDLER = re.compile(r"\son[a-z]+=\"|javascript:", re.I)
UNSAFE_JS = re.compile(r"\beval\(|new Function\(|setAttribute\(\s*[\"']style")
# Rendered into a file the admin downloads (Content-Disposition: attachment) and opens from disk,
# where no policy applies: a self-contained document may carry its own <style>.
DOWNLOADED = {"templates/dashboard/report.html"}


def test_templates_and_scripts_need_no_unsafe_inline_script():
    """What the policy forbids is absent. (JSON data blocks are not scripts: the browser never
    runs them.) Style attributes, which it allows, are listed in the module docstring of
    app/ops/security.py."""
    found = []
    for path in sorted((ROOT / "templates").rglob("*.html")):
        if str(path.relative_to(ROOT)) in DOWNLOADED:
            continue
        text = path.read_text()
        for kind, pattern in (
            ("inline script", INLINE_SCRIPT),
            ("style element", STYLE_ELEMENT),
            ("event handler or javascript: URL", INLINE_HANDLER),
        ):
            found += [f"{path.relative_to(ROOT)}: {kind}"] if pattern.search(text) else []
    for path in sorted((ROOT / "static").rglob("*.js")):
        if UNSAFE_JS.search(path.read_text()):
            found.append(f"{path.relative_to(ROOT)}: eval or a style attribute set by script")
    assert found == [], f"a strict CSP would block: {found}"


@pytest.mark.browser
def test_pages_run_in_chromium_without_csp_violations(
    live_server, chromium_page, session, settings
):
    """The rating page (its script and JSON config) and the admin study page (render panel
    script) work under the policy: no violation is reported and their scripts run."""
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    from tests.kit.studies import small_study

    small_study(session, slug="csp")
    page = chromium_page
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.goto(live_server + link(settings, study))
    page.get_by_role("button", name=re.compile("Start", re.I)).click()
    page.wait_for_url(re.compile(r"/rate$"))
    # Locators, not wait_for_function: Playwright evaluates that string with eval(), which the
    # policy rightly forbids. rate.js ran: the prompt and both clips (fetched, shown as blob:
    # URLs, which img-src allows) are in place.
    from playwright.sync_api import expect

    expect(page.locator("#prompt")).not_to_have_text("…")
    expect(page.locator('#clip-left[src^="blob:"]')).to_have_count(1)
    expect(page.locator('#clip-right[src^="blob:"]')).to_have_count(1)
    expect(page.locator("#stage")).not_to_have_class(re.compile("is-loading"))
    page.goto(live_server + "/admin/login")
    page.fill("input[name=password]", "correct horse battery staple")
    page.get_by_role("button", name=re.compile("Sign in|Log in", re.I)).click()
    page.goto(live_server + "/admin/studies/csp")
    page.wait_for_load_state("networkidle")
    # The invite page and the dashboard's charts set style attributes, which the policy allows;
    # the dashboard's script and its live updates run.
    page.goto(live_server + f"/admin/studies/{study.slug}/invites")
    page.wait_for_load_state("networkidle")
    page.goto(live_server + f"/admin/studies/{study.slug}/dashboard")
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)
    assert violations == []
    # Not vacuous: an inline script is refused, and reported.
    from playwright.sync_api import Error as PlaywrightError

    with pytest.raises(PlaywrightError, match="Content Security Policy"):
        page.add_script_tag(content="document.title = 'inline ran'")
    assert page.title() != "inline ran"


# --- rate limits ----------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate_and_forgets_idle_keys():
    now = [0.0]
    limiter = RateLimiter(per_minute=6, max_keys=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(6)] == [0.0] * 6  # the burst
    assert limiter.take("a") == pytest.approx(10.0)  # one token per 10 s
    now[0] += 10.0
    assert limiter.take("a") == 0.0
    assert limiter.take("b") == 0.0 and limiter.take("c") == 0.0  # "a" was the oldest: evicted
    assert limiter.take("a") == 0.0  # a forgotten key starts full again
    assert RateLimiter(per_minute=0).take("x") == 0.0  # 0 means no limit


def test_joining_is_limited_per_client_address(session, settings):
    study = rating_study(session, settings, prompts=2, open_enrollment=True)
    base = link(settings, study)
    limited = configured(settings, rate_limit_join_per_minute=3)
    with TestClient(create_app(limited)) as client:
        for _ in range(3):
            client.cookies.clear()
            assert client.post(f"{base}/api/join", json={}).status_code == 200
        refused = client.post(f"{base}/api/join", json={})
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["detail"]["code"] == "rate_limited"
        assert refused.headers["x-frame-options"] == "DENY"  # still a full response
        form = client.post(f"{base}/join", data={}, follow_redirects=False)
        assert form.status_code == 429 and "Please wait" in form.text
        assert client.get(base).status_code == 200  # reading pages is not limited
        metrics = client.get("/metrics").text
        assert re.search(r'vidarena_rate_limited_total\{rule="join"\} [1-9]', metrics)


def test_submitting_is_limited_per_evaluator(session, settings):
    study = rating_study(session, settings, prompts=4, open_enrollment=True)
    base = link(settings, study)
    limited = configured(settings, rate_limit_submit_per_minute=2)
    with TestClient(create_app(limited)) as client:
        tokens = []
        for _ in range(2):
            client.cookies.clear()
            tokens.append(client.post(f"{base}/api/join", json={}).json()["evaluator_token"])
        client.cookies.clear()
        first = {"Authorization": f"Bearer {tokens[0]}"}
        trial = client.get(f"{base}/api/next", headers=first).json()["trial"]
        url = f"{base}/api/trials/{trial['id']}/votes"
        answers = [
            client.post(url, json={"votes": all_left(study)}, headers=first).status_code
            for _ in range(3)
        ]
        assert answers == [200, 200, 429]  # a repeat is answered (idempotent) until the limit
        # Another evaluator has a budget of their own.
        second = {"Authorization": f"Bearer {tokens[1]}"}
        theirs = client.get(f"{base}/api/next", headers=second).json()["trial"]
        ok = client.post(
            f"{base}/api/trials/{theirs['id']}/votes",
            json={"votes": all_left(study)},
            headers=second,
        )
        assert ok.status_code == 200


def test_rate_limit_over_real_http(session, settings):
    import threading

    import uvicorn

    from tests.kit.services import free_port

    limited = configured(settings, rate_limit_join_per_minute=1)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(limited), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.02)
        url = f"http://127.0.0.1:{port}/r/unknown-key/api/join"
        first = httpx.post(url, json={}, timeout=10)
        second = httpx.post(url, json={}, timeout=10)
        assert first.status_code == 404  # unknown link: answered by the app
        assert second.status_code == 429 and second.headers["retry-after"] == "60"
        assert second.headers["x-request-id"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_dockerignore_keeps_secrets_out_of_images():
    ignored = Path(ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and "var/" in ignored and ".git/" in ignored

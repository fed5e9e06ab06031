"""Admin sessions are server-side: logging out or changing the password ends them for every copy
of the cookie and every process; the session cookie has a key of its own; a key rotation keeps
the previous key's sessions and evaluator links working while VIDARENA_SECRET_KEY_PREVIOUS is set.
On SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import itsdangerous
from fastapi.testclient import TestClient

from app.auth import service as auth_service
from app.main import create_app
from tests.kit.admin import csrf_of, log_in
from tests.kit.config import configured
from tests.kit.rating import invite_token, link
from tests.kit.studies import rating_study

COOKIE = auth_service.SESSION_COOKIE
NEW_SECRET = "the-rotated-secret-key-" + "n" * 32


def with_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def admin_page(client, cookie: str) -> int:  # type: ignore[no-untyped-def]
    """Status of the admin home with only this session cookie (303: sent to the login form)."""
    client.cookies.clear()
    return client.get("/admin/", headers=with_cookie(cookie), follow_redirects=False).status_code


def test_a_session_cookie_replayed_after_logout_is_refused(live_server, settings):
    with httpx.Client(base_url=live_server) as browser:
        token = csrf_of(browser.get("/admin/login").text)
        signed_in = browser.post(
            "/admin/login",
            data={"password": settings.resolved_admin_password(), "csrf_token": token},
        )
        assert signed_in.status_code == 303
        copied = browser.cookies[COOKIE]
        page = browser.get("/admin/")
        assert page.status_code == 200 and "Log out" in page.text
        out = browser.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303
    with httpx.Client(base_url=live_server) as thief:
        replay = thief.get("/admin/", headers=with_cookie(copied))
        assert replay.status_code == 303 and replay.headers["location"].startswith("/admin/login")
        as_api = thief.get("/admin/", headers=with_cookie(copied) | {"Accept": "application/json"})
        assert as_api.status_code == 401
        # Nor does the cookie's own CSRF token make a write go through.
        write = thief.post(
            "/admin/logout", data={"csrf_token": csrf_of(page.text)}, headers=with_cookie(copied)
        )
        assert write.status_code == 401


def test_logging_out_ends_the_session_in_every_process(client, settings):
    assert log_in(client).status_code == 303
    copied = client.cookies.get(COOKIE)
    with TestClient(create_app(settings)) as other_process:  # same database, own memory
        assert admin_page(other_process, copied) == 200
        page = client.get("/admin/")
        client.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
        assert admin_page(other_process, copied) == 303


def test_changing_the_admin_password_ends_every_session(client, settings):
    assert log_in(client).status_code == 303
    before = client.cookies.get(COOKIE)
    assert admin_page(client, before) == 200
    changed = configured(settings, admin_password="a brand new admin password")
    with TestClient(create_app(changed)) as restarted:
        assert admin_page(restarted, before) == 303
        assert log_in(restarted, password="a brand new admin password").status_code == 303
        assert restarted.get("/admin/").status_code == 200


def test_admin_sessions_are_signed_with_a_key_of_their_own(client, settings):
    """The cookie verifies under the derived session key, not the secret itself, so nothing
    else signed with the secret (or its other derived keys) can pass for a session."""
    from app import keys

    assert log_in(client).status_code == 303
    cookie = client.cookies.get(COOKIE)
    session_key = keys.derive(settings.resolved_secret_key(), keys.ADMIN_SESSION)
    payload = itsdangerous.TimestampSigner(session_key).unsign(cookie)
    assert admin_page(client, cookie) == 200
    with_raw_secret = itsdangerous.TimestampSigner(settings.resolved_secret_key()).sign(payload)
    assert admin_page(client, with_raw_secret.decode()) == 303


def test_the_previous_key_keeps_links_and_sessions_working_during_a_rotation(session, settings):
    study = rating_study(session, settings, prompts=2)  # invitation only
    base, invite = link(settings, study), invite_token(settings, study)
    with TestClient(create_app(settings)) as before:
        joined = before.post(f"{base}/api/join", json={"invite": invite}).json()
        bearer = {"Authorization": f"Bearer {joined['evaluator_token']}"}
        trial = before.get(f"{base}/api/next", headers=bearer).json()["trial"]
        assert log_in(before).status_code == 303
        admin_cookie = before.cookies.get(COOKIE)

    old_secret = settings.resolved_secret_key()
    rotated = configured(settings, secret_key=NEW_SECRET, secret_key_previous=old_secret)
    with TestClient(create_app(rotated)) as during:
        assert during.get(f"{base}?invite={invite}").status_code == 200
        again = during.post(f"{base}/api/join", json={"invite": invite})
        assert again.status_code == 200 and again.json()["resumed"]
        current = during.get(f"{base}/api/next", headers=bearer)
        assert current.status_code == 200 and current.json()["trial"]["id"] == trial["id"]
        assert during.get(trial["left"]["url"]).content.startswith(b"GIF89a")
        assert admin_page(during, admin_cookie) == 200
        # What is made now is made with the new key.
        assert link(rotated, study) != base
        assert during.get(
            f"{link(rotated, study)}?invite={invite_token(rotated, study)}"
        ).is_success

    retired = configured(settings, secret_key=NEW_SECRET)
    with TestClient(create_app(retired)) as after:
        assert after.get(f"{base}?invite={invite}").status_code == 404
        assert after.get(f"{base}/api/next", headers=bearer).status_code == 404
        assert after.get(trial["left"]["url"]).status_code == 404
        assert admin_page(after, admin_cookie) == 303
        new_base = link(retired, study)
        assert after.get(f"{new_base}/api/next", headers=bearer).status_code == 401
        assert after.get(f"{new_base}?invite={invite}").status_code == 403


def test_the_login_throttle_remembers_a_bounded_number_of_addresses():
    throttle = auth_service.LoginThrottle(max_failures=2)
    for i in range(25_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert len(throttle) <= 10_000
    latest = "10.0.97.167"  # address 24999: among those still remembered
    throttle.failed(latest)
    assert throttle.retry_after(latest) > 0

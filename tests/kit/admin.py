"""The admin side over HTTP: the test password, CSRF tokens, signing in and uploading a study.

`client` is anything with httpx's `get`/`post` (FastAPI's TestClient, an `httpx.Client` with a
base URL)."""

from __future__ import annotations

import re

ADMIN_PASSWORD = "correct horse battery staple"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_INPUT.search(html)
    assert match, "page has no CSRF field"
    return match[1]


def log_in(client, password: str = ADMIN_PASSWORD, next_url: str = "/admin/"):  # type: ignore[no-untyped-def]
    token = csrf_of(client.get("/admin/login").text)
    data = {"password": password, "csrf_token": token, "next": next_url}
    return client.post("/admin/login", data=data, follow_redirects=False)


def admin_token(client) -> str:  # type: ignore[no-untyped-def]
    return csrf_of(client.get("/admin/").text)


def upload(client, toml: bytes, csv: bytes, *, token: str | None = None):  # type: ignore[no-untyped-def]
    files = {
        "study_file": ("study.toml", toml, "application/toml"),
        "prompts_file": ("prompts.csv", csv, "text/csv"),
    }
    data = {"csrf_token": token if token is not None else admin_token(client)}
    return client.post("/admin/studies", data=data, files=files, follow_redirects=False)

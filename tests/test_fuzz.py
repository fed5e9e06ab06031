"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis),
over real HTTP (uvicorn), on SQLite and PostgreSQL.

Every operation in /openapi.json is called with generated requests, three ways:

- *positive*, with the real path parameters of an open study (its evaluator link key, a trial of
  a joined evaluator, one of its media tokens, its slug): bodies and query strings valid by the
  schema reach the deep code paths (assignment, votes, dashboards, exports);
- *negative*, with the same real path parameters: bodies and query strings that break the schema;
- *anything*, every part generated (unknown keys, huge ids, odd bytes in paths).

Each request carries a real evaluator token (`Authorization: Bearer`) and a logged-in admin
session with its CSRF token, so authentication never stops a request early. The property: no
response is a 5xx, and JSON answers of the evaluator API match their documented schema.
Examples are derandomized (the same on every run) and bounded, so it takes seconds.
"""

from __future__ import annotations

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.kit.admin import ADMIN_PASSWORD, csrf_of
from tests.kit.rating import link
from tests.kit.studies import rating_study

# Not fuzzed: a server-sent event stream (open for minutes by design), and the two routes that
# would end or replace the admin session the other requests run under (test_admin_web.py covers
# login and logout, throttling included).
SKIPPED = {
    ("GET", "/admin/studies/{slug}/dashboard/events"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
}
EXAMPLES = {"positive": 12, "negative": 8, "anything": 6}


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """Joins and submits are not rate limited here: 429s would stop requests before the code
    under test (the limits have tests of their own in test_ops_security.py)."""
    return settings.model_copy(
        update={"rate_limit_join_per_minute": 0, "rate_limit_submit_per_minute": 0}
    )


@pytest.fixture
def http(live_server, session, settings):  # type: ignore[no-untyped-def]
    """A requests session logged in as admin, carrying an evaluator's bearer token and the
    admin CSRF token; and the real path parameters of the study both belong to."""
    study = rating_study(session, settings, slug="fuzzed", prompts=4, open_enrollment=True)
    base = link(settings, study)
    client = requests.Session()
    page = client.get(f"{live_server}/admin/login", timeout=10)
    login = client.post(
        f"{live_server}/admin/login",
        data={"password": ADMIN_PASSWORD, "csrf_token": csrf_of(page.text), "next": "/admin/"},
        allow_redirects=False,
        timeout=10,
    )
    assert login.status_code == 303, login.text
    csrf = csrf_of(client.get(f"{live_server}/admin/", timeout=10).text)
    joined = client.post(f"{live_server}{base}/api/join", json={}, timeout=10)
    assert joined.status_code == 200, joined.text
    client.cookies.pop("vidarena_eval", None)  # the bearer token speaks for the evaluator
    client.headers.update(
        {"Authorization": f"Bearer {joined.json()['evaluator_token']}", "X-CSRF-Token": csrf}
    )
    trial = client.get(f"{live_server}{base}/api/next", timeout=10).json()["trial"]
    params = {
        "key": base.rsplit("/", 1)[1],
        "slug": study.slug,
        "trial_id": trial["id"],
        "token": trial["left"]["url"].rsplit("/", 1)[1],
    }
    return client, params


def _check(case, response) -> None:  # type: ignore[no-untyped-def]
    checks = [not_a_server_error]
    # The evaluator API's JSON answers, 422s included, match their documented schema.
    if case.path.startswith("/r/") and "/api/" in case.path:
        checks.append(response_schema_conformance)
    case.validate_response(response, checks=checks)


def test_no_generated_request_gets_a_server_error(live_server, http):
    client, real = http
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        names = {p.name for p in operation.path_parameters}
        fixed = {name: value for name, value in real.items() if name in names}
        for style, examples in EXAMPLES.items():
            mode = GenerationMode.POSITIVE if style == "positive" else GenerationMode.NEGATIVE
            strategy = operation.as_strategy(
                generation_mode=mode, path_parameters=None if style == "anything" else fixed
            )

            @hypothesis.given(case=strategy)
            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            def call(case) -> None:  # type: ignore[no-untyped-def]
                response = case.call(base_url=live_server, session=client, timeout=30)
                _check(case, response)

            try:
                call()
            except hypothesis.errors.Unsatisfiable:
                # No request can break a schema with nothing in it (GET /healthz): fine.
                assert mode is GenerationMode.NEGATIVE, operation.path
        fuzzed.append(f"{operation.method.upper()} {operation.path}")
    # Not vacuous: the evaluator API and the admin JSON route were among them.
    assert {
        "POST /r/{key}/api/join",
        "GET /r/{key}/api/next",
        "POST /r/{key}/api/trials/{trial_id}/votes",
        "GET /r/{key}/media/{token}",
        "POST /admin/api/studies/{slug}/render",
    } <= set(fuzzed)


def test_request_validation_errors_have_the_documented_shape(client, session, settings):
    study = rating_study(session, settings, slug="shape", prompts=2, open_enrollment=True)
    base = link(settings, study)
    token = client.post(f"{base}/api/join", json={}).json()["evaluator_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    trial = client.get(f"{base}/api/next", headers=bearer).json()["trial"]
    answers = [
        client.post(
            f"{base}/api/trials/{trial['id']}/votes",
            content=b"\x00",
            headers={**bearer, "Content-Type": "application/json"},
        ),
        client.get(f"{base}/api/next", params={"after": "1.5"}, headers=bearer),
        client.post(f"{base}/api/join", json={"invite": 7, "unknown": True}),
    ]
    for response in answers:
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert isinstance(detail, dict) and {"code", "message"} <= set(detail), detail

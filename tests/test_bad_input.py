"""Bad input on SQLite and PostgreSQL: malformed, oversized and wrongly encoded uploads and API
bodies are refused with a clear 4xx and store nothing; markup in a study's texts is escaped on
every page that shows it; no export cell runs as a spreadsheet formula; media tokens and storage
keys never reach a file outside the media folder; cookies are Secure behind HTTPS.

Covered elsewhere, not repeated here: every admin route refuses anonymous requests
(tests/test_admin_web.py::test_every_admin_route_refuses_anonymous_requests enumerates the
routes; tests/test_dashboard.py does the dashboard and export routes), uploads over the size
limit (test_admin_web.py::test_oversized_uploads_are_refused_with_a_clear_error), storage keys
refused by every backend before any file or network access (tests/test_storage.py), security
headers, HSTS and rate limits (tests/test_ops_security.py), secrets in logs
(tests/test_ops_logging.py), and generated requests against the whole OpenAPI schema
(tests/test_fuzz.py).
"""

from __future__ import annotations

import csv
import http.client
import io
import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.clips.models import Clip
from app.config import get_settings
from app.exports.service import FORMULA_PREFIXES
from app.main import create_app
from app.rating.models import Evaluator, Trial, Vote
from app.studies.models import Arm, Prompt, Study, StudyStatus
from app.studies.studyfile import parse_study
from tests.kit.admin import admin_token, log_in, upload
from tests.kit.config import configured
from tests.kit.db import db
from tests.kit.rating import all_left, invite_token, link
from tests.kit.studies import SMALL_PROMPTS_CSV, SMALL_STUDY_TOML, mark_clips_done, rating_study
from tests.kit.votes import cast_votes

TOML = SMALL_STUDY_TOML.format(slug="bad").encode()
CSV = SMALL_PROMPTS_CSV.encode()
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={"rate_limit_join_per_minute": 0, "rate_limit_submit_per_minute": 0}
    )


def stored(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with db(engine) as session:
        return {
            model.__name__: session.scalar(select(func.count(model.id)))
            for model in (Study, Arm, Prompt, Evaluator, Trial, Vote)
        }


NOTHING = dict.fromkeys(("Study", "Arm", "Prompt", "Evaluator", "Trial", "Vote"), 0)


# --- uploads --------------------------------------------------------------------------------

UPLOADS = {
    "prompts in Latin-1": (
        TOML,
        "prompt,theme,seed\nun café noir,food,1\n".encode("latin-1"),
        "prompts.csv:2:7: not valid UTF-8 (byte 0xe9); save the file as UTF-8",
    ),
    "prompts in UTF-16": (
        TOML,
        SMALL_PROMPTS_CSV.encode("utf-16"),
        "prompts.csv:1:1: not valid UTF-8 (byte 0xff)",
    ),
    "study file in UTF-16": (
        SMALL_STUDY_TOML.format(slug="bad").encode("utf-16"),
        CSV,
        "study.toml:1:1: not valid UTF-8 (byte 0xff)",
    ),
    "an image as the prompts": (TOML, PNG, "prompts.csv:1:1: not valid UTF-8 (byte 0x89)"),
    "an image as the study file": (PNG, CSV, "study.toml:1:1: not valid UTF-8 (byte 0x89)"),
    "a NUL byte in a prompt": (
        TOML,
        b"prompt,theme,seed\na fox\x00 running,wildlife,1\n",
        "prompts.csv:2:6: U+0000 NULL is not allowed here; remove it",
    ),
    "a header and no prompts": (TOML, b"prompt,theme,seed\n", "prompts.csv:2:1: no prompts"),
    "an empty prompts file": (TOML, b"", "prompts.csv:1:1: empty file"),
    "an empty study file": (b"", CSV, "study.toml:1:1: name: missing required field"),
    "a prompt over 1000 characters": (
        TOML,
        b"prompt,theme,seed\n" + b"x" * 1001 + b",t,1\n",
        "prompts.csv:2:1: prompt is 1001 characters; the limit is 1000",
    ),
    "a 300 KB quoted field": (
        TOML,
        b'prompt,theme,seed\n"' + b"y" * 300_000 + b'",t,1\n',
        "prompts.csv:2:1: malformed CSV: field larger than field limit",
    ),
    "an unterminated quote": (
        TOML,
        b'prompt,theme,seed\n"a fox,wildlife,1\nb,c,2\n',
        "prompts.csv:3:1: malformed CSV: unexpected end of data",
    ),
    "an unknown column": (
        TOML,
        b"prompt,theme,seed,arm\na fox,wildlife,1,fast\n",
        "prompts.csv:1:19: unknown column &#39;arm&#39;",
    ),
    # Was a 500 (RecursionError from tomllib) before app/studies/studyfile.py caught it.
    "TOML nested 100,000 deep": (
        b"a = " + b"[" * 100_000 + b"]" * 100_000,
        CSV,
        "study.toml:1:1: invalid TOML: maximum recursion depth exceeded",
    ),
}


@pytest.mark.parametrize("case", list(UPLOADS), ids=list(UPLOADS))
def test_malformed_uploads_name_the_problem_and_store_nothing(case, admin, engine):
    toml, prompts, message = UPLOADS[case]
    response = upload(admin, toml, prompts)
    assert response.status_code == 422, response.text[-2000:]
    assert message in response.text
    assert "nothing was created" in response.text
    assert stored(engine) == NOTHING


def test_uploaded_file_names_are_never_paths(admin, engine):
    files = {
        "study_file": ("../../../../etc/passwd", b"not = [toml", "application/toml"),
        "prompts_file": ("..\\..\\boot.ini", CSV, "text/csv"),
    }
    data = {"csrf_token": admin_token(admin)}
    response = admin.post("/admin/studies", data=data, files=files, follow_redirects=False)
    assert response.status_code == 422
    assert "passwd:1:" in response.text and "../" not in response.text
    assert stored(engine) == NOTHING


def test_a_json_body_where_a_form_is_expected_is_refused(admin, engine):
    response = admin.post(
        "/admin/studies",
        json={"study_file": "name = 'x'"},
        headers={"X-CSRF-Token": admin_token(admin)},
    )
    assert 400 <= response.status_code < 500
    assert stored(engine) == NOTHING


# Control and direction characters, each where it is written (escaped in TOML, raw in the CSV).
HOSTILE = {
    "\x00": "U+0000 NULL",
    "\x1b": "U+001B ESCAPE",
    "\x7f": "U+007F DELETE",
    "\x9b": "U+009B (a C1 control character)",
    "\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "\u2067": "U+2067 RIGHT-TO-LEFT ISOLATE",
    "\u200f": "U+200F RIGHT-TO-LEFT MARK",
}


@pytest.mark.parametrize("char", list(HOSTILE), ids=[n.split()[0] for n in HOSTILE.values()])
def test_control_and_direction_characters_are_refused_where_they_are(char, admin, engine):
    escape = f"\\u{ord(char):04X}"
    toml = SMALL_STUDY_TOML.format(slug="hostile").replace(
        'name = "Small study"',
        f'name = "Small {escape}study"\n'
        f'criteria = [{{ key = "k", label = "L{escape}", question = "Which?" }}]',
    )
    csv = f"prompt,theme,seed\na red fox running,wildlife,1\na city {char}at night,urb{char}an,2\n"
    response = upload(admin, toml.encode(), csv.encode())
    assert response.status_code == 422, response.text[-2000:]
    name = HOSTILE[char]
    listed = re.findall(r"<li><code>(.*?)</code></li>", response.text)
    assert [item.split(" is not allowed")[0] for item in listed] == [
        f"study.toml:2:15: name: {name}",
        f"study.toml:3:36: criteria.0.label: {name}",
        f"prompts.csv:3:8: {name}",
    ], listed
    assert all("remove it (" in item for item in listed), listed
    assert "nothing was created" in response.text
    assert char not in response.text  # named, never echoed
    assert stored(engine) == NOTHING


# --- evaluator API bodies -------------------------------------------------------------------


@pytest.fixture
def joined(client, session, settings):  # type: ignore[no-untyped-def]
    study = rating_study(session, settings, slug="api", prompts=2, open_enrollment=True)
    base = link(settings, study)
    token = client.post(f"{base}/api/join", json={}).json()["evaluator_token"]
    client.cookies.clear()
    bearer = {"Authorization": f"Bearer {token}"}
    trial = client.get(f"{base}/api/next", headers=bearer).json()["trial"]
    return study, base, bearer, trial


def answered(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with db(engine) as session:
        votes = session.scalar(select(func.count(Vote.id)))
        trials = session.scalar(select(func.count(Trial.answered_at)))
        return votes, trials


def test_malformed_and_oversized_api_bodies_are_4xx_and_store_nothing(client, joined, engine):
    study, base, bearer, trial = joined
    evaluators = stored(engine)["Evaluator"]
    json_type = {"Content-Type": "application/json"}
    joins = {
        "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
        "an object nested 50,000 deep": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "a 5 MB invite": b'{"invite": "' + b"a" * 5_000_000 + b'"}',
        "not JSON": b"invite=1",
        "Latin-1 text": '{"external_id": "café"}'.encode("latin-1"),
        "an unknown field": b'{"invite": null, "admin": true}',
        "a list": b"[]",
    }
    for what, body in joins.items():
        response = client.post(f"{base}/api/join", content=body, headers=json_type)
        assert 400 <= response.status_code < 500, (what, response.status_code)
    assert stored(engine)["Evaluator"] == evaluators

    url = f"{base}/api/trials/{trial['id']}/votes"
    votes = {
        "20,000 unknown criteria": {"votes": {f"c{i}": "left" for i in range(20_000)}},
        "a choice in capitals": {"votes": {k: "LEFT" for k in study.criterion_keys}},
        "a criterion missing": {"votes": dict(list(all_left(study).items())[1:])},
        "votes as a list": {"votes": [["overall_quality", "left"]]},
        "an extra field": {"votes": all_left(study), "answered_at": "2000-01-01T00:00:00Z"},
        "a number for a choice": {"votes": dict.fromkeys(study.criterion_keys, 1)},
    }
    for what, body in votes.items():
        response = client.post(url, json=body, headers=bearer)
        # 20,000 criteria are over the evaluator body limit: refused unread.
        expected = 413 if what == "20,000 unknown criteria" else 422
        assert response.status_code == expected, (what, response.status_code)
    for body in (b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe{", b""):
        response = client.post(url, content=body, headers={**bearer, **json_type})
        assert 400 <= response.status_code < 500, (body[:10], response.status_code)
    # Ids no trial can have, on either database (PostgreSQL integers are 32-bit).
    for trial_id in (0, -1, 2**31, 2**63, 2**64, 10**30):
        response = client.post(
            f"{base}/api/trials/{trial_id}/votes", json={"votes": all_left(study)}, headers=bearer
        )
        assert response.status_code in (404, 422), (trial_id, response.status_code)
        after = client.get(f"{base}/api/next", params={"after": trial_id}, headers=bearer)
        assert after.status_code in (404, 422), (trial_id, after.status_code)
    assert answered(engine) == (0, 0)
    # Not vacuous: the same trial takes a well-formed answer.
    assert client.post(url, json={"votes": all_left(study)}, headers=bearer).status_code == 200


def test_non_finite_numbers_in_json_bodies_are_a_4xx(client, joined):
    _study, base, bearer, trial = joined
    for body in (b'{"invite": NaN}', b'{"external_id": Infinity}'):
        response = client.post(
            f"{base}/api/join", content=body, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, response.status_code
    response = client.post(
        f"{base}/api/trials/{trial['id']}/votes",
        content=b'{"votes": {"overall_quality": -Infinity}}',
        headers={**bearer, "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.status_code


def test_oversized_api_bodies_are_refused_unread(client, joined):
    _study, base, _bearer, _trial = joined
    response = client.post(
        f"{base}/api/join",
        content=b'{"invite": "' + b"a" * 5_000_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert len(response.content) < 10_000


def test_a_nul_anywhere_is_a_4xx_on_both_databases(client, joined, engine):
    """PostgreSQL refuses NUL in a query parameter: none may reach it as one (was a 500)."""
    study, base, bearer, trial = joined
    before = stored(engine)
    json_type = {"Content-Type": "application/json"}
    votes_url = f"{base}/api/trials/{trial['id']}/votes"
    evaluator = {
        "API join, participant id": client.post(f"{base}/api/join", json={"external_id": "a\x00"}),
        "API join, invite": client.post(f"{base}/api/join", json={"invite": "x\x00y"}),
        "API join, lone surrogate": client.post(
            f"{base}/api/join", content=b'{"external_id": "a\\ud800"}', headers=json_type
        ),
        "vote key": client.post(votes_url, json={"votes": {"\x00": "left"}}, headers=bearer),
        "vote key, lone surrogate": client.post(
            votes_url, content=b'{"votes": {"\\udfff": "left"}}', headers={**bearer, **json_type}
        ),
        "link, participant id": client.get(f"{base}?PROLIFIC_PID=a%00b"),
        "link, invite": client.get(f"{base}?invite=a%00b"),
        "join form": client.post(f"{base}/join", data={"external_id": "a\x00", "invite": "\x00"}),
        "study key": client.get("/r/a%00b/api/study"),
        "next, after": client.get(f"{base}/api/next?after=1%00", headers=bearer),
    }
    admin = TestClient(client.app)
    assert log_in(admin).status_code == 303
    token = admin_token(admin)
    slug = study.slug
    pages = {
        "study page": "/admin/studies/a%00b",
        "evaluator links page": "/admin/studies/a%00b/invites",
        "dashboard": "/admin/studies/a%00b/dashboard",
        "theme filter": f"/admin/studies/{slug}?theme=a%00b",
        "dashboard filters": f"/admin/studies/{slug}/dashboard?arm=a%00b&criterion=%00",
        "export filters": f"/admin/studies/{slug}/export/summary.csv?arm=a%00b",
        "login, next": "/admin/login?next=/admin/%00",
    }
    forms = {
        "status form": (f"/admin/studies/{slug}/status", {"status": "open\x00"}),
        "status form, slug": ("/admin/studies/a%00/status", {"status": "open"}),
        "invites form": (f"/admin/studies/{slug}/invites", {"count": "1\x00"}),
        "render form": (f"/admin/studies/{slug}/render", {"action": "missing\x00"}),
        "upload, kept files": (
            "/admin/studies",
            {"kept_study_file": "a\x00.toml:AAAA", "kept_prompts_file": "b\x00:AAAA"},
        ),
    }
    answers = {
        **evaluator,
        **{what: admin.get(path) for what, path in pages.items()},
        **{
            what: admin.post(path, data={**data, "csrf_token": token}, follow_redirects=False)
            for what, (path, data) in forms.items()
        },
        "login form": TestClient(client.app).post(
            "/admin/login", data={"password": "\x00", "next": "/admin/\x00"}
        ),
    }
    statuses = {what: response.status_code for what, response in answers.items()}
    assert all(status < 500 for status in statuses.values()), statuses
    assert stored(engine) == before


# --- markup in a study's texts ---------------------------------------------------------------

EVIL_TOML = """
name = "</title><script>alert('name')</script> study"
slug = "evil"
description = "<img src=x onerror=alert('description')>"
prompts = "prompts.csv"
criteria = [
  "overall_quality",
  { key = "markup", label = "<b onmouseover=alert('label')>Label</b>", question = "</script><script>alert('question')</script>?" },
  { key = "formula", label = "=SUM(1,2) label", question = "@cmd which one?" },
]
[render]
num_frames = 4
width = 64
height = 64
fps = 8
[rating]
open_enrollment = true
completion_code = "<script>alert('code')</script>"
[[arms]]
name = "zebra-arm"
kind = "animatediff"
base_model = "=cmd|' /C calc'!A0"
motion_adapter = "<script>alert('adapter')</script>"
steps = 2
guidance_scale = 7.5
negative_prompt = "@SUM(1+1)*cmd|' /C calc'!A0"
[[arms]]
name = "quokka-arm"
kind = "animatediff-lightning"
base_model = "+acme/base"
motion_adapter = "-acme/lightning"
steps = 1
guidance_scale = 1.0
"""  # noqa: E501
EVIL_CSV = """prompt,theme,seed
"<script>alert('prompt')</script> a fox in the snow",<img src=x onerror=alert('theme')>,1
"=HYPERLINK(""http://example.com/?""&A1,""click"") a cat",@theme,2
"a plain prompt ""quoted"" & <ampersand>",-minus,3
"""
# What must never reach a page unescaped (each would run or inject markup).
RAW = re.compile(
    r"<script>alert\(|<img src=x onerror|<b onmouseover|</script><script>|<ampersand>", re.I
)


@pytest.fixture
def evil(admin, session, settings):  # type: ignore[no-untyped-def]
    """The study uploaded through the admin form, rendered (clips done), open, and rated."""
    assert upload(admin, EVIL_TOML.encode(), EVIL_CSV.encode()).status_code == 303
    study = session.scalar(select(Study).where(Study.slug == "evil"))
    mark_clips_done(session, settings, study)
    study.status = StudyStatus.open
    session.commit()
    rates = dict.fromkeys(study.criterion_keys, 0.6)
    cast_votes(session, settings, study, favored="quokka-arm", rates=rates, evaluators=2)
    session.rollback()
    return study


def test_markup_in_names_prompts_themes_and_criteria_is_escaped_on_every_page(
    admin, evil, settings
):
    base = link(settings, evil)
    hostile_query = "<script>alert('query')</script>"
    pages = {
        "studies list": "/admin/",
        "study page": "/admin/studies/evil",
        "study page, theme filter": "/admin/studies/evil?theme="
        + "<img src=x onerror=alert('theme')>",
        "study page, reflected theme": f"/admin/studies/evil?theme={hostile_query}",
        "evaluator links": "/admin/studies/evil/invites",
        "dashboard": "/admin/studies/evil/dashboard",
        "dashboard live part": "/admin/studies/evil/dashboard/live",
        "dashboard statistics": "/admin/studies/evil/dashboard/advanced",
        "HTML report": "/admin/studies/evil/export/report.html",
        "unknown study (reflected slug)": f"/admin/studies/{hostile_query}",
        "login page (reflected next)": f"/admin/login?next=/admin/{hostile_query}",
    }
    seen = {}
    for what, path in pages.items():
        response = admin.get(path)
        assert response.status_code in (200, 404), (what, response.status_code)
        assert "text/html" in response.headers["content-type"], what
        found = RAW.findall(response.text) + re.findall(r"<script>alert\('query'\)", response.text)
        assert not found, f"{what}: unescaped {found}"
        seen[what] = response.text
    # Not vacuous: the texts are on those pages, escaped.
    assert "&lt;script&gt;alert(&#39;prompt&#39;)&lt;/script&gt;" in seen["study page"]
    assert "&lt;img src=x onerror=alert(&#39;theme&#39;)&gt;" in seen["study page"]
    assert "&lt;b onmouseover=alert(&#39;label&#39;)&gt;" in seen["dashboard"]
    assert "&lt;img src=x onerror=alert(&#39;theme&#39;)&gt;" in seen["dashboard"]
    assert "&lt;img src=x onerror=alert(&#39;theme&#39;)&gt;" in seen["HTML report"]
    assert "&lt;/title&gt;&lt;script&gt;" in seen["studies list"]

    # The evaluator's pages: welcome (criteria), a reflected participant id, rating page (its
    # JSON configuration block too), done page (the completion code).
    evaluator = TestClient(admin.app)
    hostile_pid = "\"><script>alert('pid')</script>"
    for path in (base, f"{base}?PROLIFIC_PID={hostile_pid}", f"{base}?invite={hostile_query}"):
        page = evaluator.get(path)
        assert not RAW.findall(page.text) and "<script>alert('pid')" not in page.text, path
    assert "&lt;b onmouseover" in evaluator.get(base).text
    assert evaluator.post(f"{base}/join", data={}, follow_redirects=False).status_code == 303
    rate = evaluator.get(f"{base}/rate")
    assert rate.status_code == 200 and not RAW.findall(rate.text)
    config = re.search(
        r'<script type="application/json" id="rate-config">(.*?)</script>', rate.text, re.S
    )
    assert config and "<" not in config[1]  # tojson escapes every < in the data block
    # The prompt reaches the page only through the JSON API (inserted as text by rate.js).
    trial = evaluator.get(f"{base}/api/next")
    assert trial.headers["content-type"] == "application/json"
    assert trial.headers["x-content-type-options"] == "nosniff"
    while (result := trial.json())["status"] == "trial":
        votes = dict.fromkeys(evil.criterion_keys, "tie")
        answer = evaluator.post(
            f"{base}/api/trials/{result['trial']['id']}/votes", json={"votes": votes}
        )
        trial = answer
        trial_json = answer.json()["next"]
        if trial_json["status"] != "trial":
            break
        trial = evaluator.get(f"{base}/api/next")
    done = evaluator.get(f"{base}/done")
    assert done.status_code == 200 and not RAW.findall(done.text)
    assert "&lt;script&gt;alert(&#39;code&#39;)&lt;/script&gt;" in done.text


# --- spreadsheet formulas -------------------------------------------------------------------


def formula_cells(text: str) -> list[str]:
    """Cells a spreadsheet would evaluate: starting with = + - @ tab or CR, and not a number."""
    rows = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    bad = []
    for row in rows:
        for cell in row:
            if not cell.startswith(FORMULA_PREFIXES):
                continue
            try:
                float(cell)
            except ValueError:
                bad.append(cell)
    return bad


def test_no_cell_of_any_export_runs_as_a_formula(admin, evil, settings, monkeypatch, tmp_path):
    with db(admin.app.state.engine) as session:
        session.execute(update(Clip).values(error="=1+1 an error text"))
        session.commit()
    exports = {
        name: admin.get(f"/admin/studies/evil/export/{name}")
        for name in ("votes.csv", "clips.csv", "summary.csv")
    }
    for name, response in exports.items():
        assert response.status_code == 200, name
        assert formula_cells(response.text) == [], name
    # Not vacuous: the hostile texts are in there, neutralised.
    assert "'@theme" in exports["summary.csv"].text and "'-minus" in exports["summary.csv"].text
    assert "'=cmd|' /C calc'!A0" in exports["clips.csv"].text
    assert "'@SUM(1+1)" in exports["clips.csv"].text and "'+acme/base" in exports["clips.csv"].text
    assert "'=HYPERLINK(" in exports["votes.csv"].text and "'@theme" in exports["votes.csv"].text
    assert "'=1+1 an error text" in exports["clips.csv"].text
    # The command-line exports write the same cells.
    from typer.testing import CliRunner

    from app.cli import app as cli

    monkeypatch.setenv("VIDARENA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("VIDARENA_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        for kind in ("votes", "clips", "summary"):
            out = tmp_path / f"{kind}.csv"
            result = CliRunner().invoke(cli, ["export", kind, "evil", "-o", str(out)])
            assert result.exit_code == 0, result.output
            assert formula_cells(out.read_text(encoding="utf-8")) == [], kind
    finally:
        get_settings.cache_clear()


# --- path traversal -------------------------------------------------------------------------


def raw_get(base_url: str, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side normalisation)."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_media_tokens_and_storage_keys_never_reach_outside_the_media_folder(
    app, live_server, session, settings, tmp_path
):
    secret = b"SECRET-OUTSIDE-THE-MEDIA-FOLDER"
    (tmp_path / "secret.gif").write_bytes(secret)  # beside the media folder (tmp_path/media)
    study = rating_study(session, settings, slug="traversal", prompts=1, open_enrollment=True)
    base = link(settings, study)
    import httpx

    with httpx.Client(base_url=live_server, timeout=10) as client:
        assert client.post(f"{base}/api/join", json={}).status_code == 200
        trial = client.get(f"{base}/api/next").json()["trial"]
        good = urlsplit(trial["left"]["url"]).path
        assert client.get(good).content[:6] == b"GIF89a"
    key = base.rsplit("/", 1)[1]
    tokens = [
        "..%2Fsecret.gif",
        "..%2F..%2Fsecret.gif",
        "%2e%2e%2fsecret.gif",
        "%252e%252e%252fsecret.gif",
        "..%5Csecret.gif",
        "%2Fetc%2Fpasswd",
        "....%2F%2Fsecret.gif",
        "secret.gif%00.gif",
        "..",
        "../secret.gif",
        "../../../../etc/passwd",
        "%C0%AE%C0%AE%2Fsecret.gif",
        "x" * 5000,
    ]
    targets = [f"/r/{key}/media/{token}" for token in tokens]
    targets += [f"/r/..%2F..%2F/media/{tokens[0]}", f"/r/{key}/media/../../../secret.gif"]
    for target in targets:
        status, body = raw_get(live_server, target)
        assert status in (400, 404, 414), (target, status)
        assert secret not in body and b"root:" not in body, target

    # A storage key that is not a content hash (a damaged or tampered row) is refused before any
    # file is opened: the media route answers without reading it. (The process keeps a clip's
    # key for a minute; here each change is read at once.)
    app.state.media_cache.clip_seconds = 0
    with db(session.get_bind()) as reader:
        clip_id = reader.scalar(select(Clip.id).where(Clip.storage_key.is_not(None)))
    for bad_key in ("../secret.gif", str(tmp_path / "secret.gif"), "ab/../../secret.gif"):
        session.execute(update(Clip).values(storage_key=bad_key))
        session.commit()
        status, body = raw_get(live_server, good)
        assert status in (404, 503) and secret not in body, (bad_key, status)
    assert clip_id is not None


def test_a_tampered_storage_key_is_a_404(client, session, settings):
    study = rating_study(session, settings, slug="tampered", prompts=1, open_enrollment=True)
    base = link(settings, study)
    client.post(f"{base}/api/join", json={})
    url = client.get(f"{base}/api/next").json()["trial"]["left"]["url"]
    session.execute(update(Clip).values(storage_key="../secret.gif"))
    session.commit()
    assert client.get(url).status_code == 404


# --- cookies behind HTTPS -------------------------------------------------------------------


def set_cookies(response) -> list[str]:  # type: ignore[no-untyped-def]
    return response.headers.get_list("set-cookie")


def cookie_flags(value: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in value.split(";")[1:]}


def test_every_cookie_is_secure_httponly_and_samesite_with_https_only(session, settings):
    """Every response that sets a cookie, with VIDARENA_HTTPS_ONLY. (Login and API-join cookies
    are also checked in test_ops_security.py; this covers the pre-login session, the join form
    and logout too, and the HttpOnly and SameSite flags.)"""
    study = rating_study(session, settings, slug="cookies", prompts=2, open_enrollment=True)
    base = link(settings, study)
    secure = configured(settings, https_only=True)
    cookies: dict[str, list[str]] = {}
    with TestClient(create_app(secure), base_url="https://testserver") as client:
        cookies["login page"] = set_cookies(client.get("/admin/login"))
        cookies["login"] = set_cookies(log_in(client))
        token = admin_token(client)
        cookies["logout"] = set_cookies(
            client.post("/admin/logout", data={"csrf_token": token}, follow_redirects=False)
        )
        client.cookies.clear()
        cookies["join form"] = set_cookies(
            client.post(f"{base}/join", data={}, follow_redirects=False)
        )
        client.cookies.clear()
        invite = invite_token(settings, study)
        cookies["join API"] = set_cookies(client.post(f"{base}/api/join", json={"invite": invite}))
    for what, values in cookies.items():
        assert values, f"{what} set no cookie"
        for value in values:
            assert {"secure", "httponly", "samesite"} <= cookie_flags(value), (what, value)
            assert re.search(r"samesite=(lax|strict)", value, re.I), (what, value)


def test_cookies_are_secure_behind_a_tls_terminating_proxy(session, settings):
    """Behind a proxy that terminates TLS the app sees plain http: the Secure flag comes from
    the setting, not from the request's scheme."""
    study = rating_study(session, settings, slug="proxied", prompts=2, open_enrollment=True)
    base = link(settings, study)
    with TestClient(create_app(configured(settings, https_only=True))) as client:
        responses = [
            client.get("/admin/login", headers={"X-Forwarded-Proto": "https"}),
            client.post(f"{base}/join", data={}, follow_redirects=False),
            client.post(f"{base}/api/join", json={"invite": invite_token(settings, study)}),
        ]
    for response in responses:
        values = set_cookies(response)
        assert values and all("secure" in cookie_flags(v) for v in values), values


def test_cookies_are_not_secure_without_https_only(client, session, settings):
    """Plain-http development still works: no Secure flag, the rest unchanged."""
    study = rating_study(session, settings, slug="plain", prompts=2, open_enrollment=True)
    for response in (
        client.get("/admin/login"),
        client.post(f"{link(settings, study)}/api/join", json={}),
    ):
        for value in set_cookies(response):
            assert "secure" not in value.lower() and "httponly" in value.lower()


# --- not a bad input, the baseline: a valid study file still goes through -------------------


def test_the_same_form_takes_a_valid_upload(admin, engine):
    draft = parse_study(
        toml_text=TOML.decode(), toml_name="study.toml", prompts_bytes=CSV, prompts_name="p.csv"
    )
    response = upload(admin, TOML, CSV)
    assert response.status_code == 303
    assert stored(engine)["Prompt"] == len(draft.prompts)

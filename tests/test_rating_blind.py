"""Blindness: nothing an evaluator can see names an arm, a pipeline, a model, a scheduler, a step
count, a clip, the study's slug or name, or which side is which.

One evaluator runs a whole session (welcome, join, rating page, static files, every API call,
every clip, prefetches, the done page, a few error pages), and every byte that reaches them is
scanned: bodies, URLs, headers (Set-Cookie included) and the GIFs themselves.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from app.clips.models import Clip
from app.rating.padding import unpad_gif
from tests.kit.rating import all_left, invite_token, link
from tests.kit.studies import ARMS, rating_study

SLUG = "hidden-slug-7g"


class Recorder:
    """Wraps a TestClient and keeps every evaluator-visible part of every exchange."""

    def __init__(self, client) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.seen: list[tuple[str, bytes]] = []

    def request(self, method: str, url: str, **kwargs):  # type: ignore[no-untyped-def]
        response = self.client.request(method, url, **kwargs)
        where = f"{method} {url} -> {response.status_code}"
        self.seen.append((f"{where} [url]", url.encode()))
        self.seen.append((f"{where} [body]", response.content))
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.seen.append((f"{where} [headers]", headers.encode()))
        if response.is_redirect:
            self.seen.append((f"{where} [location]", response.headers["location"].encode()))
        return response


def forbidden(study, session) -> tuple[list[str], list[re.Pattern[bytes]]]:  # type: ignore[no-untyped-def]
    """Literal strings (case-insensitive) and patterns that would reveal an arm or a clip."""
    words = {
        SLUG,
        study.name,
        "lightning",
        "animatediff",
        "pipeline",
        "scheduler",
        "guidance",
        "a_on_left",
        "matchup",
        "clip_a",
        "clip_b",
        "clip_id",
        "arm_a",
        "arm_b",
        "arm_id",
        "storage_key",
        "sha256",
        "telemetry",
        "acme-labs",
    }
    patterns: list[re.Pattern[bytes]] = [re.compile(rb"(?i)\barms?\b")]
    for arm in ARMS:
        words |= {
            arm["name"],
            arm["name"].split("-")[0],
            arm["kind"],
            arm["base_model"],
            arm["motion_adapter"],
            arm["base_model"].split("/")[1],
            arm["motion_adapter"].split("/")[1],
        }
        words.add(re.search(r'name = "(\w+)"', arm["scheduler"])[1])  # ddim, euler
        steps = str(arm["steps"]).encode()
        # Short numbers appear in ids and progress, so only in a step-like context.
        patterns.append(
            re.compile(
                rb"(?i)(steps?\W{0,5}%s\b|\b%s\W{0,3}-?steps?|\"%s\")" % (steps, steps, steps)
            )
        )
        guidance = str(arm["guidance_scale"]).encode()
        patterns.append(re.compile(rb"(?i)(guidance|cfg)\W{0,5}%s" % re.escape(guidance)))
    for clip in session.scalars(select(Clip)):
        words |= {clip.storage_key, clip.sha256}
        patterns.append(re.compile(rb"(?i)clip\W{0,3}%d\b" % clip.id))
    return sorted(w for w in words if w), patterns


def scan(recorder: Recorder, words: list[str], patterns: list[re.Pattern[bytes]]) -> list[str]:
    leaks = []
    for where, data in recorder.seen:
        lowered = data.lower()
        leaks += [f"{where}: {word!r}" for word in words if word.lower().encode() in lowered]
        for pattern in patterns:
            if match := pattern.search(data):
                leaks.append(f"{where}: {pattern.pattern!r} matched {match[0]!r}")
    return leaks


def test_no_evaluator_visible_byte_names_an_arm(client, session, settings):
    study = rating_study(
        session,
        settings,
        slug=SLUG,
        prompts=4,
        arms=3,
        trials_per_evaluator=3,
        repeat_trials=1,
        completion_code=None,
    )
    base, invite = link(settings, study), invite_token(settings, study)
    visit = Recorder(client)

    assert visit.request("GET", f"{base}?invite={invite}&PROLIFIC_PID=p-123").status_code == 200
    joined = visit.request(
        "POST",
        f"{base}/join",
        data={"invite": invite, "external_id": "p-123"},
        follow_redirects=False,
    )
    assert joined.status_code == 303
    assert visit.request("GET", f"{base}/rate").status_code == 200
    for asset in ("/static/rate.js", "/static/rate.css"):
        assert visit.request("GET", asset).status_code == 200
    assert visit.request("GET", f"{base}/api/study").status_code == 200
    result = visit.request("GET", f"{base}/api/next").json()
    trials = 0
    while result["status"] == "trial":
        trial = result["trial"]
        visit.request("GET", f"{base}/api/next?after={trial['id']}")
        left = visit.request("GET", trial["left"]["url"])
        right = visit.request("GET", trial["right"]["url"])
        assert left.content.startswith(b"GIF89a") and right.content.startswith(b"GIF89a")
        visit.request("GET", f"{base}/api/next")  # a reload
        url = f"{base}/api/trials/{trial['id']}/votes"
        response = visit.request("POST", url, json={"votes": all_left(study)})
        visit.request("POST", url, json={"votes": all_left(study)})  # a double submit
        visit.request("POST", url, json={"votes": {**all_left(study), "overall_quality": "tie"}})
        result = response.json()["next"]
        trials += 1
    assert trials == 4 and result["status"] == "done"
    assert visit.request("GET", f"{base}/done").status_code == 200
    # Error pages and refusals are evaluator-visible too.
    visit.request("GET", f"{base}/media/1l.forged")
    visit.request("POST", f"{base}/api/trials/1/votes", json={"votes": {"x": "left"}})
    visit.request("GET", f"{base}/api/next", headers={"Authorization": "Bearer forged"})
    visit.request("GET", base[:-3] + "abc")
    visit.request("GET", f"{base}/nope", headers={"Accept": "text/html"})

    session.commit()
    words, patterns = forbidden(study, session)
    assert {"zebra-arm", "ddim", "euler", "acme-labs/qq-lightning-repo", SLUG} <= set(words)
    leaks = scan(visit, words, patterns)
    assert not leaks, "\n".join(leaks)
    # The scan itself works: the admin's study page does name the arms.
    assert scan_text(f"{study.slug} zebra-arm 37 steps", words, patterns)


def scan_text(text: str, words: list[str], patterns: list[re.Pattern[bytes]]) -> bool:
    recorder = Recorder(None)
    recorder.seen.append(("text", text.encode()))
    return bool(scan(recorder, words, patterns))


def test_media_headers_and_bytes_carry_no_provenance(client, session, settings):
    study = rating_study(session, settings, prompts=1, open_enrollment=True)
    base = link(settings, study)
    client.post(f"{base}/api/join", json={})
    trial = client.get(f"{base}/api/next").json()["trial"]
    media = client.get(trial["left"]["url"])
    # No render time (Last-Modified), content hash (ETag) or file name (Content-Disposition).
    for header in ("last-modified", "etag", "content-disposition", "x-clip", "x-arm"):
        assert header not in media.headers
    assert media.headers["cache-control"] == "private, max-age=86400, immutable"
    # A GIF made by the render side holds pixels, timing and the loop count: no comment blocks
    # but the padding (app/rating/padding.py), whose bytes are all zero.
    stored = unpad_gif(media.content)
    assert b"\x21\xfe" not in stored and len(stored) < len(media.content)

"""`vidarena invite`, run as a user runs it: a real process on a real database."""

from __future__ import annotations

import re

from app.studies.models import StudyStatus
from tests.kit.cli import run
from tests.kit.studies import rating_study


def test_invite_prints_working_links(database_url, session, settings, tmp_path, client):
    study = rating_study(session, settings, slug="cli-invites", prompts=2, status=StudyStatus.draft)
    secret = settings.secret_key.get_secret_value()
    result = run(
        "invite",
        "cli-invites",
        "--count",
        "3",
        "--base-url",
        "https://rate.example.org/",
        database_url=database_url,
        cwd=tmp_path,
        secret=secret,
    )
    assert result.returncode == 0, result.stderr
    links = result.stdout.split()
    assert len(links) == 3 and len(set(links)) == 3
    for link in links:
        assert re.fullmatch(r"https://rate\.example\.org/r/\d+-[a-z2-7]{16}\?invite=[\w.-]+", link)
        assert "cli-invites" not in link
    assert "the links work once it is open" in result.stderr
    study.status = StudyStatus.open
    session.commit()
    # The printed links are accepted by the web app (same secret key).
    path = links[0].removeprefix("https://rate.example.org")
    assert "Start rating" in client.get(path).text
    missing = run("invite", "no-such-study", database_url=database_url, cwd=tmp_path, secret=secret)
    assert missing.returncode == 2 and "no study with slug" in missing.stderr

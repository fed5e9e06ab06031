"""The evaluator API runs on its own few threads per process (VIDARENA_RATING_THREADS), over
real HTTP: concurrent requests queue for them instead of spreading over the shared pool."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from app.rating import service
from tests.kit.rating import invite_token, link
from tests.kit.studies import rating_study

EVALUATORS = 4


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    update = {"rate_limit_join_per_minute": 0, "rating_threads": 1, "web_threads": 8}
    return settings.model_copy(update=update)


def test_the_evaluator_api_runs_on_the_rating_threads_only(
    live_server, session, settings, monkeypatch
):
    study = rating_study(session, settings, prompts=4)
    base = link(settings, study)
    running, most = [0], [0]
    lock = threading.Lock()
    real = service.evaluator_state

    def slow_state(**kwargs):  # type: ignore[no-untyped-def]
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)  # long enough for every request to be in flight at once
        with lock:
            running[0] -= 1
        return real(**kwargs)

    with httpx.Client(base_url=live_server, timeout=30) as client:
        headers = []
        for _ in range(EVALUATORS):
            joined = client.post(f"{base}/api/join", json={"invite": invite_token(settings, study)})
            headers.append({"Authorization": f"Bearer {joined.json()['evaluator_token']}"})
        monkeypatch.setattr(service, "evaluator_state", slow_state)
        with ThreadPoolExecutor(EVALUATORS) as pool:
            answers = list(pool.map(lambda h: client.get(f"{base}/api/next", headers=h), headers))
    assert [a.status_code for a in answers] == [200] * EVALUATORS
    assert all(a.json()["status"] == "trial" for a in answers)
    assert most[0] == 1  # one rating thread: never two at once, though 8 web threads exist

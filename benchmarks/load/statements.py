"""SQL statements per evaluator request, counted in this process: the app (`create_app`, the
same routes, middleware and database as the servers under load) behind Starlette's TestClient,
a few newly invited evaluators rating their whole quota one request at a time, with SQLAlchemy's
`before_cursor_execute` event counting what each request sends.

Counted here rather than in the server processes: the count is a property of the code path, not
of the load, so one evaluator at a time gives it exactly per request (a counter scraped from
/metrics, divided by requests, would mix in every other route's statements), and the servers
under load carry no extra listener. It does not see what only contention causes (a join that
lost a race and resumes, an assignment that skips a matchup another holds and tries the next).

Counted apart: statements (what the server parses and runs: SELECT, INSERT, UPDATE; an
executemany, such as a submit's votes, is one), SQLite's BEGIN (PostgreSQL's psycopg sends
its own, unseen here), commits (transactions that wrote) and connection checkouts (on
PostgreSQL each is also a `pool_pre_ping` round trip)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.load.config import ADMIN_PASSWORD, CHOICES, METRICS_TOKEN, SECRET_KEY
from benchmarks.load.study import Seeded

EVALUATORS = 3


@dataclass
class Counts:
    statements: int = 0
    begins: int = 0
    commits: int = 0
    checkouts: int = 0

    def minus(self, other: Counts) -> Counts:
        return Counts(
            *(a - b for a, b in zip(vars(self).values(), vars(other).values(), strict=True))
        )


@dataclass
class StatementCounts:
    """Per kind of request, the counts of each one sent: `join` (its answer carries the first
    pair), `submit` (its answer carries the next pair and the one after), `last submit` (its
    answer says done), `next` (a resume: `GET next` after a reload, read only)."""

    requests: dict[str, list[Counts]] = field(default_factory=lambda: defaultdict(list))

    def mean(self, kind: str, what: str = "statements") -> float:
        runs = self.requests.get(kind) or []
        return sum(getattr(c, what) for c in runs) / len(runs) if runs else float("nan")

    def span(self, kind: str) -> str:
        """'mean (min-max)' statements."""
        values = [c.statements for c in self.requests.get(kind) or []]
        if not values:
            return "-"
        low, high = min(values), max(values)
        spread = f" ({low}-{high})" if low != high else ""
        return f"{sum(values) / len(values):.1f}{spread}"


def count_statements(
    url: str, workdir: Path, seeded: Seeded, *, evaluators: int = EVALUATORS
) -> StatementCounts:
    """`evaluators` new evaluators each join, resume once (`GET next`) and answer every pair of
    their quota; every request counted on its own."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event

    from app.config import Settings
    from app.main import create_app
    from app.rating import tokens

    settings = Settings(
        env="production",
        database_url=url,
        var_dir=workdir / "var",
        storage_url=str(workdir / "media"),
        broker_url=f"filesystem://{workdir / 'var' / 'broker'}",
        secret_key=SECRET_KEY,
        admin_password=ADMIN_PASSWORD,
        metrics_token=METRICS_TOKEN,
        log_level="WARNING",
        rate_limit_join_per_minute=0,
        rate_limit_submit_per_minute=0,
    )
    app = create_app(settings)
    engine = app.state.engine
    now = Counts()

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:5].upper() == "BEGIN":
            now.begins += 1
        else:
            now.statements += 1

    def on_commit(_conn: Any) -> None:
        now.commits += 1

    def on_checkout(*_: Any) -> None:
        now.checkouts += 1

    listeners = [
        ("before_cursor_execute", on_statement),
        ("commit", on_commit),
        ("checkout", on_checkout),
    ]
    for name, listener in listeners:
        event.listen(engine, name, listener)
    counts = StatementCounts()
    base = f"/r/{seeded.key}/api"
    try:
        with TestClient(app) as client:

            def counted(kind: str, method: str, path: str, **kwargs: Any) -> Any:
                before = Counts(**vars(now))
                response = client.request(method, path, **kwargs)
                if response.status_code != 200:
                    raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
                counts.requests[kind].append(now.minus(before))
                return response.json()

            for _ in range(evaluators):
                invite, _nonce = tokens.new_invite(SECRET_KEY, seeded.study_id)
                joined = counted("join", "POST", f"{base}/join", json={"invite": invite})
                headers = {"Authorization": f"Bearer {joined['evaluator_token']}"}
                client.cookies.clear()
                current = joined["next"]
                counted("next", "GET", f"{base}/next", headers=headers)
                step = 0
                while current["status"] == "trial":
                    votes = {k: CHOICES[(step + i) % 3] for i, k in enumerate(seeded.criteria)}
                    kind = "last submit" if current["last"] else "submit"
                    answer = counted(
                        kind,
                        "POST",
                        f"{base}/trials/{current['trial']['id']}/votes",
                        json={"votes": votes},
                        headers=headers,
                    )
                    current = answer["next"]
                    step += 1
                if current["status"] != "done":
                    raise RuntimeError(f"an evaluator ended without done: {current}")
    finally:
        for name, listener in listeners:
            event.remove(engine, name, listener)
        engine.dispose()
    return counts

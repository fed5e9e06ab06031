"""The study under load and the reconciliation at the end: the example study seeded open with
every clip done, then votes sent = votes stored (SQL count) = votes exported (rows of
`vidarena export votes SLUG -o FILE`), and no trial with only some of its votes."""

from __future__ import annotations

import csv
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.load.config import QUOTA, SECRET_KEY
from tests.kit.cli import VIDARENA
from tests.kit.paths import ROOT


@dataclass
class Seeded:
    study_id: int
    slug: str
    key: str
    criteria: list[str]
    gif_bytes: int


def seed_study(url: str, media_dir: Path) -> Seeded:
    """The example study (2 arms, 100 prompts, 6 criteria), open, every clip done with a GIF in
    local storage, matchups made, quota QUOTA pairs per evaluator."""
    from app.db import make_engine, session_factory
    from app.rating import matchups, tokens
    from app.storage import LocalStorage
    from app.studies.models import StudyStatus
    from tests.kit.media import noise_gif_bytes
    from tests.kit.studies import example_study, store_clips, study_clips

    engine = make_engine(url)
    with session_factory(engine)() as session:
        study = example_study(session)
        study.status = StudyStatus.open
        study.rating = {**study.rating, "trials_per_evaluator": QUOTA}
        session.flush()
        sizes = store_clips(
            session,
            LocalStorage(media_dir),
            study_clips(session, study),
            make_gif=noise_gif_bytes,
            shape=(16, 64, 64),
        )
        matchups.ensure_matchups(session=session, study=study)
        session.commit()
        seeded = Seeded(
            study_id=study.id,
            slug=study.slug,
            key=tokens.study_key(SECRET_KEY, study.id),
            criteria=list(study.criterion_keys),
            gif_bytes=sum(sizes) // len(sizes),
        )
    if engine.dialect.name == "postgresql":
        # Fresh statistics, as autovacuum has them once a study's clips have rendered over
        # time. Without them the planner takes `clip.status = 'done'` for one row and the
        # assignment query nests loops over clip x clip (26 ms instead of 1 ms; see
        # docs/benchmarks.md).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return seeded


def votes_stored(url: str, study_id: int) -> int:
    from sqlalchemy import func, select

    from app.db import make_engine
    from app.rating.models import Matchup, Trial, Vote

    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(
            select(func.count(Vote.id))
            .join(Trial, Trial.id == Vote.trial_id)
            .join(Matchup, Matchup.id == Trial.matchup_id)
            .where(Matchup.study_id == study_id)
        )
    engine.dispose()
    return int(n or 0)


def all_or_nothing_violations(url: str, study_id: int, criteria: int) -> int:
    """Trials answered without every vote, or with votes and no answer: must be 0."""
    from sqlalchemy import func, select

    from app.db import make_engine
    from app.rating.models import Matchup, Trial, Vote

    engine = make_engine(url)
    per_trial = (
        select(Trial.id, Trial.answered_at, func.count(Vote.id).label("n"))
        .join(Matchup, Matchup.id == Trial.matchup_id)
        .outerjoin(Vote, Vote.trial_id == Trial.id)
        .where(Matchup.study_id == study_id)
        .group_by(Trial.id, Trial.answered_at)
        .subquery()
    )
    with engine.connect() as conn:
        bad = conn.scalar(
            select(func.count()).where(
                ((per_trial.c.answered_at.is_(None)) & (per_trial.c.n != 0))
                | ((per_trial.c.answered_at.is_not(None)) & (per_trial.c.n != criteria))
            )
        )
    engine.dispose()
    return int(bad or 0)


def votes_exported(env: dict[str, str], slug: str, out: Path) -> int:
    """Rows of `vidarena export votes SLUG -o FILE` (the researchers' export command)."""
    subprocess.run(
        [*VIDARENA, "export", "votes", slug, "-o", str(out)],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    with out.open(encoding="utf-8-sig", newline="") as file:
        return sum(1 for _ in csv.reader(file)) - 1  # minus the header

"""Stop when decided: an open study whose `[analysis]` plan says `stop = "when_decided"` stops
assigning new pairs once every primary hypothesis has a verdict (the anytime-valid sequences
allow taking it at any look), or once its vote budget is spent.

Each web process checks its open studies every VIDARENA_STOP_CHECK_SECONDS, on the analysis lane
(`check_studies`); the verdicts come from the live dashboard's own computation and cache, so the
check costs what a dashboard refresh costs, and one query when nothing changed. Stopping is one
conditional UPDATE (`stopped_at IS NULL`), so processes checking at once stop a study once.
What an evaluator then sees is the rating service's (app/rating/service.py: a pair on screen is
finished, then the done page with the completion code).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.dashboard import service as dashboard_service
from app.dashboard.schemas import Filters, VerdictView
from app.db import utcnow
from app.rating import votes
from app.studies import service as studies_service
from app.studies.models import Study, StudyStatus

log = logging.getLogger(__name__)


def stop_reason(
    *, session: Session, study: Study, cache: dashboard_service.DashboardCache
) -> str | None:
    """Why `study` should stop now, or None (not open, already stopped, its plan says never,
    or something primary is still undecided and the budget is not spent)."""
    if study.status != StudyStatus.open or study.stopped_at is not None:
        return None
    dashboard = dashboard_service.live(session=session, study=study, filters=Filters(), cache=cache)
    view = dashboard.verdicts
    if view is None or view.plan.stop != "when_decided":
        return None
    if view.plan.budget is not None:
        spent = session.scalar(votes.study_votes(func.count(), study_id=study.id)) or 0
        if spent >= view.plan.budget:
            return f"The vote budget is spent: {spent:,} of {view.plan.budget:,} votes."
    return _decided(view)


def _decided(view: VerdictView) -> str | None:
    primary = {(h.criterion, h.arm, h.opponent) for h in view.plan.primary}
    verdicts = [v for v in view.summary.verdicts if (v.criterion, v.arm, v.opponent) in primary]
    if not verdicts or any(v.status == "undecided" for v in verdicts):
        return None
    said = "; ".join(
        f"{v.criterion}: {v.arm} {v.status.replace('_', '-')} against {v.opponent} "
        f"(win rate {v.lower:.2f} to {v.upper:.2f}, {v.votes:,} votes)"
        for v in verdicts
    )
    return f"Every primary hypothesis is decided: {said}."


def stop(*, session: Session, study: Study, reason: str) -> bool:
    """Mark `study` stopped (once: False when another process did first); the caller commits."""
    done = session.execute(
        update(Study)
        .where(Study.id == study.id, Study.stopped_at.is_(None))
        .values(stopped_at=utcnow(), stop_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(done, "rowcount", 0))


def check_studies(
    *,
    read: sessionmaker[Session],
    write: sessionmaker[Session],
    cache: dashboard_service.DashboardCache,
) -> Sequence[tuple[str, str]]:
    """Check every open, unstopped study whose plan may stop it; stop those decided. Returns
    (slug, reason) of the studies this call stopped."""
    stopped: list[tuple[str, str]] = []
    with read() as session:
        candidates = session.scalars(
            select(Study).where(Study.status == StudyStatus.open, Study.stopped_at.is_(None))
        ).all()
        due = []
        for study in candidates:
            if studies_service.analysis_spec(study).stop != "when_decided":
                continue
            reason = stop_reason(session=session, study=study, cache=cache)
            if reason is not None:
                due.append((study, reason))
    for study, reason in due:
        with write() as session:
            if stop(session=session, study=study, reason=reason):
                session.commit()
                stopped.append((study.slug, reason))
                log.info("study %s stopped: %s", study.slug, reason)
    return stopped

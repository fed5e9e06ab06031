"""Stop when decided: an open study whose `[analysis]` plan says `stop = "when_decided"` stops
assigning new pairs once every primary hypothesis has a verdict (the anytime-valid sequences
allow taking it at any look), or once its vote budget is spent.

Each web process checks its open studies every VIDARENA_STOP_CHECK_SECONDS, on the analysis lane
(`check_studies`); the verdicts come from the live dashboard's own computation and cache, so the
check costs what a dashboard refresh costs, and one query when nothing changed. Stopping is one
conditional UPDATE (`stopped_at IS NULL`), so processes checking at once stop a study once.
What an evaluator then sees is the rating service's (app/rating/service.py: a pair on screen is
finished, then the done page with the completion code).

The same check keeps the adaptive allocation of a plan with `adaptive = true`: the arm pairs
still wanted (`app.analysis.allocation.wanted_pairs`) are written to `study.allocation` when they
change, and the rating service assigns their matchups first. Only finished evaluators enter the
verdicts, so the allocation never depends on the answers of anyone still rating.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.analysis import allocation
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
    return _reason(session, study, dashboard.verdicts)


def _reason(session: Session, study: Study, view: VerdictView | None) -> str | None:
    if view is None or view.plan.stop != "when_decided":
        return None
    if view.plan.budget is not None:
        spent = session.scalar(votes.study_votes(func.count(), study_id=study.id)) or 0
        if spent >= view.plan.budget:
            return f"The vote budget is spent: {spent:,} of {view.plan.budget:,} votes."
    return _decided(view)


def _decided(view: VerdictView) -> str | None:
    plan, verdicts = view.plan, view.summary.verdicts
    if not allocation.decided(plan, verdicts):
        return None
    if plan.compare == "best":
        said = "; ".join(
            f"{c}: {best} superior to every other arm"
            if (best := allocation.best_arm(plan, verdicts, criterion=c))
            else f"{c}: no single best arm (every arm lost to another)"
            for c in dict.fromkeys(h.criterion for h in plan.primary)
        )
        return f"The best arm is identified: {said}."
    primary = {(h.criterion, h.arm, h.opponent) for h in plan.primary}
    verdicts = tuple(v for v in verdicts if (v.criterion, v.arm, v.opponent) in primary)
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
    """Check every open, unstopped study whose plan may stop it; stop those decided, and keep
    the allocation of adaptive plans current. Returns (slug, reason) of the studies this call
    stopped."""
    stopped: list[tuple[str, str]] = []
    with read() as session:
        candidates = session.scalars(
            select(Study).where(Study.status == StudyStatus.open, Study.stopped_at.is_(None))
        ).all()
        due, moved = [], []
        for study in candidates:
            spec = studies_service.analysis_spec(study)
            if spec.stop != "when_decided" and not spec.adaptive and study.allocation is None:
                continue
            view = dashboard_service.live(
                session=session, study=study, filters=Filters(), cache=cache
            ).verdicts
            wanted = allocation_of(study, view) if spec.adaptive else None
            if _pairs(wanted) != _pairs(study.allocation):
                moved.append((study, wanted))
            reason = _reason(session, study, view)
            if reason is not None:
                due.append((study, reason))
    for study, wanted in moved:
        with write() as session:
            session.execute(update(Study).where(Study.id == study.id).values(allocation=wanted))
            session.commit()
            log.info("study %s: allocation now %s", study.slug, _pairs(wanted) or "uniform")
    for study, reason in due:
        with write() as session:
            if stop(session=session, study=study, reason=reason):
                session.commit()
                stopped.append((study.slug, reason))
                log.info("study %s stopped: %s", study.slug, reason)
    return stopped


def allocation_of(study: Study, view: VerdictView | None) -> dict[str, Any] | None:
    """`study.allocation` for the verdicts in `view`: the wanted arm pairs (`view.wanted`) with
    their keys for the rating service's candidate order (both orders of the arms' ids), or None
    (uniform)."""
    if view is None or view.wanted is None:
        return None
    ids = {arm.name: arm.id for arm in study.arms}
    span = max(ids.values()) + 1
    names = sorted(sorted(pair) for pair in view.wanted)
    keys = sorted(ids[x] * span + ids[y] for a, b in names for x, y in ((a, b), (b, a)))
    return {"pairs": names, "keys": keys, "span": span, "updated_at": utcnow().isoformat()}


def _pairs(value: dict[str, Any] | None) -> list[list[str]] | None:
    return None if value is None else value.get("pairs")

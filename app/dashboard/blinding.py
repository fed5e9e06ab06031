"""The dashboard's blinding panel: the audit of app/rating/audit.py (every matchup's clips read
from storage, as served), computed on request on the analysis lane and kept per study for
CACHE_SECONDS unless a recomputation is asked for. One computation per study at a time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from app.analysis.blinding import BlindingAudit, summary_line
from app.db import utcnow
from app.rating import audit
from app.storage import Storage
from app.studies.models import Study

CACHE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class BlindingPanel:
    result: BlindingAudit
    line: str  # the CLI's last line
    computed_at: datetime
    compute_s: float


@dataclass
class BlindingCache:
    panels: dict[tuple[int, datetime], tuple[float, BlindingPanel]] = field(default_factory=dict)
    locks: dict[tuple[int, datetime], threading.Lock] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def study_lock(self, key: tuple[int, datetime]) -> threading.Lock:
        with self.lock:
            return self.locks.setdefault(key, threading.Lock())


def panel(
    *,
    session: Session,
    study: Study,
    storage: Storage,
    cache: BlindingCache,
    fresh: bool = False,
) -> BlindingPanel:
    """The study's audit, from the cache when younger than CACHE_SECONDS (unless `fresh`)."""
    key = (study.id, study.created_at)
    with cache.study_lock(key):
        kept = cache.panels.get(key)
        if kept is not None and not fresh and time.monotonic() - kept[0] < CACHE_SECONDS:
            return kept[1]
        started = time.perf_counter()
        result = audit.blinding_audit(session=session, study=study, storage=storage)
        made = BlindingPanel(
            result=result,
            line=summary_line(result),
            computed_at=utcnow(),
            compute_s=time.perf_counter() - started,
        )
        with cache.lock:
            cache.panels[key] = (time.monotonic(), made)
        return made

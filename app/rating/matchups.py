"""Matchups: every pair of arms of a prompt whose two clips are done, made once (when a clip
turns done, when an evaluator joins, when a study opens)."""

from __future__ import annotations

from itertools import combinations
from typing import TypeVarTuple

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, aliased

from app.clips.models import Clip, ClipStatus
from app.db import insert_new, utcnow
from app.rating.models import Matchup
from app.studies import service as studies_service
from app.studies.models import Prompt, Study, StudyStatus


def ensure_matchups(
    *, session: Session, study: Study | int, prompt_ids: list[int] | None = None
) -> int:
    """Create the missing matchups of a study: every pair of arms of every prompt whose two
    clips are both `done`. Idempotent and cheap (two queries and one INSERT of what is missing);
    safe to call concurrently (conflicting inserts are skipped). Returns how many were created.

    Render workers call it after a clip turns done, with `prompt_ids=[clip.prompt_id]`; the web
    app calls it when an evaluator joins. A matchup whose clip later stops being done (re-render)
    stays, but is not assigned until both clips are done again.
    """
    study_id = study if isinstance(study, int) else study.id
    query = (
        select(Clip.id, Clip.prompt_id, Clip.arm_id)
        .join(Prompt, Prompt.id == Clip.prompt_id)
        .where(Prompt.study_id == study_id, Clip.status == ClipStatus.done)
        .order_by(Clip.prompt_id, Clip.arm_id)
    )
    existing_query = select(Matchup.clip_a_id, Matchup.clip_b_id).where(
        Matchup.study_id == study_id
    )
    if prompt_ids is not None:
        query = query.where(Clip.prompt_id.in_(prompt_ids))
        existing_query = existing_query.where(Matchup.prompt_id.in_(prompt_ids))
    by_prompt: dict[int, list[tuple[int, int]]] = {}
    for clip_id, prompt_id, arm_id in session.execute(query):
        by_prompt.setdefault(prompt_id, []).append((arm_id, clip_id))
    existing = {(a, b) for a, b in session.execute(existing_query)}
    now = utcnow()
    rows = [
        {
            "study_id": study_id,
            "prompt_id": prompt_id,
            "clip_a_id": clip_a,
            "clip_b_id": clip_b,
            "arm_a_id": arm_a,
            "arm_b_id": arm_b,
            "created_at": now,
        }
        for prompt_id, clips in by_prompt.items()
        for (arm_a, clip_a), (arm_b, clip_b) in combinations(sorted(clips), 2)
        if (clip_a, clip_b) not in existing
    ]
    return insert_new(session, Matchup, rows, unique=["clip_a_id", "clip_b_id"])


def ensure_matchups_for_prompt(*, session: Session, clip_id: int) -> int:
    """`ensure_matchups` for the prompt of one clip (what a render worker calls once the clip is
    done, in the transaction that marks it done). Returns how many matchups were created."""
    row = session.execute(
        select(Prompt.study_id, Prompt.id)
        .join(Clip, Clip.prompt_id == Prompt.id)
        .where(Clip.id == clip_id)
    ).first()
    if row is None:
        return 0
    return ensure_matchups(session=session, study=row.study_id, prompt_ids=[row.id])


_CLIP_A = aliased(Clip, name="clip_a")

_CLIP_B = aliased(Clip, name="clip_b")


_Ts = TypeVarTuple("_Ts")


def ready(query: Select[*_Ts]) -> Select[*_Ts]:
    """`query` (over Matchup) limited to matchups whose two clips are both done."""
    return (
        query.join(_CLIP_A, _CLIP_A.id == Matchup.clip_a_id)
        .join(_CLIP_B, _CLIP_B.id == Matchup.clip_b_id)
        .where(_CLIP_A.status == ClipStatus.done, _CLIP_B.status == ClipStatus.done)
    )


def set_study_status(*, session: Session, study: Study, status: StudyStatus) -> Study:
    """Move a study to `status` (see studies.service.set_status); opening it makes the matchups
    of the clips already done, so pairs imported or rendered before opening are ratable at
    once. What the admin page and the CLI call."""
    studies_service.set_status(session=session, study=study, status=status)
    if status == StudyStatus.open:
        ensure_matchups(session=session, study=study)
    return study

"""The clip measures beside the votes, for the dashboard's expensive statistics (`Advanced`).

`confound_view(...)` reads the study's stored clip measures (`app.clips.service
.measures_for_study`) and its decisive first-showing votes with the clips they compared (one
query through `app.rating.votes`, the same filters as the rest of `Advanced`), and hands them to
`app.analysis.confounds`: each arm's distribution of every measure, per criterion the logistic
slope of winning on the difference in each measure, and the focus arm's preference against each
opponent with the measures held equal, beside the same model without them.

Two covariate sets: the motion measures (`MOTION`: "motion held equal", the question the study's
motion trap asks) and every measure the clips have (a sensitivity reading: holding sharpness or
flicker equal may remove the very quality the votes judge; docs/statistics.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import String, func, select, type_coerce
from sqlalchemy.orm import Session

from app.analysis.confounds import ClipTable, ConfoundSummary, MeasuredVotes, confound_summary
from app.clips import service as clips_service
from app.clips.models import Clip, ClipStatus
from app.rating import votes
from app.rating.models import Choice, Matchup, Trial, Vote
from app.studies.models import Arm, Study

MOTION: tuple[str, ...] = ("motion_mean", "motion_std")
_CHOICE_CODE = {"left": 0, "right": 1, "tie": 2}


def covariate_sets(measures: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The motion measures, then every measure (when that is more than the motion ones)."""
    everything = tuple(measures)
    sets = [MOTION]
    if set(everything) - set(MOTION):
        sets.append(everything)
    return tuple(sets)


def confound_view(
    *,
    session: Session,
    study: Study,
    pairs: Sequence[tuple[str, str]],
    exclude_flagged_trials: bool = False,
    exclude_evaluators: Iterable[int] = (),
) -> ConfoundSummary:
    """Every measure-related statistic of the study (see the module docstring)."""
    arms = tuple(arm.name for arm in study.arms)
    criteria = tuple(study.criterion_keys)
    measures = clips_service.measures_for_study(session=session, study_id=study.id)
    if not measures:
        return ConfoundSummary(
            measures=(),
            n_clips=0,
            reason="No clip of this study is measured yet (`vidarena clips measure SLUG` "
            "measures the clips rendered or imported before measuring existed).",
        )
    clip_arms = dict(
        session.execute(
            select(Clip.id, Arm.name)
            .join(Arm, Arm.id == Clip.arm_id)
            .where(Arm.study_id == study.id, Clip.status == ClipStatus.done)
        ).all()
    )
    clips, index = ClipTable.from_mapping(clip_arms, measures)
    measured = load_measured_votes(
        session=session,
        study=study,
        clips=clips,
        index=index,
        exclude_flagged_trials=exclude_flagged_trials,
        exclude_evaluators=exclude_evaluators,
    )
    return confound_summary(
        measured,
        arms=arms,
        criteria=criteria,
        pairs=pairs,
        covariate_sets=covariate_sets(clips.measures),
    )


def load_measured_votes(
    *,
    session: Session,
    study: Study,
    clips: ClipTable,
    index: dict[int, int],
    exclude_flagged_trials: bool = False,
    exclude_evaluators: Iterable[int] = (),
) -> MeasuredVotes:
    """The study's decisive first-showing votes with the clips they compared (indices into
    `clips`), counted in SQL per prompt, criterion, answer and the clips on each side: a few
    thousand rows whatever the number of votes (the fits give the same results for a row of
    count c as for c votes)."""
    left_clip, right_clip = votes.left_clip_id, votes.right_clip_id
    choice = type_coerce(Vote.choice, String)
    keys = (Matchup.prompt_id, Vote.criterion, choice, left_clip, right_clip)
    query = (
        votes.study_votes(*keys, func.count(), study_id=study.id)
        .where(Trial.is_repeat.is_(False), Vote.choice != Choice.tie.value)
        .group_by(*keys)
    )
    if exclude_flagged_trials:
        query = query.where(Trial.flagged.is_(False))
    dropped = sorted(set(exclude_evaluators))
    if dropped:
        query = query.where(Trial.evaluator_id.not_in(dropped))
    rows = session.execute(query).all()
    kept = [r for r in rows if r[3] in index and r[4] in index]  # done clips only
    return MeasuredVotes.build(
        clips,
        criterion=np.array([r[1] for r in kept], dtype=object),
        prompt=np.array([r[0] for r in kept], dtype=np.int64),
        left_clip=np.array([index[r[3]] for r in kept], dtype=np.int64),
        right_clip=np.array([index[r[4]] for r in kept], dtype=np.int64),
        choice=np.array([_CHOICE_CODE[r[2]] for r in kept], dtype=np.int64),
        count=np.array([r[5] for r in kept], dtype=np.int64),
    )

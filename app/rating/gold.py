"""Gold pairs: pairs whose right answer is known, made from a study's own clips (quality control).

A gold pair shows one of the study's done clips (the *original*, the right answer) against a
gold *twin* (`app.rating.models.GoldPair`):

* `frozen`: the clip frozen on one frame: scores the motion criteria;
* `degraded`: the clip heavily blurred and noised: scores the appearance criteria;
* `mismatched`: the same arm's clip of another prompt, shown with this prompt's text: scores
  video-text relevance.

`SCORES` says which criteria each kind scores; a criterion a kind does not score (and a study's
own criteria) is answered as usual and used by nothing. A gold trial is *correct* when the
original won every scored criterion; a tie is wrong. Gold trials judge no matchup (their
`matchup_id` is NULL), so no preference statistic, counter or verdict can read them.

Per evaluator: gold accuracy (correct / answered gold trials), *flagged* when below the study's
`gold_min_accuracy`, and *marked for rejection* only after failing at least
`REJECT_AFTER_FAILURES` checks (Prolific's policy: one failed check is not enough to reject).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.rating import votes as vote_view
from app.rating.enrollment import rating_spec
from app.rating.models import Evaluator, GoldKind, GoldPair, Trial, Vote
from app.studies.models import Study
from app.studies.schemas import GOLD_CRITERIA

# Prolific: an evaluator may be rejected for attention checks only after failing two.
REJECT_AFTER_FAILURES = 2

# A twin's media id, in media tokens and the rating service's clip pairs: MEDIA_BASE + its gold
# pair's id, above every clip id (the token is encrypted and fixed-width: nothing shows it).
MEDIA_BASE = 1 << 62


def media_id(gold_pair_id: int) -> int:
    return MEDIA_BASE + gold_pair_id


def is_twin(media: int) -> bool:
    """Whether a media id is a gold twin's (else it is a clip id)."""
    return media >= MEDIA_BASE


def pair_of(media: int) -> int:
    """The gold pair id of a twin's media id."""
    return media - MEDIA_BASE


# The criteria (of the default set, app.studies.schemas.DEFAULT_CRITERIA) each kind scores:
# the original is the right answer on each.
SCORES: Mapping[GoldKind, tuple[str, ...]] = {
    GoldKind(kind): keys for kind, keys in GOLD_CRITERIA.items()
}


def scored(kind: GoldKind | str, criteria: Iterable[str]) -> tuple[str, ...]:
    """The criteria among `criteria` (a study's keys) that a gold pair of `kind` scores."""
    wanted = SCORES[GoldKind(kind)]
    return tuple(c for c in criteria if c in wanted)


def usable_kinds(criteria: Iterable[str]) -> list[GoldKind]:
    """The kinds that score at least one of a study's criteria (the others are never shown)."""
    keys = list(criteria)
    return [kind for kind in GoldKind if scored(kind, keys)]


def is_correct(
    *, kind: GoldKind | str, criteria: Sequence[str], answers: Mapping[str, str], a_on_left: bool
) -> bool | None:
    """Whether a gold trial's answers are right: the original (the pair's side "a") chosen on
    every criterion the kind scores; ties are wrong. None when unanswered or nothing scored."""
    keys = scored(kind, criteria)
    if not keys or any(k not in answers for k in keys):
        return None
    return all(vote_view.chosen(answers[k], a_on_left) == "a" for k in keys)


@dataclass(frozen=True)
class GoldScore:
    """An evaluator's gold checks: answered, correct, failed, and what follows from them."""

    checks: int
    correct: int
    min_accuracy: float

    @property
    def failed(self) -> int:
        return self.checks - self.correct

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.checks if self.checks else None

    @property
    def flagged(self) -> bool:
        """Gold accuracy below the study's threshold (after at least one check)."""
        return self.checks > 0 and self.correct < self.min_accuracy * self.checks

    @property
    def reject(self) -> bool:
        """Marked for rejection: failed at least REJECT_AFTER_FAILURES checks."""
        return self.failed >= REJECT_AFTER_FAILURES


def _gold_answers(
    session: Session, *, evaluator_ids: Sequence[int] | None = None, study_id: int | None = None
) -> dict[int, dict[int, tuple[GoldKind, bool, dict[str, str]]]]:
    """evaluator id -> trial id -> (kind, a_on_left, answers) of answered gold trials."""
    query = (
        select(Trial.evaluator_id, Trial.id, Trial.a_on_left, GoldPair.kind, Vote.criterion)
        .add_columns(Vote.choice)
        .join(GoldPair, GoldPair.id == Trial.gold_pair_id)
        .join(Vote, Vote.trial_id == Trial.id)
        .where(Trial.answered_at.is_not(None))
    )
    if evaluator_ids is not None:
        query = query.where(Trial.evaluator_id.in_(evaluator_ids))
    if study_id is not None:
        query = query.where(GoldPair.study_id == study_id)
    found: dict[int, dict[int, tuple[GoldKind, bool, dict[str, str]]]] = {}
    for evaluator_id, trial_id, a_on_left, kind, criterion, choice in session.execute(query):
        trials = found.setdefault(evaluator_id, {})
        entry = trials.setdefault(trial_id, (kind, bool(a_on_left), {}))
        entry[2][criterion] = str(choice)
    return found


def trial_correct(
    *, session: Session, criteria: Sequence[str], trial_ids: Sequence[int] | None = None
) -> dict[int, bool | None]:
    """trial id -> `is_correct` for answered gold trials (all of them, or `trial_ids`)."""
    query = (
        select(Trial.id, Trial.a_on_left, GoldPair.kind, Vote.criterion, Vote.choice)
        .join(GoldPair, GoldPair.id == Trial.gold_pair_id)
        .join(Vote, Vote.trial_id == Trial.id)
    )
    if trial_ids is not None:
        query = query.where(Trial.id.in_(trial_ids))
    rows: dict[int, tuple[GoldKind, bool, dict[str, str]]] = {}
    for trial_id, a_on_left, kind, criterion, choice in session.execute(query):
        rows.setdefault(trial_id, (kind, bool(a_on_left), {}))[2][criterion] = str(choice)
    return {
        trial_id: is_correct(kind=kind, criteria=criteria, answers=answers, a_on_left=a_on_left)
        for trial_id, (kind, a_on_left, answers) in rows.items()
    }


def _criteria_of(session: Session, evaluator_id: int) -> list[str]:
    criteria = session.scalar(
        select(Study.criteria)
        .join(Evaluator, Evaluator.study_id == Study.id)
        .where(Evaluator.id == evaluator_id)
    )
    return [str(c["key"]) for c in criteria or []]


def failed_checks(*, session: Session, evaluator_id: int) -> int:
    """How many gold checks the evaluator has failed (answered gold trials not correct)."""
    criteria = _criteria_of(session, evaluator_id)
    answered = _gold_answers(session, evaluator_ids=[evaluator_id]).get(evaluator_id, {})
    return sum(
        1
        for kind, a_on_left, answers in answered.values()
        if is_correct(kind=kind, criteria=criteria, answers=answers, a_on_left=a_on_left) is False
    )


def scores(
    *, session: Session, study_id: int, criteria: Sequence[str], min_accuracy: float
) -> dict[int, GoldScore]:
    """evaluator id -> their GoldScore, for every evaluator of the study with a gold answer."""
    result = {}
    for evaluator_id, trials in _gold_answers(session, study_id=study_id).items():
        verdicts = [
            is_correct(kind=kind, criteria=criteria, answers=answers, a_on_left=a_on_left)
            for kind, a_on_left, answers in trials.values()
        ]
        judged = [v for v in verdicts if v is not None]
        result[evaluator_id] = GoldScore(
            checks=len(judged), correct=sum(judged), min_accuracy=min_accuracy
        )
    return result


def flagged_among(
    *, session: Session, evaluator_ids: Sequence[int], criteria: Sequence[str], min_accuracy: float
) -> set[int]:
    """Those of `evaluator_ids` whose gold accuracy is below `min_accuracy`."""
    flagged = set()
    ids = list(evaluator_ids)
    for start in range(0, len(ids), 500):
        answers = _gold_answers(session, evaluator_ids=ids[start : start + 500])
        for evaluator_id, trials in answers.items():
            verdicts = [
                is_correct(kind=kind, criteria=criteria, answers=answers, a_on_left=a_on_left)
                for kind, a_on_left, answers in trials.values()
            ]
            judged = [v for v in verdicts if v is not None]
            score = GoldScore(checks=len(judged), correct=sum(judged), min_accuracy=min_accuracy)
            if score.flagged:
                flagged.add(evaluator_id)
    return flagged


@dataclass(frozen=True)
class EvaluatorChecks:
    """One evaluator's row on the admin evaluators page."""

    evaluator_id: int
    external_id: str | None
    completed: bool
    answered: int  # trials answered, gold ones included
    flagged_trials: int
    gold: GoldScore


def evaluator_checks(*, session: Session, study: Study) -> list[EvaluatorChecks]:
    """Every evaluator of the study, in joining order, with their trials and gold checks."""
    spec = rating_spec(study)
    found = scores(
        session=session,
        study_id=study.id,
        criteria=study.criterion_keys,
        min_accuracy=spec.gold_min_accuracy,
    )
    trials = dict(
        (evaluator_id, (answered, flagged))
        for evaluator_id, answered, flagged in session.execute(
            select(
                Trial.evaluator_id,
                func.count(Trial.answered_at),
                func.coalesce(func.sum(case((Trial.flagged, 1), else_=0)), 0),
            )
            .join(Evaluator, Evaluator.id == Trial.evaluator_id)
            .where(Evaluator.study_id == study.id)
            .group_by(Trial.evaluator_id)
        )
    )
    none = GoldScore(checks=0, correct=0, min_accuracy=spec.gold_min_accuracy)
    return [
        EvaluatorChecks(
            evaluator_id=evaluator_id,
            external_id=external_id,
            completed=completed_at is not None,
            answered=int(trials.get(evaluator_id, (0, 0))[0]),
            flagged_trials=int(trials.get(evaluator_id, (0, 0))[1]),
            gold=found.get(evaluator_id, none),
        )
        for evaluator_id, external_id, completed_at in session.execute(
            select(Evaluator.id, Evaluator.external_id, Evaluator.completed_at)
            .where(Evaluator.study_id == study.id)
            .order_by(Evaluator.id)
        )
    ]


# --- when gold trials come ---------------------------------------------------------------------


def gold_count(*, rate: float, regular: int) -> int:
    """Gold trials an evaluator with `regular` planned trials gets: `rate` of all their trials
    (gold ones included), rounded."""
    if rate <= 0 or regular <= 0:
        return 0
    return round(regular * rate / (1 - rate))


def gold_positions(*, rate: float, regular: int, seed: str) -> frozenset[int]:
    """The 1-based positions of an evaluator's gold trials among `regular` planned trials:
    about `rate` of all their trials, never the first. One per block of about 1/rate trials, at
    a place in the block drawn from `seed` (the evaluator), never the block's first, so gold
    trials are spread out, never adjacent, and not at a fixed period an evaluator could learn."""
    count = gold_count(rate=rate, regular=regular)
    if count <= 0:
        return frozenset()
    total = regular + count
    rng = random.Random(f"vidarena-gold:{seed}")
    positions = set()
    for k in range(count):
        start = 1 + (k * total) // count  # the block's first position
        end = ((k + 1) * total) // count  # its last
        positions.add(rng.randint(start + 1, max(start + 1, end)))
    return frozenset(p for p in positions if 1 < p <= total)


__all__ = [
    "MEDIA_BASE",
    "REJECT_AFTER_FAILURES",
    "SCORES",
    "EvaluatorChecks",
    "GoldScore",
    "evaluator_checks",
    "failed_checks",
    "flagged_among",
    "gold_count",
    "gold_positions",
    "is_correct",
    "is_twin",
    "media_id",
    "pair_of",
    "scored",
    "scores",
    "trial_correct",
    "usable_kinds",
]

"""The vote view: every vote with its trial and matchup, a study's votes, and which side was which.

A vote is one criterion's answer within a trial; a trial is one matchup shown to one evaluator. A
matchup stores its two clips as a and b (arm a before arm b by id), and `trial.a_on_left` says
whether clip a was on the left. Everything that reads votes builds on these pieces, so the join,
the study filter and the orientation are written here once:

* `select_votes(*columns)`: `SELECT columns FROM vote JOIN trial JOIN matchup`, every study;
* `in_study(study_id)`: the study filter, `study_votes(...)` both at once;
* `left_arm_id`, `right_arm_id`, `left_clip_id`, `right_clip_id` (or `on_left` / `on_right` of any
  a/b pair of columns): the orientation as SQL expressions;
* `sides(a, b, a_on_left)` and `chosen(choice, a_on_left)`: the same orientation for values
  already read (a row, a loaded trial).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from sqlalchemy import ColumnElement, ColumnExpressionArgument, Select, case, select

from app.rating.models import Matchup, Trial, Vote

T = TypeVar("T")


def select_votes(*columns: Any) -> Select[Any]:
    """`SELECT columns FROM vote JOIN trial JOIN matchup`, over every study (see `in_study`)."""
    return (
        select(*columns)
        .select_from(Vote)
        .join(Trial, Trial.id == Vote.trial_id)
        .join(Matchup, Matchup.id == Trial.matchup_id)
    )


def in_study(study_id: int, *, dialect: str | None = None) -> ColumnElement[bool]:
    """The study filter on a `select_votes` query: `matchup.study_id = study_id`.

    Give `dialect` when the query reads all of a study's votes in vote id order: on SQLite the
    filter is then written `study_id + 0`, which keeps the planner off the study's index, so rows
    stream in primary-key order from the first one (faster there than walking the index and
    sorting, at the cost of reading other studies' votes too). Leave it out where a narrower
    condition (an id range, an evaluator) drives the query."""
    if dialect == "sqlite":
        return Matchup.study_id + 0 == study_id
    return Matchup.study_id == study_id


def study_votes(*columns: Any, study_id: int, dialect: str | None = None) -> Select[Any]:
    """`select_votes(*columns)` of one study (`dialect`: see `in_study`)."""
    return select_votes(*columns).where(in_study(study_id, dialect=dialect))


# --- orientation ----------------------------------------------------------------------------


def on_left(a: ColumnExpressionArgument[T], b: ColumnExpressionArgument[T]) -> ColumnElement[T]:
    """Of the matchup's `a` and `b` column, the one its trial showed on the left."""
    return case((Trial.a_on_left, a), else_=b)


def on_right(a: ColumnExpressionArgument[T], b: ColumnExpressionArgument[T]) -> ColumnElement[T]:
    """Of the matchup's `a` and `b` column, the one its trial showed on the right."""
    return case((Trial.a_on_left, b), else_=a)


left_arm_id: ColumnElement[int] = on_left(Matchup.arm_a_id, Matchup.arm_b_id).label("left_arm_id")
right_arm_id: ColumnElement[int] = on_right(Matchup.arm_a_id, Matchup.arm_b_id).label(
    "right_arm_id"
)
left_clip_id: ColumnElement[int] = on_left(Matchup.clip_a_id, Matchup.clip_b_id).label(
    "left_clip_id"
)
right_clip_id: ColumnElement[int] = on_right(Matchup.clip_a_id, Matchup.clip_b_id).label(
    "right_clip_id"
)


def sides(a: T, b: T, a_on_left: Any) -> tuple[T, T]:
    """`(left, right)`: a matchup's `a` and `b` (arms, clips, names) as its trial showed them."""
    return (a, b) if a_on_left else (b, a)


def chosen(choice: str, a_on_left: Any) -> Literal["a", "b", "tie"]:
    """Which of the matchup's clips a choice (`left`, `right`, `tie`) picked: the answer in the
    matchup's own terms, the same whichever side each clip was shown on."""
    if choice == "tie":
        return "tie"
    return "a" if (choice == "left") == bool(a_on_left) else "b"


__all__ = [
    "chosen",
    "in_study",
    "left_arm_id",
    "left_clip_id",
    "on_left",
    "on_right",
    "right_arm_id",
    "right_clip_id",
    "select_votes",
    "sides",
    "study_votes",
]

"""Pydantic shapes of the evaluator JSON API (documented in the OpenAPI schema).

Nothing here names an arm, a clip, a pipeline or which side is which: a trial is its id, its
place in the evaluator's sequence, the prompt text and two opaque media URLs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.rating.models import Choice

ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class CriterionOut(BaseModel):
    key: str = Field(description="Key to use in a vote submission.")
    label: str
    question: str


class StudyOut(BaseModel):
    """What an evaluator needs to know before rating (no study name: it may name pipelines)."""

    criteria: list[CriterionOut]
    choices: list[Choice] = Field(default=list(Choice), description="Allowed answers.")
    min_view_seconds: float = Field(
        description="Both clips must have been shown this long before votes are accepted."
    )
    open_enrollment: bool
    external_id_param: str = Field(description="Query parameter carrying a participant id.")
    external_study_param: str = Field(
        description="Query parameter carrying the platform's study id (Prolific: STUDY_ID)."
    )
    external_session_param: str = Field(
        description="Query parameter carrying the platform's session id (Prolific: SESSION_ID)."
    )


class Progress(BaseModel):
    answered: int = Field(description="Trials this evaluator has answered.")
    total: int = Field(description="Trials this evaluator will answer in all (quota + repeats).")


class MediaOut(BaseModel):
    url: str = Field(description="Opaque, cacheable URL of the clip (a GIF).")


class TrialOut(BaseModel):
    id: int = Field(description="Trial id, used to submit votes.")
    position: int = Field(description="1-based place in this evaluator's sequence.")
    prompt: str = Field(description="The text both clips were generated from.")
    left: MediaOut
    right: MediaOut


class NextOut(BaseModel):
    """The evaluator's current trial, or why there is none.

    - `trial`: rate `trial` next;
    - `done`: the evaluator has finished (quota reached, or every pair the study will have
      judged); see `completion_code`;
    - `waiting`: the evaluator is not finished, but the next pair is still being rendered: keep
      the evaluator and ask again after `retry_after` seconds;
    - `unavailable`: nothing to rate and nothing being rendered (the study's clips are not
      queued yet), or, with `after`, nothing to prefetch yet.

    With `trial`, `after` is the pair to prefetch; when it is null, `last` says whether one
    will follow (ask `GET next?after=<trial id>`) or `trial` is the evaluator's last pair (ask
    nothing: the answer to it carries `done` and the completion code).
    """

    status: Literal["trial", "done", "waiting", "unavailable"]
    trial: TrialOut | None = None
    after: TrialOut | None = Field(
        default=None,
        description="The trial after `trial`, already assigned, so its clips can load while "
        "`trial` is rated (what `GET next?after=<trial id>` returns). Set in a submit's answer, "
        "in join's and in `GET next`'s; null for the last pair (`last`), or when none is "
        "assigned yet (a reload before it was, or the next pair still rendering): then ask "
        "`GET next?after=<trial id>`.",
    )
    last: bool = Field(
        default=False,
        description="True when `trial` is the evaluator's last pair (its quota reached): "
        "nothing follows it, so there is nothing to prefetch and no `GET next?after=` to ask; "
        "the answer to it carries `status` `done` with the `completion_code`.",
    )
    progress: Progress
    completion_code: str | None = None
    completion_url: str | None = Field(
        default=None,
        description="With `done`, when the study names one: where to send the evaluator now "
        "(the recruiting platform's completion address, `completion_code` in it).",
    )
    message: str | None = None
    retry_after: float | None = Field(
        default=None, description="With `waiting`: seconds after which to ask again."
    )


class JoinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invite: str | None = Field(default=None, max_length=300, description="Invite token.")
    external_id: ExternalId | None = Field(
        default=None, description="Participant id from a crowd platform (e.g. a Prolific PID)."
    )
    external_study_id: ExternalId | None = Field(
        default=None, description="The platform's study id (e.g. Prolific's STUDY_ID)."
    )
    external_session_id: ExternalId | None = Field(
        default=None, description="The platform's session id (e.g. Prolific's SESSION_ID)."
    )
    first_pair: bool = Field(
        default=True,
        description="Answer the first pair too (`next`), so an arrival is one request. False "
        "for a client that shows it later: then `GET next` gives it (and marks it shown).",
    )


class JoinOut(BaseModel):
    evaluator_token: str = Field(
        description="Send as `Authorization: Bearer <token>` (browsers get the same in a cookie)."
    )
    resumed: bool = Field(description="True when this participant had joined before.")
    study: StudyOut
    progress: Progress
    next: NextOut | None = Field(
        default=None,
        description="What `GET next` would answer now, in the same request: the current pair "
        "(marked shown) with the one after it (`after`, assigned ahead), or `done` / `waiting` "
        "/ `unavailable`. Null with `first_pair: false`.",
    )


class ClientTiming(BaseModel):
    """Measured on the client's monotonic clock (e.g. `performance.now()`), in seconds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    load_seconds: float = Field(
        ge=0,
        le=86_400,
        description="From receiving the pair as the current one to both clips on screen.",
    )
    view_seconds: float = Field(
        ge=0, le=86_400, description="From both clips on screen to the answer given."
    )


class WatchIn(BaseModel):
    """What the page saw of the pair before the answer, on its monotonic clock, in seconds.

    A clip counts as watched while at least half of it is on screen (IntersectionObserver)
    and the tab is visible (`document.visibilityState`), from both clips revealed to the
    answer. The server turns each side's time into whole-loop equivalents with the clip's own
    loop duration (a GIF in an `<img>` cannot report its loops), so the page needs no clip's
    duration."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    left_seconds: float = Field(
        ge=0, le=86_400, description="Time the left clip was on screen, the tab visible."
    )
    right_seconds: float = Field(
        ge=0, le=86_400, description="Time the right clip was on screen, the tab visible."
    )
    hidden_seconds: float = Field(
        ge=0,
        le=86_400,
        description="Time the tab was hidden, from receiving the pair as the current one to "
        "the answer.",
    )


class VotesIn(BaseModel):
    """One answer per criterion of the study: all of them, nothing else."""

    model_config = ConfigDict(extra="forbid")

    votes: dict[str, Choice] = Field(
        description="criterion key -> left | right | tie (relative to the sides shown)",
        examples=[{"overall_quality": "left", "motion_naturalness": "tie"}],
    )
    timing: ClientTiming | None = Field(
        default=None,
        description="The client's own measurement of this trial. Without it, response times "
        "are the server's (which include network and queueing).",
    )
    watch: WatchIn | None = Field(
        default=None,
        description="What the client saw of this trial: stored as loops per side, "
        "whether both clips played a whole loop, and the hidden time; judged by the study's "
        "`min_loops`. Without it they are stored as unknown.",
    )


class VotesOut(BaseModel):
    """The stored answer. Submitting the same votes again returns the same `trial_id`,
    `votes` and `answered_at` (nothing is stored twice); different votes get 409."""

    trial_id: int
    votes: dict[str, Choice]
    answered_at: datetime
    next: NextOut


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    detail: ErrorDetail

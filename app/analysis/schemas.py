"""Typed inputs and results of the statistics.

Plain frozen dataclasses: no validation cost, no database types, trivially rendered by a dashboard
(FastAPI serialises dataclasses), a CSV writer (`as_row()` gives a flat dict of scalars) or an
HTML report. Floats are plain Python floats; "not computable" is `None`, never NaN or inf, so the
JSON and CSV renderings need no special cases.

Orientation: every pairwise result is written from the point of view of `arm` against
`opponent`: `wins` are votes for `arm`, `losses` votes for `opponent`, `win_rate` is
wins / (wins + losses) (ties excluded: "the decisive win rate").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Choice = Literal["left", "right", "tie"]
CHOICES: tuple[str, ...] = ("left", "right", "tie")

# Label used for votes whose theme is None or empty.
NO_THEME = "(no theme)"


def _flat(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            for k, v in _flat(value).items():
                out[f"{f.name}_{k}"] = v
        elif isinstance(value, tuple | list):
            continue  # nested collections are not flat; render them separately
        else:
            out[f.name] = value
    return out


class _Row:
    """Mixin: `as_row()` flattens a result into a dict of scalars (one CSV row)."""

    __slots__ = ()
    # Declared, not set: every subclass is a dataclass, which is what asdict() asks for.
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def as_row(self) -> dict[str, Any]:
        return _flat(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True, slots=True)
class VoteRecord:
    """One vote as the analysis sees it (one criterion's answer within one trial).

    `choice` is the side the evaluator clicked; the analysis maps it to the arm it stands for.
    `is_repeat` marks a quality-control re-showing of a matchup the evaluator already rated:
    repeats feed the consistency figures and are left out of the preference statistics.
    `matchup_id` identifies the pair of clips (the "unit" of inter-rater agreement); when None,
    (prompt_id, unordered arm pair) is used, which is the same thing in this design.
    """

    prompt_id: Any
    theme: str | None
    evaluator: Any
    criterion: str
    left_arm: str
    right_arm: str
    choice: Choice
    flagged: bool = False
    trial_id: Any = None
    is_repeat: bool = False
    matchup_id: Any = None


@dataclass(frozen=True, slots=True)
class ClipTelemetry:
    """Render cost of one clip (None where the telemetry lacks the figure)."""

    arm: str
    total_seconds: float | None = None
    denoise_seconds: float | None = None
    denoiser_passes: float | None = None
    peak_memory_bytes: float | None = None


# -------------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class NonInferiorityResult(_Row):
    """One-sided exact test that `arm` is no worse than `opponent` by more than `margin`.

    Scale: p = P(arm wins | a decisive vote). H0: p <= 0.5 - margin against H1: p > 0.5 - margin.
    `p_value` = P(X >= wins | n = wins + losses, p = 0.5 - margin) (exact binomial, one-sided).
    `lower_bound` is the matching one-sided (1 - alpha) Clopper-Pearson lower confidence bound for
    p; `non_inferior` is `p_value <= alpha`, which is the same decision as
    `lower_bound > 0.5 - margin` (the bound inverts the test).
    """

    margin: float
    alpha: float
    null_rate: float
    p_value: float | None
    lower_bound: float | None
    non_inferior: bool


@dataclass(frozen=True, slots=True)
class PairwiseResult(_Row):
    """Preference of `arm` over `opponent` on one criterion (and one theme, or all when None)."""

    criterion: str
    theme: str | None
    arm: str
    opponent: str
    wins: int
    ties: int
    losses: int
    n_votes: int
    n_decisive: int
    win_rate: float | None  # wins / (wins + losses); None without decisive votes
    ci_low: float | None  # Wilson score interval at `confidence`
    ci_high: float | None
    confidence: float
    p_value: float | None  # two-sided exact binomial (sign) test of win_rate == 0.5
    p_holm: float | None  # Holm-adjusted across the family described in `pairwise_summary`
    tie_rate: float | None  # ties / n_votes
    non_inferiority: NonInferiorityResult | None = None


@dataclass(frozen=True, slots=True)
class PositionBiasResult(_Row):
    """Share of decisive votes that went to the LEFT clip, whatever arm it showed.

    With sides randomised this is 0.5 in expectation; a departure means evaluators favour a side
    (it adds noise to, but does not bias, the arm comparison when sides are counterbalanced).
    Reported per criterion only: the votes of one trial share their sides, so a count pooled over
    criteria would not be binomial.
    """

    criterion: str
    left: int
    right: int
    ties: int
    n_decisive: int
    left_rate: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None  # two-sided exact binomial test of left_rate == 0.5


@dataclass(frozen=True, slots=True)
class ArmPreference(_Row):
    """One arm's record against all other arms pooled, on one criterion."""

    criterion: str
    arm: str
    wins: int
    ties: int
    losses: int
    n_decisive: int
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True, slots=True)
class PowerResult(_Row):
    """Decisive votes needed for `target_power` at the effect observed so far.

    Test: two-sided exact binomial test of p = 0.5 at level `alpha`; `method` says whether the
    sample size comes from the exact binomial power function ("exact": the smallest n from which
    the exact power stays >= target) or the arcsine normal approximation ("normal", used for very
    small effects where n is huge). `needed_decisive` is None when the observed effect is 0 (or
    there are no decisive votes): no finite sample size detects a null effect.
    """

    criterion: str
    arm: str
    opponent: str
    n_decisive: int
    observed_rate: float | None
    effect: float | None  # observed_rate - 0.5
    alpha: float
    target_power: float
    needed_decisive: int | None
    additional_decisive: int | None
    additional_votes: int | None  # additional_decisive inflated by the observed tie rate
    method: Literal["exact", "normal"] | None


@dataclass(frozen=True, slots=True)
class PairwiseSummary(_Row):
    """The cheap statistics (counts only; no resampling): what a dashboard refresh needs."""

    arms: tuple[str, ...]
    criteria: tuple[str, ...]
    themes: tuple[str, ...]
    n_votes: int
    alpha: float
    overall: tuple[PairwiseResult, ...]  # one per (pair, criterion)
    by_theme: tuple[PairwiseResult, ...]  # one per (pair, theme, criterion)
    position_bias: tuple[PositionBiasResult, ...]  # one per criterion
    arm_preference: tuple[ArmPreference, ...]  # one per (criterion, arm)
    power: tuple[PowerResult, ...]  # one per (pair, criterion)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ArmStrength(_Row):
    arm: str
    strength: float  # log-strength theta (centred: the arms' strengths sum to 0)
    ci_low: float | None  # percentile interval of the prompt-cluster bootstrap
    ci_high: float | None
    p_best: float | None  # share of bootstrap replicates in which this arm ranks first
    rank: int  # 1 + arms with a stronger point estimate (equal strengths share a rank)


@dataclass(frozen=True, slots=True)
class BradleyTerryResult(_Row):
    """Davidson (1970) Bradley-Terry model with ties, fitted to one criterion's votes.

    P(i beats j) = pi_i / D, P(tie) = nu * sqrt(pi_i * pi_j) / D,
    D = pi_i + pi_j + nu * sqrt(pi_i * pi_j), pi_i = exp(strength_i).
    `tie_parameter` is nu (0 when no tie was observed, None when every vote was a tie).
    Among decisive votes the model is plain Bradley-Terry: P(i beats j | decisive) =
    1 / (1 + exp(strength_j - strength_i)).
    """

    criterion: str
    model: Literal["davidson"]
    strengths: tuple[ArmStrength, ...]
    tie_parameter: float | None
    ridge: float
    n_votes: int
    n_prompts: int
    n_boot: int
    confidence: float
    seed: int | None
    converged: bool
    iterations: int


@dataclass(frozen=True, slots=True)
class BootstrapWinRate(_Row):
    """Prompt-cluster bootstrap interval of a decisive win rate (robust to prompt clustering)."""

    criterion: str
    arm: str
    opponent: str
    win_rate: float | None
    ci_low: float | None
    ci_high: float | None
    n_prompts: int
    n_boot: int


@dataclass(frozen=True, slots=True)
class BootstrapSummary(_Row):
    """The expensive statistics (resampling by prompt): compute in the background and cache."""

    bradley_terry: tuple[BradleyTerryResult, ...]  # one per criterion
    win_rates: tuple[BootstrapWinRate, ...]  # one per (pair, criterion)
    n_boot: int
    seed: int | None


@dataclass(frozen=True, slots=True)
class AgreementResult(_Row):
    """Inter-rater agreement on one criterion.

    Krippendorff's alpha: units = matchups, coders = evaluators, values = the ARM-relative outcome
    (one arm wins / tie / the other arm wins), so that two evaluators who saw the clips on
    opposite sides but preferred the same arm agree; each matchup is coded both ways round, so
    the order of arms does not matter (see `agreement.py`). Only first showings count (repeats
    are excluded); only matchups rated by at least two evaluators carry information.
    `repeat_consistency`: share of (evaluator, matchup) repeats whose arm-relative answer equals
    the first answer (test-retest agreement), pooled over evaluators. Everything is computed
    from the votes the filters keep (a repeat pair needs both of its votes kept).
    """

    criterion: str
    level: Literal["nominal", "ordinal", "interval"]
    alpha: float | None
    n_units: int  # matchups rated by >= 2 evaluators
    n_pairable: int  # values in those units
    n_coders: int
    observed_disagreement: float | None
    expected_disagreement: float | None
    repeat_consistency: float | None
    n_repeat_comparisons: int  # repeat answers compared with their first showing


@dataclass(frozen=True, slots=True)
class EvaluatorQuality(_Row):
    evaluator: str
    n_trials: int
    n_votes: int
    n_flagged_trials: int
    flagged_share: float | None
    n_repeat_comparisons: int  # (matchup, criterion) answers given twice
    consistency: float | None  # share of those with the same arm-relative answer
    left_rate: float | None  # share of decisive votes for the left clip (side bias)
    tie_rate: float | None


@dataclass(frozen=True, slots=True)
class ArmSpeed(_Row):
    """Median render cost of one arm's clips (None where no clip reported the figure)."""

    arm: str
    n_clips: int
    median_total_seconds: float | None
    median_denoise_seconds: float | None
    median_denoiser_passes: float | None
    median_peak_memory_bytes: float | None


@dataclass(frozen=True, slots=True)
class SpeedPreference(_Row):
    """One arm's render cost beside its pooled win rate: "does faster cost fidelity?"."""

    arm: str
    criterion: str
    speed: ArmSpeed
    preference: ArmPreference


@dataclass(frozen=True, slots=True)
class SequentialNote:
    """Why peeking is dangerous and what to do instead (rendered verbatim by the dashboard)."""

    warning: str
    alpha_spending: tuple[tuple[float, float], ...] = field(default=())  # (fraction, cum. alpha)


VerdictStatus = Literal["superior", "inferior", "non_inferior", "undecided"]


@dataclass(frozen=True, slots=True)
class Verdict(_Row):
    """A hypothesis of the study's plan and what its confidence sequence says now
    (`app.analysis.sequential`): valid at every look, so it may be read after every vote.

    `lower`, `upper`: the anytime-valid interval for `arm`'s decisive win rate against
    `opponent` on `criterion` (fractions 0..1; ties excluded from the rate), the running
    intersection so far. `status`: superiority: `superior` when lower > 0.5, `inferior` when
    upper < 0.5; non-inferiority at `margin` m: `non_inferior` when lower > 0.5 - m,
    `inferior` when upper < 0.5 - m; else `undecided`. `votes`: the first-showing votes on this
    criterion and pair of the evaluators counted so far (ties included). `alpha`: the level this
    hypothesis was tested at, the plan's alpha split equally over its hypotheses, so that all of
    them hold together with probability at least 1 - the plan's alpha.
    """

    criterion: str
    arm: str
    opponent: str
    hypothesis: Literal["superiority", "non_inferiority"]
    margin: float
    status: VerdictStatus
    lower: float
    upper: float
    votes: int
    alpha: float


@dataclass(frozen=True, slots=True)
class VerdictSummary(_Row):
    """The plan's verdicts with what they are computed from: `evaluators` counted (each a unit,
    entered when they finished) and their `votes` (all criteria and pairs); `alpha` is the
    plan's family-wise alpha."""

    verdicts: tuple[Verdict, ...]
    alpha: float
    evaluators: int
    votes: int

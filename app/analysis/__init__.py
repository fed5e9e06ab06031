"""Statistics of a blind pairwise study: pure functions of plain vote records (no web, no SQL).

Cheap (a dashboard refresh): build a `VoteTable` once (or `VoteCounts.from_grouped` straight from
SQL `GROUP BY` rows), take `table.counts(...)` and call `pairwise_summary` (win rates, Wilson
intervals, sign tests, Holm, per theme, position bias, power, non-inferiority) and
`bradley_terry` (point strengths). Expensive (background, cached): `bootstrap_summary` (prompt
cluster bootstrap for Bradley-Terry strengths and win rates), `agreement`, `evaluator_quality`.
Render cost: `speed_summary` and `speed_vs_preference`.
Anytime-valid verdicts of the study's plan (`plan.Plan`): `verdicts` (confidence sequences over
evaluators as they finish; `Monitor` keeps them current unit by unit).
"""

from app.analysis.agreement import (
    agreement,
    alpha_from_unit_counts,
    evaluator_quality,
    krippendorff_alpha,
    mirrored_alpha,
)
from app.analysis.bradley_terry import (
    DEFAULT_RIDGE,
    bootstrap_summary,
    bradley_terry,
    fit_davidson,
    prompt_counts,
)
from app.analysis.counts import VoteCounts, VoteTable, arm_pairs
from app.analysis.pairwise import (
    INDEPENDENCE_NOTE,
    arm_preference,
    binomial_test,
    clopper_pearson_lower,
    holm,
    non_inferiority,
    pairwise_summary,
    summarize,
    wilson_interval,
)
from app.analysis.power import (
    PEEKING_WARNING,
    alpha_spending,
    exact_power,
    normal_power,
    power_result,
    required_decisive_votes,
    sequential_note,
)
from app.analysis.schemas import (
    CHOICES,
    NO_THEME,
    AgreementResult,
    ArmPreference,
    ArmSpeed,
    ArmStrength,
    BootstrapSummary,
    BootstrapWinRate,
    BradleyTerryResult,
    ClipTelemetry,
    EvaluatorQuality,
    NonInferiorityResult,
    PairwiseResult,
    PairwiseSummary,
    PositionBiasResult,
    PowerResult,
    SequentialNote,
    SpeedPreference,
    Verdict,
    VerdictSummary,
    VoteRecord,
)
from app.analysis.sequential import (
    METHOD_NOTE,
    HedgedSequence,
    Monitor,
    UnitCounts,
    confidence_sequence,
    default_plan,
    hypothesis_alpha,
    verdicts,
)
from app.analysis.speed import speed_summary, speed_vs_preference

__all__ = [
    "CHOICES",
    "DEFAULT_RIDGE",
    "INDEPENDENCE_NOTE",
    "METHOD_NOTE",
    "NO_THEME",
    "PEEKING_WARNING",
    "AgreementResult",
    "ArmPreference",
    "ArmSpeed",
    "ArmStrength",
    "BootstrapSummary",
    "BootstrapWinRate",
    "BradleyTerryResult",
    "ClipTelemetry",
    "EvaluatorQuality",
    "HedgedSequence",
    "Monitor",
    "NonInferiorityResult",
    "PairwiseResult",
    "PairwiseSummary",
    "PositionBiasResult",
    "PowerResult",
    "SequentialNote",
    "SpeedPreference",
    "UnitCounts",
    "Verdict",
    "VerdictSummary",
    "VoteCounts",
    "VoteRecord",
    "VoteTable",
    "agreement",
    "alpha_from_unit_counts",
    "alpha_spending",
    "arm_pairs",
    "arm_preference",
    "binomial_test",
    "bootstrap_summary",
    "bradley_terry",
    "clopper_pearson_lower",
    "confidence_sequence",
    "default_plan",
    "evaluator_quality",
    "exact_power",
    "fit_davidson",
    "holm",
    "hypothesis_alpha",
    "krippendorff_alpha",
    "mirrored_alpha",
    "non_inferiority",
    "normal_power",
    "pairwise_summary",
    "power_result",
    "prompt_counts",
    "required_decisive_votes",
    "sequential_note",
    "speed_summary",
    "speed_vs_preference",
    "summarize",
    "verdicts",
    "wilson_interval",
]

"""Does holding motion equal recover the true preference when the arms differ in motion?

Simulated studies with a known truth, analysed by the project's own code
(`app.analysis.confounds.adjusted_effects` and `measure_slopes`). Each study: two arms, the
focus arm `fast` moving less than `full` (its clips' `motion_mean` lower by `motion_gap` on
average), `prompts` fixed prompts (one matchup each), `evaluators` each judging `trials`
distinct prompts with random sides, two criteria:

* `appearance`: raters prefer the clip that moves less (`gamma` per unit of motion difference)
  and, with motion equal, the focus arm by `beta` (log-odds; negative: the focus arm is worse);
* `motion_amplitude`: raters prefer the clip that moves more, no arm effect.

Every answer is drawn from a logistic model whose population-averaged form is exactly

    logit P(focus wins) = beta + side_bias * side + gamma * (motion of focus clip - opponent's)

(side = +1 when the focus arm is on the left), so expit(beta) is the true effect the adjusted
model estimates, however heterogeneous prompts and evaluators are. Heterogeneity: each prompt
and each evaluator adds a random liking of the focus arm to the log-odds, drawn from Wang and
Louis's bridge distribution (Biometrika 2003), the one distribution whose random intercepts
keep the averaged model logistic: with conditional coefficients divided by phi, the marginal
ones are exactly beta and gamma. A share `tie_rate` of answers are ties, at random.

Beside the motion the clips carry `motion_std` (0.6 * motion + noise) and `sharpness` (pure
noise): the adjusted model holds `motion_mean` and `motion_std` equal, as the dashboard does.

    .venv/bin/python benchmarks/confounds.py [--studies 1000] [--seed 0]

Two to three minutes for 1,000 studies of each of the five scenarios on 2 shared cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.analysis.confounds import ClipTable, MeasuredVotes, adjusted_effects, measure_slopes

ARMS = ("fast", "full")
CRITERIA = ("appearance", "motion_amplitude")
MOTION = ("motion_mean", "motion_std")


@dataclass(frozen=True)
class Scenario:
    name: str = "confounded"
    prompts: int = 40
    evaluators: int = 100
    trials: int = 10  # distinct prompts each evaluator judges
    motion_gap: float = 1.0  # mean motion of `full` minus `fast`, in prompt-motion sd
    beta: float = -0.3  # true log-odds of the focus arm at equal motion (appearance)
    gamma: float = -1.0  # log-odds per unit of motion difference (appearance)
    gamma_motion: float = 1.5  # the same on motion_amplitude
    side_bias: float = 0.1
    prompt_phi: float = 0.8  # bridge parameter of the prompt effects (1: none; 0.8: sd 1.36)
    evaluator_phi: float = 1.0  # the same for evaluators (1: no evaluator effects)
    tie_rate: float = 0.2
    measurement_sd: float = 0.0  # noise on the measured motion (the votes follow the true one)

    @property
    def true_effect(self) -> float:
        """The focus arm's decisive win probability on `appearance` at equal motion."""
        return 1 / (1 + math.exp(-self.beta))


SCENARIOS = (
    Scenario(),
    Scenario(name="evaluator effects too", evaluator_phi=0.85),
    Scenario(name="few prompts (16)", prompts=16, evaluators=60, trials=8),
    Scenario(name="no motion gap (no confound)", motion_gap=0.0),
    Scenario(name="motion measured with noise (sd 0.5)", measurement_sd=0.5),
)


def _bridge(rng: np.random.Generator, phi: float, n: int) -> np.ndarray:
    """Random intercepts that keep a logistic model logistic once averaged over them."""
    if phi >= 1:
        return np.zeros(n)
    u = rng.random(n)
    return np.log(np.sin(phi * np.pi * u) / np.sin(phi * np.pi * (1 - u))) / phi


def simulate(s: Scenario, rng: np.random.Generator) -> MeasuredVotes:
    """One study's votes with its clips' measures."""
    g = s.prompts
    base = rng.normal(size=g)
    shift = {"fast": -s.motion_gap / 2, "full": s.motion_gap / 2}
    # clip i = prompt * 2 + arm index
    motion = np.empty(2 * g)
    for a, arm in enumerate(ARMS):
        motion[a::2] = base + shift[arm] + rng.normal(scale=0.5, size=g)
    measured = motion + rng.normal(scale=s.measurement_sd, size=2 * g)
    clips = ClipTable(
        arm=np.array(ARMS * g, dtype=object),
        values={
            "motion_mean": measured,
            "motion_std": 0.6 * measured + rng.normal(scale=0.4, size=2 * g),
            "sharpness": rng.normal(size=2 * g),
        },
    )
    # trials: each evaluator judges `trials` distinct prompts, sides at random
    prompt = np.concatenate(
        [rng.choice(g, size=min(s.trials, g), replace=False) for _ in range(s.evaluators)]
    )
    evaluator = np.repeat(np.arange(s.evaluators), min(s.trials, g))
    n = len(prompt)
    focus_left = rng.random(n) < 0.5
    side = np.where(focus_left, 1.0, -1.0)
    diff = motion[2 * prompt] - motion[2 * prompt + 1]  # focus (fast) minus full
    left_clip = np.where(focus_left, 2 * prompt, 2 * prompt + 1)
    right_clip = np.where(focus_left, 2 * prompt + 1, 2 * prompt)
    scale = s.prompt_phi * s.evaluator_phi
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("crit", "p", "l", "r", "choice")}
    for criterion in CRITERIA:
        beta, gamma = (s.beta, s.gamma) if criterion == "appearance" else (0.0, s.gamma_motion)
        eta = beta + s.side_bias * side + gamma * diff
        b_prompt = _bridge(rng, s.prompt_phi, g)[prompt]
        b_eval = _bridge(rng, s.evaluator_phi, s.evaluators)[evaluator]
        logit = eta / scale + b_prompt + b_eval / s.prompt_phi
        focus_wins = rng.random(n) < 1 / (1 + np.exp(-logit))
        choice = np.where(focus_wins == focus_left, 0, 1)
        choice = np.where(rng.random(n) < s.tie_rate, 2, choice)
        columns["crit"].append(np.full(n, criterion, dtype=object))
        columns["p"].append(prompt)
        columns["l"].append(left_clip)
        columns["r"].append(right_clip)
        columns["choice"].append(choice)
    cat = {k: np.concatenate(v) for k, v in columns.items()}
    return MeasuredVotes.build(
        clips,
        criterion=cat["crit"],
        prompt=cat["p"],
        left_clip=cat["l"],
        right_clip=cat["r"],
        choice=cat["choice"],
    )


@dataclass(frozen=True)
class Outcome:
    """One study's appearance effects and motion-amplitude slope."""

    adjusted: float | None
    lower: float | None
    upper: float | None
    unadjusted: float | None
    unadjusted_lower: float | None
    unadjusted_upper: float | None
    cr1_covers: bool  # the plain cluster sandwich's interval (same t quantile) covers beta
    slope_lower: float | None


def analyse(votes: MeasuredVotes, s: Scenario, *, slopes: bool = True) -> Outcome:
    effects, _ = adjusted_effects(votes, criteria=("appearance",), pairs=[ARMS], covariates=MOTION)
    e = effects[0]
    cr1 = False
    if e.log_odds is not None and e.se_cr1 is not None:
        q = float(stats.t.ppf(0.975, df=e.n_prompts - 1))
        cr1 = abs(e.log_odds - s.beta) <= q * e.se_cr1
    lower = None
    if slopes:
        rows, _ = measure_slopes(votes, criteria=("motion_amplitude",))
        lower = next(r for r in rows if r.measure == "motion_mean").lower
    return Outcome(
        e.effect, e.lower, e.upper, e.unadjusted_effect, e.unadjusted_lower,
        e.unadjusted_upper, cr1, lower,
    )  # fmt: skip


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    a = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return low, high


def _rate(k: int, n: int) -> str:
    low, high = clopper_pearson(k, n)
    return f"{k / max(n, 1):.3f} ({low:.3f}\N{EN DASH}{high:.3f})"


@dataclass(frozen=True)
class Report:
    scenario: Scenario
    studies: int
    fitted: int
    adjusted_mean: float
    unadjusted_mean: float
    adjusted_covers: int
    cr1_covers: int
    unadjusted_covers: int
    slope_positive: int
    seconds: float

    @property
    def coverage(self) -> float:
        return self.adjusted_covers / max(self.fitted, 1)

    @property
    def unadjusted_coverage(self) -> float:
        return self.unadjusted_covers / max(self.fitted, 1)

    def line(self) -> str:
        n = self.fitted
        cells = [
            self.scenario.name,
            f"{self.scenario.true_effect:.3f}",
            f"{self.adjusted_mean:.3f}",
            f"{self.unadjusted_mean:.3f}",
            _rate(self.adjusted_covers, n),
            _rate(self.cr1_covers, n),
            _rate(self.unadjusted_covers, n),
            f"{self.slope_positive} of {n}",
            f"{n} of {self.studies}",
        ]
        return "| " + " | ".join(cells) + " |"


def run(s: Scenario, *, studies: int, seed: int, slopes: bool = True) -> Report:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    outcomes = [analyse(simulate(s, rng), s, slopes=slopes) for _ in range(studies)]
    ok = [o for o in outcomes if o.adjusted is not None and o.unadjusted is not None]
    truth = s.true_effect

    def covers(low: float | None, high: float | None) -> bool:
        return low is not None and high is not None and low <= truth <= high

    return Report(
        scenario=s,
        studies=studies,
        fitted=len(ok),
        adjusted_mean=float(np.mean([o.adjusted for o in ok])) if ok else math.nan,
        unadjusted_mean=float(np.mean([o.unadjusted for o in ok])) if ok else math.nan,
        adjusted_covers=sum(covers(o.lower, o.upper) for o in ok),
        cr1_covers=sum(o.cr1_covers for o in ok),
        unadjusted_covers=sum(covers(o.unadjusted_lower, o.unadjusted_upper) for o in ok),
        slope_positive=sum(o.slope_lower is not None and o.slope_lower > 0 for o in ok),
        seconds=time.perf_counter() - started,
    )


HEADER = (
    "| scenario | true effect | adjusted (mean) | unadjusted (mean) | adjusted 95% interval "
    "covers the truth | the same with the plain cluster sandwich | unadjusted interval covers "
    "it | motion-amplitude slope > 0 | fitted |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def cost(votes: int) -> None:
    """The panel's cost in the dashboard: the example study (2 arms, 100 prompts, 6 criteria)
    seeded with `votes` votes in a fresh SQLite database (benchmarks/analytics.py), every clip
    given five measures; times `confound_view` (read the measures and the decisive votes with
    their clips, every fit) and the whole robustness panel it is part of."""
    import random
    import shutil
    import tempfile

    from app.clips.models import Clip, ClipMeasure
    from app.dashboard import service
    from app.dashboard.confounds import confound_view
    from app.dashboard.schemas import Filters
    from app.db import make_engine, session_factory, utcnow
    from app.studies.models import Arm, Study
    from benchmarks.analytics import seed_study, seed_votes
    from tests.kit.db import fresh_database

    folder = Path(tempfile.mkdtemp(prefix="vidarena-confounds-"))
    try:
        with fresh_database("sqlite", folder, name="bench") as url:
            engine = make_engine(url)
            study_id, matchups, _ = seed_study(engine)
            n = seed_votes(engine, votes=votes, study_id=study_id, matchups=matchups)
            rng = random.Random(0)
            with session_factory(engine)() as session:
                clips = session.execute(
                    Clip.__table__.select()
                    .with_only_columns(Clip.id)
                    .join(Arm, Arm.id == Clip.arm_id)
                    .where(Arm.study_id == study_id)
                ).scalars()
                now = utcnow()
                for clip_id in clips:
                    for name in ("motion_mean", "motion_std", "flicker", "sharpness",
                                 "colourfulness"):  # fmt: skip
                        session.add(ClipMeasure(clip_id=clip_id, name=name,
                                                value=rng.gauss(0, 1), version="1",
                                                measured_at=now))  # fmt: skip
                session.commit()
            with session_factory(engine, read_only=True)() as session:
                study = session.get(Study, study_id)
                assert study is not None
                arms = [a.name for a in study.arms]
                pairs = [(arms[0], a) for a in arms[1:]]
                started = time.perf_counter()
                confound_view(session=session, study=study, pairs=pairs)
                first = time.perf_counter() - started  # statsmodels' import included
                started = time.perf_counter()
                summary = confound_view(session=session, study=study, pairs=pairs)
                alone = time.perf_counter() - started
                started = time.perf_counter()
                panel = service.advanced(
                    session=session, study=study, filters=Filters(),
                    cache=service.DashboardCache(), fresh=True,
                )  # fmt: skip
                whole = time.perf_counter() - started
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    fits = len(summary.slopes) + 2 * len(summary.adjusted)
    print(f"{n:,} votes, {len(summary.measures)} measures, {fits} fits "
          f"({len(summary.notes)} not made)")  # fmt: skip
    print(f"| clip measures beside the votes (confound_view) | {alone:.2f} s |")
    print(f"| the same, first in a process (statsmodels' import included) | {first:.2f} s |")
    print(f"| whole robustness panel, measures included | {whole:.1f} s "
          f"({panel.n_votes:,} votes) |")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", type=int, help="run only this scenario (0-based)")
    parser.add_argument("--measurement-sd", type=float, default=None)
    parser.add_argument(
        "--cost",
        type=int,
        metavar="VOTES",
        help="time the dashboard panel on a seeded study of VOTES votes instead",
    )
    args = parser.parse_args(argv)
    if args.cost:
        cost(args.cost)
        return
    chosen = SCENARIOS if args.scenario is None else (SCENARIOS[args.scenario],)
    if args.measurement_sd is not None:
        chosen = tuple(
            replace(s, name=f"{s.name}, measured with noise sd {args.measurement_sd:g}",
                    measurement_sd=args.measurement_sd)
            for s in chosen
        )  # fmt: skip
    print(f"{args.studies} studies per scenario, seed {args.seed}\n")
    print(HEADER)
    for s in chosen:
        report = run(s, studies=args.studies, seed=args.seed)
        print(report.line(), f"<!-- {report.seconds:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()

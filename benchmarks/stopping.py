"""Do the verdicts keep their error rate when the dashboard is read after every vote?

Simulated studies with a known truth, analysed by the project's own code
(`app.analysis.sequential.verdicts` on a `VoteTable`, evaluators entering as they finish), beside
what a reader of today's fixed-sample table would conclude by peeking: the two-sided exact sign
test per criterion, Holm-adjusted across the criteria of each arm pair as the dashboard shows it,
checked after every answered trial, "declared" at the first look with an adjusted p < alpha.

Each study: `prompts` fixed prompts, every arm pair of each prompt a matchup; evaluators arrive
`concurrent` at a time, interleave their trials and finish after `quota` trials each (the order
in which they finish is the order their votes enter the verdicts); each trial gets the least
rated matchup the evaluator has not judged (another prompt than their previous one first, then
at random) and sides alternate per matchup, as the rating service assigns them. An answer is the
sign of a latent preference for the pair's first arm:

    u = effect[criterion] (first arm minus second) + prompt effect + evaluator's liking of the
        focus arm + evaluator's side bias (+ on the left) + noise (correlated across criteria)

a win when u > tie_band, a loss when u < -tie_band, a tie between. Prompt effects come in
mirrored pairs (+d, -d) and evaluator effects are symmetric, so with zero effects the decisive
win rate over the prompt set is exactly 1/2 on every criterion and pair, however heterogeneous
prompts and evaluators are. Careless evaluators answer left / right / tie at random. `flip`
turns that share of the focus arm's wins into losses, which puts the true rate at exactly
(1 - flip) / 2 (the null of a non-inferiority test at margin flip / 2).

    .venv/bin/python benchmarks/stopping.py [--studies 2000] [--seed 0] [--effect-studies 200]

About a minute for 2,000 studies of each scenario on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.analysis import VoteTable, allocation
from app.analysis.pairwise import _sign_test
from app.analysis.plan import Hypothesis, Plan
from app.analysis.power import required_decisive_votes
from app.analysis.sequential import HedgedSequence, Monitor, UnitCounts, hypothesis_alpha, verdicts

CHOICES = np.array(["left", "right", "tie"], dtype=object)


@dataclass(frozen=True)
class Scenario:
    name: str = "null"
    arms: int = 2
    criteria: int = 3
    prompts: int = 16
    evaluators: int = 60
    quota: int = 8
    concurrent: int = 8
    effect: tuple[float, ...] = ()  # per criterion: the focus arm's latent advantage (0: none)
    flip: float = 0.0
    prompt_sd: float = 0.7
    evaluator_sd: float = 0.5
    side_sd: float = 0.3
    careless: float = 0.15
    tie_band: float = 0.4
    criterion_corr: float = 0.6
    hypothesis: str = "superiority"
    margin: float = 0.0
    alpha: float = 0.05

    @property
    def criterion_names(self) -> tuple[str, ...]:
        return tuple(f"c{i}" for i in range(self.criteria))

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(f"arm{i}" for i in range(self.arms))

    def plan(self) -> Plan:
        focus, *others = self.arm_names
        kind = "non_inferiority" if self.hypothesis == "non_inferiority" else "superiority"
        hypotheses = tuple(
            Hypothesis(c, focus, other, kind, self.margin, True)
            for c in self.criterion_names
            for other in others
        )
        return Plan(self.alpha, hypotheses, "never", None, False)


@dataclass(frozen=True)
class Study:
    """One simulated study: a row per vote, in the order answered, and the finishing order."""

    evaluator: np.ndarray
    prompt: np.ndarray
    criterion: np.ndarray
    left: np.ndarray  # arm index on the left
    right: np.ndarray
    choice: np.ndarray  # 0 left, 1 right, 2 tie
    trial: np.ndarray  # index of the answered trial (votes of one trial share it)
    finished: list[int]  # evaluators in the order they finished


def simulate(s: Scenario, rng: np.random.Generator) -> Study:
    pairs = list(combinations(range(s.arms), 2))
    matchups = [(p, i, j) for p in range(s.prompts) for i, j in pairs]
    m = len(matchups)
    half = rng.normal(0, s.prompt_sd, (s.prompts + 1) // 2)
    prompt_effect = np.concatenate([half, -half])[: s.prompts]  # mirrored: exact null
    if s.prompts % 2:
        prompt_effect[-1] = 0.0
    effect = np.asarray(s.effect or (0.0,) * s.criteria, dtype=float)
    coverage = np.zeros(m, dtype=np.int64)
    a_left = np.zeros(m, dtype=np.int64)
    quota = min(s.quota, m)
    active: list[int] = []
    state: dict[int, tuple[set[int], int, int]] = {}  # evaluator -> (judged, done, last prompt)
    liking = rng.normal(0, s.evaluator_sd, s.evaluators)
    side = rng.normal(0, s.side_sd, s.evaluators)
    careless = rng.random(s.evaluators) < s.careless
    joined = 0
    rows: list[tuple[int, int, int, int, int]] = []  # evaluator, matchup, first on left, ...
    finished: list[int] = []
    while joined < s.evaluators or active:
        while len(active) < s.concurrent and joined < s.evaluators:
            active.append(joined)
            state[joined] = (set(), 0, -1)
            joined += 1
        e = active[int(rng.integers(len(active)))]
        judged, done, last = state[e]
        free = np.array([k for k in range(m) if k not in judged])
        least = free[coverage[free] == coverage[free].min()]
        other = least[[matchups[k][0] != last for k in least]]
        pool = other if other.size else least
        k = int(pool[int(rng.integers(pool.size))])
        coverage[k] += 1
        first_left = coverage[k] - 1 - a_left[k] > a_left[k] or (
            coverage[k] - 1 - a_left[k] == a_left[k] and rng.random() < 0.5
        )
        a_left[k] += int(first_left)
        judged.add(k)
        rows.append((e, k, int(first_left), len(rows), 0))
        state[e] = (judged, done + 1, matchups[k][0])
        if done + 1 >= quota:
            active.remove(e)
            finished.append(e)
    n = len(rows)
    ev = np.array([r[0] for r in rows])
    mk = np.array([r[1] for r in rows])
    first_left = np.array([r[2] for r in rows], dtype=bool)
    prompt = np.array([matchups[k][0] for k in mk])
    first = np.array([matchups[k][1] for k in mk])
    second = np.array([matchups[k][2] for k in mk])
    c = s.criteria
    shared = rng.normal(size=(n, 1))
    noise = s.criterion_corr * shared + math.sqrt(1 - s.criterion_corr**2) * rng.normal(size=(n, c))
    focus_in = (first == 0) | (second == 0)
    u = (
        np.where(first == 0, 1.0, 0.0)[:, None] * effect[None, :]
        - np.where(second == 0, 1.0, 0.0)[:, None] * effect[None, :]
        + prompt_effect[prompt][:, None]
        + np.where(focus_in, np.where(first == 0, liking[ev], -liking[ev]), 0.0)[:, None]
        + np.where(first_left, side[ev], -side[ev])[:, None]
        + noise
    )
    outcome = np.where(u > s.tie_band, 0, np.where(u < -s.tie_band, 1, 2))  # first arm's view
    random_answer = rng.integers(0, 3, size=(n, c))
    # careless: a random side or tie, whatever the clips
    side_choice = np.where(outcome == 2, 2, np.where((outcome == 0) == first_left[:, None], 0, 1))
    side_choice = np.where(careless[ev][:, None], random_answer, side_choice)
    if s.flip:
        focus_left = np.where(first == 0, first_left, ~first_left)
        focus_won = focus_in[:, None] & (side_choice == np.where(focus_left, 0, 1)[:, None])
        turn = focus_won & (rng.random((n, c)) < s.flip)
        side_choice = np.where(turn, 1 - side_choice, side_choice)
    left_arm = np.where(first_left, first, second)
    right_arm = np.where(first_left, second, first)
    return Study(
        evaluator=np.repeat(ev, c),
        prompt=np.repeat(prompt, c),
        criterion=np.tile(np.arange(c), n),
        left=np.repeat(left_arm, c),
        right=np.repeat(right_arm, c),
        choice=side_choice.reshape(-1),
        trial=np.repeat(np.arange(n), c),
        finished=finished,
    )


def vote_table(s: Scenario, study: Study) -> VoteTable:
    arms = np.array(s.arm_names, dtype=object)
    crits = np.array(s.criterion_names, dtype=object)
    return VoteTable.from_columns(
        prompt_id=study.prompt,
        theme=np.full(study.prompt.shape[0], "", dtype=object),
        evaluator=study.evaluator,
        criterion=crits[study.criterion],
        left_arm=arms[study.left],
        right_arm=arms[study.right],
        choice=CHOICES[study.choice],
        trial_id=study.trial,
        arms=s.arm_names,
        criteria=s.criterion_names,
    )


def declared(s: Scenario, study: Study) -> bool:
    """Any verdict of the plan declared at any look (the bounds only narrow, so the last
    look's verdicts hold everything declared before)."""
    found = verdicts(vote_table(s, study), s.plan(), order=study.finished)
    return any(v.status != "undecided" for v in found)


def declared_by_votes(s: Scenario, study: Study) -> bool:
    """The same sequences with every vote a unit (evaluators ignored): what the dependence
    between one evaluator's votes does to a sequence that treats votes as independent."""
    alpha = hypothesis_alpha(s.plan())
    for c in range(s.criteria):
        for other in range(1, s.arms):
            rows = (study.criterion == c) & (
                ((study.left == 0) & (study.right == other))
                | ((study.left == other) & (study.right == 0))
            )
            focus_left = study.left[rows] == 0
            choice = study.choice[rows]
            seq = HedgedSequence(alpha=alpha)
            seq.extend(
                np.where(focus_left, choice == 0, choice == 1),
                np.where(focus_left, choice == 1, choice == 0),
                choice == 2,
            )
            lower, upper = seq.bounds()
            bound = 0.5 - s.margin
            if lower > bound or upper < bound:
                return True
    return False


def decided(s: Scenario, study: Study, *, criterion: str) -> str:
    found = verdicts(vote_table(s, study), s.plan(), order=study.finished)
    return next(v.status for v in found if v.criterion == criterion)


def peeking(s: Scenario, study: Study, *, alpha: float = 0.05) -> tuple[bool, bool]:
    """Today's fixed-sample reading: (declared at any look after a trial, declared at the
    last look only). Superiority: the two-sided exact sign test; non-inferiority: the
    one-sided exact binomial test against 1/2 - margin (`pairwise.non_inferiority`). Holm
    across the criteria of a pair rejects something exactly when the smallest p-value is below
    alpha / criteria."""
    any_look = last_look = False
    focus = 0
    for other in range(1, s.arms):
        rows = ((study.left == focus) & (study.right == other)) | (
            (study.left == other) & (study.right == focus)
        )
        focus_left = study.left[rows] == focus
        choice = study.choice[rows]
        won = np.where(focus_left, choice == 0, choice == 1)
        lost = np.where(focus_left, choice == 1, choice == 0)
        trial = study.trial[rows]
        crit = study.criterion[rows]
        looks = np.unique(trial)
        where = np.searchsorted(looks, trial)
        p_min = np.ones(looks.shape[0])
        for c in range(s.criteria):
            sel = crit == c
            w = np.zeros(looks.shape[0], dtype=np.int64)
            d = np.zeros(looks.shape[0], dtype=np.int64)
            np.add.at(w, where[sel], won[sel])
            np.add.at(d, where[sel], won[sel] | lost[sel])
            wins, dec = np.cumsum(w), np.cumsum(d)
            if s.hypothesis == "non_inferiority":
                p = stats.binom.sf(wins - 1, dec, 0.5 - s.margin)
                p = np.where(dec > 0, p, np.nan)
            else:
                p = _sign_test(wins, dec)
            p_min = np.minimum(p_min, np.where(np.isnan(p), 1.0, p))
        rejected = p_min < alpha / s.criteria
        any_look |= bool(rejected.any())
        last_look |= bool(rejected[-1]) if rejected.size else False
    return any_look, last_look


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    a = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return low, high


def type_one(
    s: Scenario, studies: int, seed: int, *, by_votes: bool = True
) -> dict[str, tuple[int, int]]:
    """Counts of studies (declared, simulated) for the verdicts, for the same sequences over
    votes (`by_votes`) and for peeking."""
    rng = np.random.default_rng(seed)
    verdict = votewise = peek_any = peek_last = 0
    for _ in range(studies):
        study = simulate(s, rng)
        verdict += declared(s, study)
        votewise += by_votes and declared_by_votes(s, study)
        any_look, last_look = peeking(s, study, alpha=s.alpha)
        peek_any += any_look
        peek_last += last_look
    counts = {
        "verdicts": (verdict, studies),
        "the same, every vote a unit (evaluators ignored)": (votewise, studies),
        "fixed-sample test, read after every trial": (peek_any, studies),
        "fixed-sample test, read once at the end": (peek_last, studies),
    }
    if not by_votes:
        del counts["the same, every vote a unit (evaluators ignored)"]
    return counts


SCENARIOS = (
    Scenario(name="null, 2 arms x 3 criteria, superiority"),
    Scenario(
        name="null at the margin, non-inferiority (margin 0.05)",
        flip=0.1,
        hypothesis="non_inferiority",
        margin=0.05,
    ),
    Scenario(name="null, 3 arms x 2 criteria (4 hypotheses)", arms=3, criteria=2, prompts=12),
    Scenario(
        name="null, strong prompt effects (sd 2.5), 32 prompts, 4 trials each, 20 at a time",
        prompt_sd=2.5,
        prompts=32,
        quota=4,
        evaluators=150,
        concurrent=20,
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", type=int, action="append", help="run only these (0-based)")
    parser.add_argument("--effect-studies", type=int, default=200, help="founding-like studies")
    parser.add_argument(
        "--four-arm-studies", type=int, default=200, help="four-arm studies per allocation"
    )
    parser.add_argument("--only-four-arms", action="store_true", help="run the four-arm part only")
    args = parser.parse_args()
    if args.only_four_arms:
        four_arms(args.four_arm_studies, args.seed)
        return
    for s in [SCENARIOS[i] for i in args.scenario] if args.scenario else SCENARIOS:
        started = time.perf_counter()
        counts = type_one(s, args.studies, args.seed)
        took = time.perf_counter() - started
        print(f"\n{s.name}: {args.studies:,} studies in {took:.0f} s")
        for what, (k, n) in counts.items():
            low, high = clopper_pearson(k, n)
            print(f"  {what:50s} {k / n:6.3f}  (95% CI {low:.3f}-{high:.3f})")
    clear = replace(SCENARIOS[0], name="clear preference", effect=(1.0, 0.0, 0.0))
    rng = np.random.default_rng(args.seed)
    statuses = [decided(clear, simulate(clear, rng), criterion="c0") for _ in range(200)]
    share = statuses.count("superior") / len(statuses)
    print(f"\n{clear.name} (effect 1.0 on c0): superior in {share:.0%} of 200 studies")
    founding_like(args.effect_studies, args.seed)
    four_arms(args.four_arm_studies, args.seed)


# Like the founding study: the fast arm clearly preferred on appearance, close on motion,
# overall quality in between and the one primary criterion (the plan's `primary`).
FOUNDING = Scenario(
    name="founding-like: 6 criteria, overall quality primary",
    criteria=6,
    prompts=100,
    evaluators=400,
    quota=20,
    concurrent=20,
    # c0 overall quality, c1 aesthetics, c2 appearance distortion, c3 video-text relevance,
    # c4 motion naturalness, c5 motion amplitude: the fast arm's latent advantage on each
    effect=(0.35, 0.6, 0.6, 0.2, 0.05, -0.05),
)


def votes_until_decided(s: Scenario, study: Study, *, primary: str = "c0") -> tuple[int, float]:
    """(votes on the primary hypothesis when it was first decided, its true decisive win rate
    estimated from the whole study); evaluators enter in the order they finished, and the plan
    tests every criterion (alpha split over all six) with only `primary` deciding the study."""
    plan = s.plan()
    plan = replace(
        plan, hypotheses=tuple(replace(h, primary=h.criterion == primary) for h in plan.hypotheses)
    )
    units = UnitCounts.from_table(vote_table(s, study), order=study.finished)
    monitor = Monitor(plan)
    index = next(i for i, h in enumerate(plan.hypotheses) if h.criterion == primary)
    for k in range(len(units.evaluators)):
        monitor.extend(
            UnitCounts(
                units.arms, units.criteria, units.evaluators[k : k + 1], units.cube[k : k + 1]
            )
        )
        verdict = monitor.verdicts()[index]
        if verdict.status != "undecided":
            return verdict.votes, verdict.lower
    return -1, float("nan")


def founding_like(studies: int, seed: int) -> None:
    """Median votes until overall quality is decided, against the decisive votes a fixed-sample
    sign test with 80% power needs at the simulated true rate (ties added back at the rate they
    occur, so both count votes alike)."""
    s = FOUNDING
    rng = np.random.default_rng(seed)
    needed: list[int] = []
    decisive_share: list[float] = []
    rates: list[float] = []
    for _ in range(studies):
        study = simulate(s, rng)
        n, _ = votes_until_decided(s, study)
        if n > 0:
            needed.append(n)
        rows = study.criterion == 0
        focus_left = study.left[rows] == 0
        choice = study.choice[rows]
        wins = np.sum(np.where(focus_left, choice == 0, choice == 1))
        losses = np.sum(np.where(focus_left, choice == 1, choice == 0))
        rates.append(wins / max(wins + losses, 1))
        decisive_share.append((wins + losses) / max(rows.sum(), 1))
    rate, share = float(np.mean(rates)), float(np.mean(decisive_share))
    fixed, _ = required_decisive_votes(rate, alpha=s.alpha / s.criteria, power=0.8)
    fixed_votes = math.ceil((fixed or 0) / share) if fixed else None
    print(f"\n{s.name}: {studies} studies, {s.evaluators} evaluators x {s.quota} trials")
    print(
        f"  true decisive win rate on overall quality (simulated): {rate:.3f}, ties {1 - share:.0%}"
    )
    print(
        f"  decided in {len(needed)} of {studies}; votes on overall quality until decided: "
        f"median {np.median(needed):.0f} (quartiles {np.percentile(needed, 25):.0f}-"
        f"{np.percentile(needed, 75):.0f})"
        if needed
        else "  never decided"
    )
    print(
        f"  fixed-sample sign test, 80% power at alpha {s.alpha / s.criteria:.4f} (the same "
        f"split): {fixed_votes} votes ({fixed} decisive)"
    )


# --- four arms: adaptive against uniform allocation ------------------------------------------


@dataclass(frozen=True)
class FourArms:
    """Which of four arms is best (`compare = "best"`, one primary criterion), evaluators rating
    while the verdicts are read after each one finishes. Arm strengths on the latent scale;
    every arm's prompt effects are centred over the prompt set, evaluators like each arm by a
    symmetric random amount, ties, side bias and careless raters as above."""

    strengths: tuple[float, ...] = (0.6, 0.3, 0.0, -0.3)
    prompts: int = 16
    quota: int = 8
    concurrent: int = 8
    max_evaluators: int = 3000
    prompt_sd: float = 0.4
    evaluator_sd: float = 0.3
    side_sd: float = 0.3
    careless: float = 0.15
    tie_band: float = 0.4
    alpha: float = 0.05

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(f"arm{i}" for i in range(len(self.strengths)))

    def plan(self, *, adaptive: bool) -> Plan:
        arms = self.arm_names
        hypotheses = tuple(
            Hypothesis("c0", a, b, "superiority", 0.0, True)
            for i, a in enumerate(arms)
            for b in arms[i + 1 :]
        )
        return Plan(self.alpha, hypotheses, "when_decided", None, adaptive, "best")


def run_four_arms(
    f: FourArms, rng: np.random.Generator, *, adaptive: bool
) -> tuple[int, str | None]:
    """(votes cast when the best arm was identified, the arm) for one simulated study; the
    allocation, with `adaptive`, follows `allocation.wanted_pairs` after every finished
    evaluator (the app recomputes it every stop check), and each trial goes to the least covered
    matchup of a wanted pair the evaluator has not judged (else of any pair), another prompt than
    the evaluator's previous one first, as the rating service assigns."""
    k = len(f.strengths)
    pairs = list(combinations(range(k), 2))
    matchups = [(p, i, j) for p in range(f.prompts) for i, j in pairs]
    m = len(matchups)
    pair_of = np.array([pairs.index((i, j)) for _, i, j in matchups])
    prompt_of = np.array([p for p, _, _ in matchups])
    effects = rng.normal(0, f.prompt_sd, (f.prompts, k))
    effects -= effects.mean(axis=0)  # centred: the strengths are the prompt-set average
    theta = np.asarray(f.strengths)[None, :] + effects
    coverage = np.zeros(m, dtype=np.int64)
    a_left = np.zeros(m, dtype=np.int64)
    plan = f.plan(adaptive=adaptive)
    monitor = Monitor(plan)
    names = f.arm_names
    wanted = np.ones(len(pairs), dtype=bool)
    votes = 0
    active: dict[int, dict[str, Any]] = {}
    joined = 0
    while joined < f.max_evaluators or active:
        while len(active) < f.concurrent and joined < f.max_evaluators:
            active[joined] = {
                "judged": np.zeros(m, dtype=bool),
                "last": -1,
                "cube": np.zeros((1, 1, len(pairs), 3), dtype=np.int64),
                "done": 0,
                "liking": rng.normal(0, f.evaluator_sd, k),
                "side": rng.normal(0, f.side_sd),
                "careless": rng.random() < f.careless,
            }
            joined += 1
        e = list(active)[int(rng.integers(len(active)))]
        ev = active[e]
        free = np.flatnonzero(~ev["judged"])
        if adaptive:
            preferred = free[wanted[pair_of[free]]]
            free = preferred if preferred.size else free
        least = free[coverage[free] == coverage[free].min()]
        other = least[prompt_of[least] != ev["last"]]
        pool = other if other.size else least
        c = int(pool[int(rng.integers(pool.size))])
        coverage[c] += 1
        right = coverage[c] - 1 - a_left[c]
        first_left = a_left[c] < right or (a_left[c] == right and rng.random() < 0.5)
        a_left[c] += int(first_left)
        prompt, i, j = matchups[c]
        u = (
            theta[prompt, i]
            - theta[prompt, j]
            + ev["liking"][i]
            - ev["liking"][j]
            + (ev["side"] if first_left else -ev["side"])
            + rng.normal()
        )
        outcome = 0 if u > f.tie_band else 1 if u < -f.tie_band else 2  # first arm's view
        if ev["careless"]:
            outcome = int(rng.integers(3))
        ev["cube"][0, 0, pair_of[c], outcome] += 1
        ev["judged"][c] = True
        ev["last"] = prompt
        ev["done"] += 1
        votes += 1
        if ev["done"] < min(f.quota, m):
            continue
        del active[e]
        monitor.extend(UnitCounts(names, ("c0",), (e,), ev["cube"]))
        found = monitor.verdicts()
        if allocation.decided(plan, found):
            return votes, allocation.best_arm(plan, found, criterion="c0")
        if adaptive:
            open_pairs = allocation.wanted_pairs(plan, found) or frozenset()
            wanted = np.array([frozenset((names[i], names[j])) in open_pairs for i, j in pairs])
            if not wanted.any():
                wanted[:] = True
    return -1, None


def four_arms(studies: int, seed: int) -> None:
    """Votes until the best of four arms is identified, adaptive against uniform allocation, on
    the same simulated studies (the same seeds), with how often the wrong arm was named."""
    f = FourArms()
    print(
        f"\nfour arms (strengths {f.strengths}, {f.prompts} prompts, {f.quota} trials each, "
        f"{f.concurrent} at a time): votes until the best arm is identified, {studies} studies"
    )
    results: dict[bool, list[int]] = {}
    for adaptive in (False, True):
        started = time.perf_counter()
        needed, wrong, undecided = [], 0, 0
        for study in range(studies):
            n, best = run_four_arms(f, np.random.default_rng([seed, study]), adaptive=adaptive)
            if n < 0:
                undecided += 1
                continue
            needed.append(n)
            wrong += best != "arm0"
        results[adaptive] = needed
        low, high = clopper_pearson(wrong, max(len(needed), 1))
        print(
            f"  {'adaptive' if adaptive else 'uniform '}: median {np.median(needed):,.0f} votes "
            f"(quartiles {np.percentile(needed, 25):,.0f}-{np.percentile(needed, 75):,.0f}), "
            f"mean {np.mean(needed):,.0f}; wrong arm named in {wrong} of {len(needed)} "
            f"(95% CI {low:.3f}-{high:.3f}); undecided at the cap: {undecided}; "
            f"{time.perf_counter() - started:.0f} s"
        )
    saved = 1 - np.median(results[True]) / np.median(results[False])
    paired = [1 - a / u for a, u in zip(results[True], results[False], strict=False) if u > 0]
    print(
        f"  adaptive needs {saved:.0%} fewer votes at the median "
        f"(per study, same seed: median saving {np.median(paired):.0%})"
    )


if __name__ == "__main__":
    main()

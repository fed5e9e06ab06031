"""Columnar vote data and the dense count cube every cheap statistic is read from.

Two levels, so that a dashboard refresh stays cheap:

* `VoteTable`: one row per vote as integer-coded numpy columns (built once from `VoteRecord`s or
  from plain columns, e.g. straight from a SQL cursor). Needed for anything that looks inside
  a prompt, an evaluator or a matchup: the prompt-cluster bootstrap, Krippendorff's alpha,
  evaluator quality.
* `VoteCounts`: the count cube `[criterion, theme, pair, first_arm_on_left, choice]`, made from a
  `VoteTable` with one `np.bincount`, or straight from SQL `GROUP BY` rows with
  `VoteCounts.from_grouped`. Everything in `pairwise.py` and `power.py` reads only this.

Arm pairs are the unordered pairs of `arms` in the given order: pair k = (arms[i], arms[j]) with
i < j; "first arm" means arms[i]. Arm-relative outcome codes: 0 = first arm wins,
1 = second arm wins, 2 = tie. Side choice codes: 0 = left, 1 = right, 2 = tie.
Votes naming an unknown arm or criterion, an invalid choice, or the same arm on both sides are
dropped and counted in `n_dropped`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from itertools import combinations, repeat
from operator import attrgetter
from typing import Any

import numpy as np

from app.analysis.schemas import CHOICES, NO_THEME, VoteRecord

FIRST, SECOND, TIE = 0, 1, 2
LEFT, RIGHT = 0, 1


def arm_pairs(arms: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The unordered pairs of `arms`, in the order used by every count array."""
    return tuple(combinations(arms, 2))


def _sort_key(labels: Iterable[Any]) -> list[Any]:
    labels = list(labels)
    try:
        return sorted(labels)
    except TypeError:
        return sorted(labels, key=lambda x: (type(x).__name__, repr(x)))


def _as_int_array(values: Any) -> np.ndarray | None:
    """`values` as an int64 array when they are integers (fast paths), else None."""
    if isinstance(values, np.ndarray):
        return values.astype(np.int64, copy=False) if values.dtype.kind in "iub" else None
    if len(values) == 0:
        return None
    first = values[0]
    if isinstance(first, int | np.integer) and not isinstance(first, bool):
        try:
            return np.fromiter(values, dtype=np.int64, count=len(values))
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def _factorize(values: Any) -> tuple[np.ndarray, list[Any]]:
    """Codes 0..k-1 for the distinct values, the labels sorted (so results do not depend on the
    order of the input rows)."""
    ints = _as_int_array(values)
    if ints is not None:
        labels_arr, codes = np.unique(ints, return_inverse=True)
        return codes.astype(np.int64, copy=False).reshape(-1), labels_arr.tolist()
    values = values.tolist() if isinstance(values, np.ndarray) else values
    seen = list(dict.fromkeys(values))
    labels = _sort_key(seen)
    index = {v: i for i, v in enumerate(labels)}
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, labels


def _relabel(codes: np.ndarray, labels: list[Any], fn: Any) -> tuple[np.ndarray, list[Any]]:
    """Apply `fn` to the labels, merging labels that become equal (cheap: works on labels)."""
    new = [fn(v) for v in labels]
    merged = _sort_key(set(new))
    index = {v: i for i, v in enumerate(merged)}
    remap = np.array([index[v] for v in new], dtype=np.int64)
    return (remap[codes] if len(codes) else codes), merged


def _lookup(values: Any, labels: Sequence[Any]) -> np.ndarray:
    """Codes of `values` in a fixed label list, -1 for anything unknown."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "US" and len(labels) <= 16:
        codes = np.full(values.shape[0], -1, dtype=np.int64)
        for i, label in enumerate(labels):
            codes[values == label] = i
        return codes
    index = {v: i for i, v in enumerate(labels)}
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return np.fromiter(map(index.get, values, repeat(-1)), dtype=np.int64, count=len(values))


def _absent(col: Any) -> bool:
    """A column not given, or given as all None (numeric numpy columns are never absent)."""
    if col is None:
        return True
    if isinstance(col, np.ndarray) and col.dtype.kind in "iub":
        return False
    return all(v is None for v in (col.tolist() if isinstance(col, np.ndarray) else col))


def _bool_column(values: Any, n: int) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=bool)
    if isinstance(values, np.ndarray):
        out = values.astype(bool, copy=False)
    else:
        out = np.fromiter(values, dtype=bool, count=len(values))
    if out.shape != (n,):
        raise ValueError(f"column has {out.shape} values, expected {n}")
    return out


@dataclass(frozen=True, eq=False)
class VoteTable:
    """Votes as integer-coded columns (all arrays have one entry per kept vote)."""

    arms: tuple[str, ...]
    criteria: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    themes: tuple[str, ...]
    prompts: tuple[Any, ...]
    evaluators: tuple[Any, ...]
    prompt: np.ndarray
    theme: np.ndarray
    evaluator: np.ndarray
    criterion: np.ndarray
    pair: np.ndarray
    first_left: np.ndarray  # bool: the pair's first arm was shown on the left
    choice: np.ndarray  # 0 left, 1 right, 2 tie
    outcome: np.ndarray  # 0 first arm wins, 1 second arm wins, 2 tie
    flagged: np.ndarray
    is_repeat: np.ndarray
    trial: np.ndarray  # trial codes (derived from evaluator/matchup/is_repeat when absent)
    matchup: np.ndarray  # matchup codes (derived from prompt + pair when absent)
    n_dropped: int = 0

    def __len__(self) -> int:
        return int(self.prompt.shape[0])

    # ---------------------------------------------------------------------------- building
    @classmethod
    def from_records(
        cls, records: Iterable[VoteRecord], *, arms: Sequence[str], criteria: Sequence[str]
    ) -> VoteTable:
        records = records if isinstance(records, Sequence) else list(records)
        names = (
            "prompt_id",
            "theme",
            "evaluator",
            "criterion",
            "left_arm",
            "right_arm",
            "choice",
            "flagged",
            "trial_id",
            "is_repeat",
            "matchup_id",
        )
        cols = {name: list(map(attrgetter(name), records)) for name in names}
        return cls.from_columns(**cols, arms=arms, criteria=criteria)

    @classmethod
    def from_columns(
        cls,
        *,
        prompt_id: Sequence[Any] | np.ndarray,
        theme: Sequence[str | None] | np.ndarray,
        evaluator: Sequence[Any] | np.ndarray,
        criterion: Sequence[str] | np.ndarray,
        left_arm: Sequence[str] | np.ndarray,
        right_arm: Sequence[str] | np.ndarray,
        choice: Sequence[str] | np.ndarray,
        flagged: Sequence[bool] | np.ndarray | None = None,
        trial_id: Sequence[Any] | np.ndarray | None = None,
        is_repeat: Sequence[bool] | np.ndarray | None = None,
        matchup_id: Sequence[Any] | np.ndarray | None = None,
        arms: Sequence[str],
        criteria: Sequence[str],
    ) -> VoteTable:
        """Build from parallel columns (lists, tuples or numpy arrays), e.g. a SQL result.

        `trial_id` / `matchup_id`: give them for every vote or for none (None = derived: one
        trial per evaluator x matchup x is_repeat, one matchup per prompt x arm pair)."""
        arms = tuple(arms)
        criteria = tuple(criteria)
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms must be distinct: {arms!r}")
        if len(set(criteria)) != len(criteria):
            raise ValueError(f"criteria must be distinct: {criteria!r}")
        n = len(prompt_id)
        for name, col in (
            ("theme", theme),
            ("evaluator", evaluator),
            ("criterion", criterion),
            ("left_arm", left_arm),
            ("right_arm", right_arm),
            ("choice", choice),
        ):
            if len(col) != n:
                raise ValueError(f"column {name} has {len(col)} values, expected {n}")

        k = len(arms)
        left = _lookup(left_arm, arms)
        right = _lookup(right_arm, arms)
        crit = _lookup(criterion, criteria)
        ch = _lookup(choice, CHOICES)
        keep = (left >= 0) & (right >= 0) & (left != right) & (crit >= 0) & (ch >= 0)
        flagged_a = _bool_column(flagged, n)
        repeat_a = _bool_column(is_repeat, n)

        def take(col: Any) -> Any:
            if isinstance(col, np.ndarray):
                return col[keep]
            return [v for v, m in zip(col, keep.tolist(), strict=True) if m]

        all_kept = bool(keep.all())
        if not all_kept:
            prompt_id, theme, evaluator = take(prompt_id), take(theme), take(evaluator)
            trial_id = None if trial_id is None else take(trial_id)
            matchup_id = None if matchup_id is None else take(matchup_id)
            left, right, crit, ch = left[keep], right[keep], crit[keep], ch[keep]
            flagged_a, repeat_a = flagged_a[keep], repeat_a[keep]

        pair_index = np.full((max(k, 1), max(k, 1)), -1, dtype=np.int64)
        for p, (i, j) in enumerate(combinations(range(k), 2)):
            pair_index[i, j] = pair_index[j, i] = p
        lo, hi = np.minimum(left, right), np.maximum(left, right)
        pair = pair_index[lo, hi] if len(lo) else np.zeros(0, dtype=np.int64)
        first_left = left < right
        outcome = np.where(ch == 2, TIE, np.where((ch == LEFT) == first_left, FIRST, SECOND))

        prompt_c, prompts = _factorize(prompt_id)
        theme_raw, theme_labels = _relabel(
            *_factorize(theme), lambda t: NO_THEME if t is None or t == "" else str(t)
        )
        evaluator_c, evaluators = _factorize(evaluator)

        if _absent(matchup_id):
            matchup_c, _ = _factorize(prompt_c * max(len(arm_pairs(arms)), 1) + pair)
        else:
            matchup_c, _ = _factorize(matchup_id)
        if _absent(trial_id):
            key = (evaluator_c * (int(matchup_c.max(initial=0)) + 1) + matchup_c) * 2 + repeat_a
            trial_c, _ = _factorize(key)
        else:
            trial_c, _ = _factorize(trial_id)

        return cls(
            arms=arms,
            criteria=criteria,
            pairs=arm_pairs(arms),
            themes=tuple(theme_labels),
            prompts=tuple(prompts),
            evaluators=tuple(evaluators),
            prompt=prompt_c,
            theme=theme_raw,
            evaluator=evaluator_c,
            criterion=crit,
            pair=pair,
            first_left=first_left,
            choice=ch,
            outcome=outcome,
            flagged=flagged_a,
            is_repeat=repeat_a,
            trial=trial_c,
            matchup=matchup_c,
            n_dropped=int(n - int(keep.sum())),
        )

    # ---------------------------------------------------------------------------- selecting
    def mask(
        self,
        *,
        include_repeats: bool = False,
        exclude_flagged: bool = False,
        exclude_evaluators: Collection[Any] = (),
    ) -> np.ndarray:
        """Boolean row mask for the usual analysis filters.

        Defaults: repeats out (a repeat is the same evaluator's second look at the same matchup;
        counting it would weigh that evaluator twice), flagged trials in.
        """
        m = np.ones(len(self), dtype=bool)
        if not include_repeats:
            m &= ~self.is_repeat
        if exclude_flagged:
            m &= ~self.flagged
        if exclude_evaluators:
            drop = {e for e in exclude_evaluators}
            codes = [i for i, e in enumerate(self.evaluators) if e in drop or str(e) in drop]
            if codes:
                m &= ~np.isin(self.evaluator, codes)
        return m

    def where(self, rows: np.ndarray) -> VoteTable:
        """The votes of a boolean row mask, labels and codes unchanged: filter once with this
        and hand the result to every statistic, so none of them can miss the filter."""
        if rows.all():
            return self
        columns = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(
            self,
            **{name: col[rows] for name, col in columns.items() if isinstance(col, np.ndarray)},
        )

    def counts(
        self,
        *,
        include_repeats: bool = False,
        exclude_flagged: bool = False,
        exclude_evaluators: Collection[Any] = (),
    ) -> VoteCounts:
        """The count cube of the selected votes (one bincount: a few ms for 1M votes)."""
        m = self.mask(
            include_repeats=include_repeats,
            exclude_flagged=exclude_flagged,
            exclude_evaluators=exclude_evaluators,
        )
        shape = (len(self.criteria), len(self.themes), len(self.pairs), 2, 3)
        size = int(np.prod(shape))
        if size == 0:
            return VoteCounts(self.arms, self.criteria, self.themes, np.zeros(shape, np.int64))
        idx = (
            ((self.criterion * shape[1] + self.theme) * shape[2] + self.pair) * 6
            + self.first_left * 3
            + self.choice
        )
        if not m.all():
            idx = idx[m]
        cube = np.bincount(idx, minlength=size).reshape(shape)
        return VoteCounts(self.arms, self.criteria, self.themes, cube)


@dataclass(frozen=True, eq=False)
class VoteCounts:
    """Dense counts `cube[criterion, theme, pair, first_arm_on_left (0/1), choice (L/R/T)]`."""

    arms: tuple[str, ...]
    criteria: tuple[str, ...]
    themes: tuple[str, ...]
    cube: np.ndarray

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return arm_pairs(self.arms)

    @property
    def n_votes(self) -> int:
        return int(self.cube.sum())

    @classmethod
    def empty(cls, *, arms: Sequence[str], criteria: Sequence[str]) -> VoteCounts:
        arms, criteria = tuple(arms), tuple(criteria)
        shape = (len(criteria), 0, len(arm_pairs(arms)), 2, 3)
        return cls(arms, criteria, (), np.zeros(shape, dtype=np.int64))

    @classmethod
    def from_grouped(
        cls,
        rows: Iterable[tuple[str, str | None, str, str, str, int]],
        *,
        arms: Sequence[str],
        criteria: Sequence[str],
    ) -> VoteCounts:
        """From aggregated rows `(criterion, theme, left_arm, right_arm, choice, count)`, as a
        SQL `GROUP BY criterion, theme, left_arm, right_arm, choice` returns them. Rows naming
        unknown arms/criteria/choices or the same arm twice are ignored."""
        arms, criteria = tuple(arms), tuple(criteria)
        arm_ix = {a: i for i, a in enumerate(arms)}
        crit_ix = {c: i for i, c in enumerate(criteria)}
        choice_ix = {c: i for i, c in enumerate(CHOICES)}
        pair_ix = {pair: p for p, pair in enumerate(combinations(range(len(arms)), 2))}
        parsed = []
        for crit, theme, left_arm, right_arm, choice, n in rows:
            i, j = arm_ix.get(left_arm), arm_ix.get(right_arm)
            c, ch = crit_ix.get(crit), choice_ix.get(choice)
            if i is None or j is None or i == j or c is None or ch is None:
                continue
            label = NO_THEME if theme is None or theme == "" else str(theme)
            parsed.append((c, label, pair_ix[(min(i, j), max(i, j))], int(i < j), ch, int(n)))
        themes = tuple(sorted({row[1] for row in parsed}))
        theme_ix = {t: i for i, t in enumerate(themes)}
        cube = np.zeros((len(criteria), len(themes), len(pair_ix), 2, 3), dtype=np.int64)
        for c, label, p, fl, ch, n in parsed:
            cube[c, theme_ix[label], p, fl, ch] += n
        return cls(arms, criteria, themes, cube)

    # ---------------------------------------------------------------------------- views
    def outcomes(self) -> np.ndarray:
        """`[criterion, theme, pair, outcome]` with outcome 0 first wins, 1 second wins, 2 tie."""
        c = self.cube
        out = np.empty((*c.shape[:3], 3), dtype=np.int64)
        # first arm on left (index 1): left vote = first wins; on right (index 0): right = first
        out[..., FIRST] = c[..., 1, LEFT] + c[..., 0, RIGHT]
        out[..., SECOND] = c[..., 1, RIGHT] + c[..., 0, LEFT]
        out[..., TIE] = c[..., 1, 2] + c[..., 0, 2]
        return out

    def sides(self) -> np.ndarray:
        """`[criterion, choice]`: left / right / tie counts pooled over themes and pairs."""
        pooled: np.ndarray = self.cube.sum(axis=(1, 2, 3))  # numpy types a multi-axis sum Any
        return pooled

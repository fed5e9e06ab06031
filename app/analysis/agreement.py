"""Inter-rater agreement (Krippendorff's alpha) and per-evaluator quality figures.

Krippendorff's alpha (Krippendorff 2004/2011, "Computing Krippendorff's alpha-reliability"),
from the coincidence matrix: for every unit u with m_u >= 2 values and value counts n_uc,

    o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1),   n_c = sum_k o_ck,   n = sum_c n_c,
    alpha = 1 - (n - 1) * sum_ck o_ck delta_ck / sum_ck n_c n_k delta_ck,

with delta_ck = [c != k] (nominal), (c - k)^2 (interval) or the ordinal metric
(sum_{g=c..k} n_g - (n_c + n_k) / 2)^2. Units are matchups, coders are evaluators and the value is
the ARM-relative outcome, ordered (one arm of the pair wins, tie, the other arm wins): an
evaluator who saw Lightning on the left and one who saw it on the right agree when both prefer
Lightning.

Which arm of a pair counts as "one" is arbitrary, and with three or more arms no single choice
is consistent across pairs (A-B, B-C, C-A), yet it moves the pooled value counts n_c and with
them the expected disagreement. So every unit is coded both ways round: alpha is computed on
the units together with their mirror images (first and second arm swapped). Expected agreement
is then that of answers given without regard to which clip is which (ties as often as seen,
either arm equally often), alpha does not depend on the order, names or orientation of arms,
and a study where every evaluator prefers the same arm of every pair has alpha = 1.

Only first showings are coded (a repeat is the same coder coding the same unit again: it is used
for test-retest consistency instead). Filters select the votes: a repeat pair counts only when
both of its votes are selected.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import numpy as np

from app.analysis.counts import FIRST, SECOND, TIE, VoteTable
from app.analysis.schemas import AgreementResult, EvaluatorQuality

Level = Literal["nominal", "ordinal", "interval"]

# arm-relative outcome code -> ordered agreement value (first wins < tie < second wins)
_ORDERED = np.empty(3, dtype=np.int64)
_ORDERED[FIRST], _ORDERED[TIE], _ORDERED[SECOND] = 0, 1, 2


def _delta(level: Level, n_c: np.ndarray, values: np.ndarray) -> np.ndarray:
    v = len(n_c)
    if level == "nominal":
        return 1.0 - np.eye(v)
    if level == "interval":
        squared: np.ndarray = (values[:, None] - values[None, :]) ** 2  # numpy types ** Any
        return squared
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])
        d = np.zeros((v, v))
        for c in range(v):
            for k in range(c + 1, v):
                d[c, k] = d[k, c] = (cum[k + 1] - cum[c] - (n_c[c] + n_c[k]) / 2) ** 2
        return d
    raise ValueError(f"unknown level of measurement {level!r}")


def alpha_from_unit_counts(
    unit_counts: np.ndarray, *, level: Level = "nominal", values: np.ndarray | None = None
) -> tuple[float | None, float | None, float | None, int, int]:
    """Krippendorff's alpha from a (units x values) matrix of how many coders gave each value.

    `values` are the numeric values of the columns (for the interval metric; default 0..V-1; the
    ordinal metric uses the column order). Returns (alpha, observed disagreement, expected
    disagreement, pairable units, pairable values); alpha is None when nothing is pairable or
    every pairable value is the same (expected disagreement 0).
    """
    uc = np.asarray(unit_counts, dtype=float)
    if uc.ndim != 2:
        raise ValueError("unit_counts must be a 2-d (units x values) array")
    m = uc.sum(axis=1)
    uc = uc[m >= 2]
    m = m[m >= 2]
    n_units = int(uc.shape[0])
    if n_units == 0:
        return None, None, None, 0, 0
    o = np.einsum("uc,uk->ck", uc / (m - 1)[:, None], uc) - np.diag((uc / (m - 1)[:, None]).sum(0))
    n_c = o.sum(axis=1)
    n = float(n_c.sum())
    vals = np.arange(uc.shape[1], dtype=float) if values is None else np.asarray(values, float)
    delta = _delta(level, n_c, vals)
    d_o = float((o * delta).sum() / n)
    d_e = float((np.outer(n_c, n_c) * delta).sum() / (n * (n - 1)))
    if d_e <= 0:
        return None, d_o, d_e, n_units, round(n)
    return 1.0 - d_o / d_e, d_o, d_e, n_units, round(n)


def krippendorff_alpha(reliability_data: Any, *, level: Level = "nominal") -> float | None:
    """Krippendorff's alpha from a coders x units matrix of numeric values, NaN = missing
    (the layout of the `krippendorff` package). None when undefined."""
    data = np.asarray(reliability_data, dtype=float)
    if data.ndim != 2:
        raise ValueError("reliability_data must be a 2-d (coders x units) array")
    present = ~np.isnan(data)
    values = np.unique(data[present])
    if values.size == 0:
        return None
    codes = np.searchsorted(values, np.where(present, data, values[0]))
    uc = np.zeros((data.shape[1], values.size))
    units = np.broadcast_to(np.arange(data.shape[1]), data.shape)
    np.add.at(uc, (units[present], codes[present]), 1)
    return alpha_from_unit_counts(uc, level=level, values=values)[0]


def mirrored_alpha(
    unit_counts: np.ndarray, *, level: Level = "nominal"
) -> tuple[float | None, float | None, float | None, int, int]:
    """`alpha_from_unit_counts` of arm-relative (first wins, tie, second wins) unit counts,
    coded both ways round (each unit and its mirror image), so that which arm of a pair is the
    first one does not matter. Unit and value counts are those of the real units."""
    uc = np.asarray(unit_counts, dtype=float)
    alpha, d_o, d_e, n_units, n_pairable = alpha_from_unit_counts(
        np.vstack([uc, uc[:, ::-1]]), level=level
    )
    return alpha, d_o, d_e, n_units // 2, n_pairable // 2


def _repeat_pairs(
    table: VoteTable, selected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each selected repeat vote whose first showing (same evaluator, matchup, criterion)
    is selected too: (evaluator code, criterion code, same arm-relative answer?)."""
    c = max(len(table.criteria), 1)
    n_m = int(table.matchup.max(initial=0)) + 1
    key = (table.evaluator.astype(np.int64) * n_m + table.matchup) * c + table.criterion
    orig = selected & ~table.is_repeat
    okey, oout = key[orig], table.outcome[orig]
    order = np.argsort(okey, kind="stable")
    if okey.size > 1 and (okey[order][1:] == okey[order][:-1]).any():
        order = np.lexsort((table.trial[orig], okey))  # shown twice: the earliest trial counts
    okey, oout = okey[order], oout[order]
    rep = np.flatnonzero(selected & table.is_repeat)
    if rep.size == 0 or okey.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=bool)
    pos = np.searchsorted(okey, key[rep])
    found = (pos < okey.size) & (okey[np.minimum(pos, okey.size - 1)] == key[rep])
    rep, pos = rep[found], pos[found]
    same = oout[pos] == table.outcome[rep]
    return table.evaluator[rep], table.criterion[rep], same


def agreement(
    table: VoteTable,
    *,
    level: Level = "nominal",
    exclude_flagged: bool = False,
    exclude_evaluators: Collection[Any] = (),
) -> tuple[AgreementResult, ...]:
    """Krippendorff's alpha and repeat consistency per criterion, both from the selected votes."""
    selected = table.mask(
        include_repeats=True,
        exclude_flagged=exclude_flagged,
        exclude_evaluators=exclude_evaluators,
    )
    n_m = int(table.matchup.max(initial=-1)) + 1
    _, rep_crit, rep_same = _repeat_pairs(table, selected)
    # keep one value per (evaluator, matchup, criterion): the first showing
    c_len = max(len(table.criteria), 1)
    key = (table.evaluator.astype(np.int64) * max(n_m, 1) + table.matchup) * c_len
    key = key + table.criterion
    sel = np.flatnonzero(selected & ~table.is_repeat)
    _, first = np.unique(key[sel], return_index=True)
    if first.size < sel.size:  # shown twice (never from the database): the earliest trial counts
        sel = sel[np.argsort(table.trial[sel], kind="stable")]
        _, first = np.unique(key[sel], return_index=True)
    sel = sel[first]
    out = []
    for ci, crit in enumerate(table.criteria):
        rows = sel[table.criterion[sel] == ci]
        uc = np.zeros((max(n_m, 0), 3))
        if rows.size:
            np.add.at(uc, (table.matchup[rows], _ORDERED[table.outcome[rows]]), 1)
        alpha, d_o, d_e, n_units, n_pairable = mirrored_alpha(uc, level=level)
        pairable_units = np.flatnonzero(uc.sum(axis=1) >= 2)
        coders = np.unique(table.evaluator[rows[np.isin(table.matchup[rows], pairable_units)]])
        same = rep_same[rep_crit == ci]
        out.append(
            AgreementResult(
                criterion=crit,
                level=level,
                alpha=alpha,
                n_units=n_units,
                n_pairable=n_pairable,
                n_coders=int(coders.size),
                observed_disagreement=d_o,
                expected_disagreement=d_e,
                repeat_consistency=float(same.mean()) if same.size else None,
                n_repeat_comparisons=int(same.size),
            )
        )
    return tuple(out)


def evaluator_quality(
    table: VoteTable,
    *,
    exclude_flagged: bool = False,
    exclude_evaluators: Collection[Any] = (),
) -> tuple[EvaluatorQuality, ...]:
    """Per evaluator with selected votes, over all of them (repeats included, flagged trials too
    unless excluded): trials, flagged share, test-retest consistency, side and tie habits.
    Sorted by evaluator."""
    table = table.where(
        table.mask(
            include_repeats=True,
            exclude_flagged=exclude_flagged,
            exclude_evaluators=exclude_evaluators,
        )
    )
    e = len(table.evaluators)
    ev = table.evaluator
    n_votes = np.bincount(ev, minlength=e)
    # distinct trials (and flagged trials) per evaluator
    n_t = int(table.trial.max(initial=-1)) + 1
    trial_eval = np.full(n_t, -1, dtype=np.int64)
    trial_eval[table.trial] = ev
    trial_flag = np.zeros(n_t, dtype=bool)
    np.logical_or.at(trial_flag, table.trial, table.flagged)
    used = trial_eval >= 0
    n_trials = np.bincount(trial_eval[used], minlength=e)
    n_flagged = np.bincount(trial_eval[used & trial_flag], minlength=e)
    rep_eval, _, rep_same = _repeat_pairs(table, np.ones(len(table), dtype=bool))
    n_rep = np.bincount(rep_eval, minlength=e)
    n_same = np.bincount(rep_eval, weights=rep_same.astype(float), minlength=e)
    left = np.bincount(ev, weights=(table.choice == 0).astype(float), minlength=e)
    right = np.bincount(ev, weights=(table.choice == 1).astype(float), minlength=e)
    ties = np.bincount(ev, weights=(table.choice == 2).astype(float), minlength=e)
    out = []
    for i, label in enumerate(table.evaluators):
        if not n_votes[i]:
            continue  # every vote filtered out
        dec = left[i] + right[i]
        out.append(
            EvaluatorQuality(
                evaluator=str(label),
                n_trials=int(n_trials[i]),
                n_votes=int(n_votes[i]),
                n_flagged_trials=int(n_flagged[i]),
                flagged_share=float(n_flagged[i] / n_trials[i]) if n_trials[i] else None,
                n_repeat_comparisons=int(n_rep[i]),
                consistency=float(n_same[i] / n_rep[i]) if n_rep[i] else None,
                left_rate=float(left[i] / dec) if dec else None,
                tie_rate=float(ties[i] / n_votes[i]) if n_votes[i] else None,
            )
        )
    return tuple(out)

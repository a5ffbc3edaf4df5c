"""Model-selection statistics over paired cross-validation fold scores (pure numpy/scipy functions)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

NAN = float("nan")


@dataclass(frozen=True)
class PairedComparison:
    """A frequentist comparison of the best candidate with another on the same folds.

    All float fields are NaN when the comparison cannot be made (a non-finite score or fewer than 2 pairs).
    """

    mean_difference: float
    std_error: float
    t: float
    df: float
    p_value: float
    interval_low: float
    interval_high: float
    n_pairs: int


@dataclass(frozen=True)
class BayesianComparison:
    """Posterior probabilities that the best is better than, equivalent to, or worse than another candidate.

    The probability fields are NaN when the comparison cannot be made (see ``bayesian_correlated_ttest``).
    """

    p_best_better: float
    p_equivalent: float
    p_other_better: float
    mean_difference: float
    scale: float
    df: float
    rope: float
    n_pairs: int


@dataclass(frozen=True)
class CandidateComparison:
    """One candidate against the best: both tests and whether it is statistically tied with the best."""

    index: int
    is_best: bool
    frequentist: PairedComparison
    bayesian: BayesianComparison
    tied: bool


def _differences(best: np.ndarray, other: np.ndarray, n_train: int, n_test: int) -> np.ndarray | None:
    """The paired differences best - other, or None when they contain a non-finite value or are fewer than 2."""
    best, other = np.asarray(best, dtype=float), np.asarray(other, dtype=float)
    if best.ndim != 1 or best.shape != other.shape:
        raise ValueError(f"need two 1-D score vectors of equal length, got shapes {best.shape} and {other.shape}")
    if n_train <= 0 or n_test < 0:
        raise ValueError(f"need n_train > 0 and n_test >= 0, got {n_train} and {n_test}")
    d = best - other
    if d.size < 2 or not np.all(np.isfinite(d)):
        return None
    return d


def _moments(d: np.ndarray) -> tuple[float, float]:
    """Mean and sample variance (ddof=1) of ``d``; the variance is exactly 0 when all differences are equal."""
    if np.all(d == d[0]):
        return float(d[0]), 0.0
    return float(np.mean(d)), float(np.var(d, ddof=1))


def _paired(best: np.ndarray, other: np.ndarray, n_train: int, n_test: int) -> tuple[int, float, float] | None:
    """Count, mean and sample variance of the paired differences; None when they cannot be compared."""
    d = _differences(best, other, n_train, n_test)
    return None if d is None else (d.size, *_moments(d))


def corrected_paired_ttest(
    best: np.ndarray, other: np.ndarray, n_train: int, n_test: int, confidence: float = 0.95, correction: bool = True
) -> PairedComparison:
    """Nadeau & Bengio's corrected resampled paired t-test of H1: the best candidate scores higher.

    With ``n`` paired fold scores (r repeats of k folds, n = k·r) and d_j = best_j - other_j:
    d̄ = mean(d), s² = var(d, ddof=1), σ̂² = (1/n + n_test/n_train)·s², t = d̄/σ̂, df = n - 1,
    p = P(T_df >= t) (one-sided), interval d̄ ± t_{(1+confidence)/2, df}·σ̂ (two-sided).
    With ``correction=False`` σ̂² = s²/n, the ordinary paired t-test (``scipy.stats.ttest_rel``), which
    understates the variance because overlapping training sets make the fold scores correlated.

    Degenerate inputs never raise:

    * a non-finite score (a failed fit) or fewer than 2 pairs: every float field is NaN, the candidate
      cannot be compared;
    * all differences equal (s² = 0, e.g. the best against itself): σ̂ = 0 and the null distribution of d̄
      is a point mass at 0, so p = P(D̄ >= d̄) is exactly 0 when d̄ > 0 and 1 when d̄ <= 0; t is +inf, -inf
      or 0 (0/0 read as "no difference") and the interval is [d̄, d̄]. Taking p = 1 rather than the t-limit
      0.5 for d̄ = 0 also makes the best tied with itself at every level ``alpha``.

    Args:
        best: Fold scores of the best candidate (higher is better), one per fold.
        other: Fold scores of the other candidate on the same folds, in the same order.
        n_train: Training-set size of one fold.
        n_test: Validation-set size of one fold.
        confidence: Coverage of the two-sided interval for the mean difference.
        correction: Apply the Nadeau-Bengio variance correction.

    Returns:
        The test result.

    Raises:
        ValueError: Mismatched shapes, ``n_train <= 0``, ``n_test < 0`` or ``confidence`` outside (0, 1).

    References:
        C. Nadeau and Y. Bengio, "Inference for the Generalization Error", Machine Learning 52:239-281, 2003.
        R. Bouckaert and E. Frank, "Evaluating the Replicability of Significance Tests for Comparing
        Learning Algorithms", PAKDD 2004 (the corrected repeated k-fold t-test).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    paired = _paired(best, other, n_train, n_test)
    if paired is None:
        return PairedComparison(NAN, NAN, NAN, NAN, NAN, NAN, NAN, int(np.size(best)))
    n, mean, var = paired
    factor = 1.0 / n + (n_test / n_train if correction else 0.0)
    se = math.sqrt(factor * var)
    df = n - 1
    if se == 0.0:
        t = math.copysign(math.inf, mean) if mean != 0.0 else 0.0
        return PairedComparison(mean, 0.0, t, float(df), 0.0 if mean > 0.0 else 1.0, mean, mean, n)
    t = mean / se
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, df)) * se
    return PairedComparison(mean, se, t, float(df), float(stats.t.sf(t, df)), mean - half, mean + half, n)


def bayesian_correlated_ttest(
    best: np.ndarray, other: np.ndarray, n_train: int, n_test: int, rope: float = 0.005
) -> BayesianComparison:
    """Corani & Benavoli's correlated Bayesian t-test of the mean score difference μ = E[best - other].

    The posterior of μ is Student t with df = n - 1, location d̄ and scale sqrt((1/n + ρ/(1-ρ))·s²),
    ρ = n_test/(n_train + n_test) (so ρ/(1-ρ) = n_test/n_train, Nadeau & Bengio's correction), with
    d̄ and s² (ddof=1) as in ``corrected_paired_ttest``. It returns P(μ > rope), P(-rope <= μ <= rope)
    and P(μ < -rope), which sum to 1.

    Degenerate inputs never raise: a non-finite score or fewer than 2 pairs gives NaN probabilities,
    location and scale; all differences equal (s² = 0) makes the posterior a point mass at d̄, so the
    region containing d̄ gets probability 1 (the best against itself is equivalent with probability 1).

    Args:
        best: Fold scores of the best candidate (higher is better), one per fold.
        other: Fold scores of the other candidate on the same folds, in the same order.
        n_train: Training-set size of one fold.
        n_test: Validation-set size of one fold.
        rope: Half-width of the region of practical equivalence, in score units (>= 0).

    Returns:
        The posterior probabilities and the posterior's parameters.

    Raises:
        ValueError: Mismatched shapes, ``n_train <= 0``, ``n_test < 0`` or ``rope < 0``.

    References:
        G. Corani and A. Benavoli, "A Bayesian approach for comparing cross-validated algorithms on
        multiple data sets", Machine Learning 100:285-304, 2015.
        A. Benavoli, G. Corani, J. Demšar and M. Zaffalon, "Time for a change: a tutorial for comparing
        multiple classifiers through Bayesian analysis", JMLR 18(77):1-36, 2017.
    """
    if not rope >= 0.0:
        raise ValueError(f"rope must be >= 0, got {rope}")
    paired = _paired(best, other, n_train, n_test)
    if paired is None:
        return BayesianComparison(NAN, NAN, NAN, NAN, NAN, NAN, rope, int(np.size(best)))
    n, mean, var = paired
    scale = math.sqrt((1.0 / n + n_test / n_train) * var)
    df = n - 1
    if scale == 0.0:
        better, worse = float(mean > rope), float(mean < -rope)
        return BayesianComparison(better, 1.0 - better - worse, worse, mean, 0.0, float(df), rope, n)
    worse = float(stats.t.cdf(-rope, df, loc=mean, scale=scale))
    better = float(stats.t.sf(rope, df, loc=mean, scale=scale))
    return BayesianComparison(better, max(0.0, 1.0 - better - worse), worse, mean, scale, float(df), rope, n)


def tied_with_best(comparison: PairedComparison, alpha: float) -> bool:
    """Whether a candidate is not significantly worse than the best at level ``alpha``: ``p_value >= alpha``.

    A NaN p-value (a failed fit, too few folds) is not tied: a candidate that cannot be compared cannot be
    vouched for. The best against itself has p = 1 (see ``corrected_paired_ttest``), so it is tied.

    Args:
        comparison: The best candidate against this one.
        alpha: Significance level in (0, 1).

    Raises:
        ValueError: ``alpha`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return bool(comparison.p_value >= alpha)  # False for NaN


def standard_error(fold_scores: np.ndarray) -> float:
    """Standard error of the mean fold score, std(ddof=1)/sqrt(n); NaN for a non-finite score or n < 2."""
    scores = np.asarray(fold_scores, dtype=float).ravel()
    if scores.size < 2 or not np.all(np.isfinite(scores)):
        return NAN
    return float(np.std(scores, ddof=1) / math.sqrt(scores.size))


def compare_all(
    fold_scores: np.ndarray,
    best_index: int,
    n_train: int,
    n_test: int,
    alpha: float = 0.05,
    rope: float = 0.005,
    confidence: float = 0.95,
) -> list[CandidateComparison]:
    """Compare every candidate with the best on the same paired folds.

    Args:
        fold_scores: Scores of shape (candidates, folds); column j is the same fold for every candidate.
        best_index: Row of the best candidate.
        n_train: Training-set size of one fold.
        n_test: Validation-set size of one fold.
        alpha: Level of the tie verdict (``tied_with_best``).
        rope: Half-width of the region of practical equivalence.
        confidence: Coverage of the frequentist interval.

    Returns:
        One comparison per candidate, in row order; the best is always tied with itself, even when its
        own scores are non-finite (its tests are then NaN, like every other candidate's).

    Raises:
        ValueError: ``fold_scores`` not 2-D, ``best_index`` out of range, or invalid parameters.
    """
    scores = np.asarray(fold_scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"fold_scores must be 2-D (candidates, folds), got shape {scores.shape}")
    if not 0 <= best_index < scores.shape[0]:
        raise ValueError(f"best_index {best_index} out of range for {scores.shape[0]} candidates")
    best = scores[best_index]
    results = []
    for i, row in enumerate(scores):
        freq = corrected_paired_ttest(best, row, n_train, n_test, confidence=confidence)
        bayes = bayesian_correlated_ttest(best, row, n_train, n_test, rope=rope)
        is_best = i == best_index
        results.append(CandidateComparison(i, is_best, freq, bayes, is_best or tied_with_best(freq, alpha)))
    return results
